#!/bin/sh
# Build the release tarball of the conformance vectors: dist/cowspec-vectors-VERSION.tar.gz.
#
# The set is exported to a temporary directory, then archived with everything
# that could vary from machine to machine fixed: names sorted, mtime 0, owner
# and group 0, modes as the export wrote them, no name or time in the gzip
# header. Two runs of the same cowspec give the same bytes. The SHA-256 of the
# set's MANIFEST.json is said on standard error, to be published with the
# release: `cowspec vectors verify` says it too, so a user can compare them.
#
#   scripts/make-vectors.sh [OUT_DIR]     (default: dist; PYTHON overrides the interpreter)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-"$root/.venv/bin/python"}
out=${1:-"$root/dist"}
version=$("$python" -c 'from cowcheck.vectors import set_version; print(set_version())')
name="cowspec-vectors-$version"
work=$(mktemp -d "${TMPDIR:-/tmp}/cowspec-vectors-XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
"$python" -m cowcheck.cli vectors export "$work/$name"
mkdir -p "$out"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$work" -cf - "$name" | gzip -n -9 > "$work/$name.tar.gz"
mv "$work/$name.tar.gz" "$out/$name.tar.gz"
echo "MANIFEST.json: sha256:$(sha256sum "$work/$name/MANIFEST.json" | cut -d' ' -f1)" >&2
echo "$out/$name.tar.gz"
