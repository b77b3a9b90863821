"""The conformance vectors: a versioned set of inputs with the answers the spec gives, for any implementation.

``build_set`` makes the whole set as a map from relative path to bytes, and
the same sources always give the same bytes: every JSON document is written
with sorted keys and fixed separators, every tar member has mtime 0 and
owner 0:0 unless the case is about its owner, and nothing depends on the
clock, the machine or the order of a dict. Three levels:

- ``fs/``: ``cowspec-trace/1`` traces with the model's result
  (``NAME.trace.json``, ``NAME.result.json``), or ``{"rejected": REASON}``
  for a trace the spec rejects. The curated traces of ``vector_set/curated/`` cover
  every rule of spec chapters 1 to 10 (``RULE_VECTORS``); the traces the
  state machine found (``vector_set/found/fs-*.json``) come with them.
- ``layer/``: the layer cases of ``cowcheck.matrix``, each an OCI image
  layout with uncompressed layers (``NAME/``), and the root filesystem the
  spec makes of it, or ``{"refused": REASON}`` (``NAME.rootfs.json``).
- ``store/``: the store scenarios of ``vector_set/found/store-*.json`` with
  every figure the model gives (``cowspec-store-trace/1``).

``MANIFEST.json`` lists every other file with its SHA-256; ``VERSION`` names
the set. ``check_manifest`` finds a file changed, added or taken away.
"""

import fnmatch
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TypeVar, cast

from cowcheck.compare import Difference, commit_result, compare_commit, compare_run, compare_store, model_commit
from cowcheck.drivers.protocol import (
    Answer,
    Committer,
    Driver,
    DriverError,
    DriverUnavailable,
    LayerDriver,
    Refused,
    StoreDriver,
    committer_of,
)
from cowcheck.drivers.runner import run_real
from cowcheck.matrix import CASES, Member
from cowspec.errors import SpecError
from cowspec.formats.oracle import model_run, observed_results, oracle
from cowspec.formats.store_trace import decode_store_trace, run_store_model
from cowspec.formats.trace import build_layers, decode_trace
from cowspec.fs.conformance import Conformance
from cowspec.fs.observe import Entry
from cowspec.oci.apply import flatten, rootfs_entries
from cowspec.oci.layer_tar import decode_layer

SET_FORMAT = "cowspec-vectors/1"
"""The layout of an exported set; bumped for an incompatible change of it."""
MANIFEST = "MANIFEST.json"
SOURCES = Path(__file__).resolve().parent / "vector_set"
"""The vector sources, shipped in the package (``vector_set/README.md``)."""
CURATED = SOURCES / "curated"
"""The hand-written traces, one per rule or small group of rules."""
FOUND = SOURCES / "found"
"""The traces the state machines found, kept by the test suite and exported as they are."""
LEVELS = ("fs", "layer", "store")

OCI_LAYOUT_VERSION = "1.0.0"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"

RULE_VECTORS: dict[str, tuple[str, ...]] = {
    # 1. Entries and layers
    "ENTRY-1": ("entry-kinds-and-attributes", "whiteout-hides-the-name"),
    "ENTRY-2": ("entry-hardlinks-share-an-inode",),
    "ENTRY-3": ("entry-kinds-and-attributes", "stat-does-not-follow"),
    "ENTRY-4": ("entry-implied-parents", "rejected-entry-below-a-file"),
    # 2. Paths
    "PATH-1": ("path-dots-and-slashes", "rejected-trailing-slash", "rejected-last-component-dot-dot"),
    "PATH-2": ("path-dots-and-slashes",),
    "PATH-3": ("path-symlinks-stay-inside-the-root", "rejected-empty-symlink-target", "symlink-checks"),
    "PATH-4": ("path-symlink-loop",),
    "PATH-5": ("path-missing-and-non-directory-components",),
    "PATH-6": ("path-last-component-follow-or-not",),
    # 3. The stack and lookup
    "LOOKUP-1": ("lookup-top-layer-decides",),
    "LOOKUP-2": ("lookup-top-layer-decides",),
    "LOOKUP-3": ("lookup-directories-merge",),
    "LOOKUP-4": (
        "lookup-directories-merge",
        "lookup-root-attributes-are-the-writable-layers",
        "found-no-layers-root-is-merged",
    ),
    "READDIR-1": ("readdir-merged-directory", "lookup-directories-merge"),
    "READDIR-2": ("readdir-plain-directory-lists-whiteouts",),
    # 4. Whiteouts
    "WHITEOUT-1": ("whiteout-hides-the-name",),
    "WHITEOUT-2": ("whiteout-when-removing-leaves-one", "found-planted-hidden-whiteout"),
    "WHITEOUT-3": ("whiteout-replaced-by-a-new-name",),
    "WHITEOUT-4": ("whiteout-mkdir-over-one-is-opaque",),
    "OPAQUE-1": ("opaque-directory-stops-the-merge", "lookup-directories-merge"),
    # 5. Copy-up
    "COPYUP-1": ("copyup-image-layers-never-change",),
    "COPYUP-2": ("copyup-parents-first",),
    "COPYUP-3": ("opaque-directory-stops-the-merge", "copyup-parents-first"),
    "COPYUP-4": ("copyup-file-and-symlink-whole",),
    "COPYUP-5": ("copyup-breaks-hardlinks",),
    "COPYUP-6": ("copyup-which-calls", "found-empty-write-past-end"),
    # 6. Operations
    "OP-1": ("op-failed-call-changes-nothing",),
    "OP-2": ("op-modes-with-umask-zero",),
    "OP-3": ("op-create-needs-a-free-name",),
    "OP-4": ("op-owner-of-a-new-object",),
    "CREATE-1": ("create-makes-an-empty-file", "op-create-needs-a-free-name"),
    "OPEN-1": ("open-follows-and-checks",),
    "OPEN-2": ("open-for-writing-copies-up",),
    "WRITE-1": ("write-at-an-offset", "found-empty-write-past-end"),
    "WRITE-2": ("write-append",),
    "TRUNCATE-1": ("truncate-cuts-and-extends",),
    "READ-1": ("read-whole-content",),
    "STAT-1": ("stat-does-not-follow",),
    "READLINK-1": ("readlink-symlinks-only",),
    "MKDIR-1": ("mkdir-makes-a-directory",),
    "RMDIR-1": ("rmdir-checks",),
    "RMDIR-2": ("rmdir-non-empty",),
    "UNLINK-1": ("unlink-checks-and-link-counts",),
    "SYMLINK-1": ("symlink-checks",),
    "LINK-1": ("link-checks",),
    "CHMOD-1": ("chmod-follows-and-copies-up",),
    "CHOWN-1": ("chown-clears-set-id-bits",),
    "RENAME-1": ("rename-walk",),
    "RENAME-2": ("rename-kinds",),
    "RENAME-3": ("rename-image-directory-is-exdev",),
    "RENAME-4": ("rename-same-inode",),
    "RENAME-5": ("rename-moved-directory-becomes-opaque", "found-no-layers-root-is-merged"),
    "RENAME-6": ("rename-effect",),
    "RENAME-7": ("rename-refused-leaves-marks", "found-failed-rename-marks-opaque"),
    # 7. Sizes
    "SIZE-1": ("sizes",),
    "SIZE-2": ("sizes", "copyup-file-and-symlink-whole"),
    "SIZE-3": ("sizes", "sizes-empty-container"),
    # 8. Features
    "FEATURE-1": ("feature-redirect-dir-off-by-default", "feature-redirect-dir-moves-image-directories"),
    "FEATURE-2": ("rejected-feature-unknown",),
    "FEATURE-3": ("rejected-feature-metacopy",),
    "INDEX-1": ("feature-index-keeps-hardlinks",),
    "INDEX-2": ("feature-index-keeps-hardlinks", "feature-index-removing-a-name-copies-the-inode"),
    "INDEX-3": ("feature-index-removing-a-name-copies-the-inode",),
    "METACOPY-1": ("feature-metacopy-metadata-then-data", "feature-metacopy-moved-file-records-its-data"),
    "METACOPY-2": ("feature-metacopy-metadata-then-data",),
    "METACOPY-3": ("feature-metacopy-moved-file-records-its-data",),
    "METACOPY-4": ("feature-metacopy-metadata-then-data", "feature-metacopy-moved-file-records-its-data"),
    "REDIRECT-1": ("feature-redirect-dir-moves-image-directories", "redirect-root-path-lookup"),
    "REDIRECT-2": ("redirect-root-path-lookup", "redirect-bare-name-kept-in-its-directory"),
    "REDIRECT-3": ("redirect-root-path-lookup", "redirect-bare-name-kept-in-its-directory"),
    "REDIRECT-4": ("redirect-mkdir-in-merged-directory-is-opaque", "found-redirect-dir-mkdir-opaque"),
    # 9. Observations: every vector compares whole trees and sizes
    "OBSERVE-1": ("trace-every-op-once", "sizes"),
    # 10. The trace format
    "TRACE-1": ("rejected-not-a-trace", "rejected-unknown-op", "rejected-unknown-field"),
    "TRACE-2": (
        "entry-kinds-and-attributes",
        "rejected-two-entries-one-path",
        "rejected-hardlink-to-a-directory",
        "rejected-hardlink-across-layers",
        "rejected-opaque-on-a-file",
    ),
    "TRACE-3": ("trace-every-op-once", "rejected-mode-out-of-range", "rejected-offset-out-of-range"),
    "TRACE-4": ("trace-every-op-once",),
}
"""Each rule of spec chapters 1 to 10 and the filesystem vectors that exercise it (names without ``.trace.json``)."""

NOT_BY_A_TRACE: dict[str, str] = {
    "TRACE-5": "no op of the spec allows several outcomes today, so no vector holds an any_of;"
    " every vector is still compared as the rule says",
}
"""Rules of chapters 1 to 10 that no trace can exercise, with the reason."""


def encode_json(document: object) -> bytes:
    """``document`` as the set writes every JSON file: sorted keys, one space of indent, ASCII, a final newline."""
    return (json.dumps(document, sort_keys=True, indent=1, separators=(",", ": "), ensure_ascii=True) + "\n").encode()


def sha256(data: bytes) -> str:
    """``sha256:HEX`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def set_version() -> str:
    """The version the set is named by: the cowspec package's, whose spec gave the answers."""
    try:
        return version("cowspec")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


# -- the sources ------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """The documents the set is made of, by vector name, in name order."""

    fs: tuple[tuple[str, object], ...]
    store: tuple[tuple[str, object], ...]


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SpecError(f"vector source {path}: {error}") from None


def load_sources(curated: Path = CURATED, found: Path = FOUND) -> Sources:
    """Read every source trace: ``curated/*.json``, and the machines' finds in ``found`` (``fs-*``, ``store-*``)."""
    if not curated.is_dir() or not found.is_dir():
        raise SpecError(f"vector sources not found ({curated}, {found}): export runs from a source checkout")
    fs = [(path.stem, _read_json(path)) for path in sorted(curated.glob("*.json"))]
    fs += [("found-" + path.stem.removeprefix("fs-"), _read_json(path)) for path in sorted(found.glob("fs-*.json"))]
    store = [(path.stem.removeprefix("store-"), _read_json(path)) for path in sorted(found.glob("store-*.json"))]
    names = [name for name, _ in fs]
    if len(set(names)) != len(names):
        raise SpecError("two filesystem vectors have one name")
    return Sources(tuple(sorted(fs, key=lambda pair: pair[0])), tuple(store))


# -- the answers ------------------------------------------------------------------


def fs_answer(document: object) -> Entry:
    """The model's result for a trace document, or ``{"rejected": REASON}`` where the spec rejects it."""
    try:
        return oracle(decode_trace(document))
    except SpecError as error:
        return {"rejected": str(error)}


def store_answer(document: object) -> Entry:
    """The model's store result for a store trace document."""
    return run_store_model(decode_store_trace(document))


def layer_tar(members: tuple[Member, ...]) -> bytes:
    """A layer tar of exactly these members, in this order, with nothing that varies from run to run.

    A member is ``cowcheck.matrix``'s: (name, kind, data or link target[,
    mode[, uid]]). Every member has mtime 0, gid 0 and no user or group name.
    """
    buffer = io.BytesIO()
    kinds = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE}
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            name, kind, payload = member[0], member[1], member[2]
            info = tarfile.TarInfo(name)
            info.type = kinds[kind]
            info.mode = member[3] if len(member) > 3 else (0o755 if kind == "d" else 0o644)
            info.uid = member[4] if len(member) > 4 else 0
            info.gid, info.mtime, info.uname, info.gname = 0, 0, "", ""
            data = payload if isinstance(payload, bytes) else b""
            if isinstance(payload, str):
                info.linkname = payload
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def layer_answer(archives: list[bytes]) -> Answer:
    """The root filesystem the spec makes of ``archives`` (bottom first), or its refusal."""
    try:
        return rootfs_entries(flatten([decode_layer(each) for each in archives]))
    except SpecError as error:
        return Refused(str(error))


def encode_answer(answer: Answer) -> object:
    """A layer answer as ``NAME.rootfs.json`` holds it: the entries, or ``{"refused": REASON}``."""
    return {"refused": answer.reason} if isinstance(answer, Refused) else answer


def decode_answer(document: object) -> Answer:
    """The inverse of ``encode_answer``."""
    if isinstance(document, dict) and set(document) == {"refused"}:
        return Refused(str(document["refused"]))
    if not isinstance(document, list) or not all(isinstance(each, dict) for each in document):
        raise SpecError('a rootfs document is a list of entries or {"refused": reason}')
    return document


def oci_layout(archives: list[bytes], about: str) -> dict[str, bytes]:
    """An OCI image layout of one image made of ``archives``, uncompressed, as relative path -> bytes.

    The config has no date and no history beyond one row per layer, so the
    same layers always give the same image.
    """
    files: dict[str, bytes] = {}

    def blob(data: bytes, media_type: str) -> dict[str, object]:
        name = sha256(data)
        files[f"blobs/sha256/{name.removeprefix('sha256:')}"] = data
        return {"digest": name, "mediaType": media_type, "size": len(data)}

    layers = [blob(each, LAYER_TYPE) for each in archives]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(each) for each in archives]},
        "history": [{"created_by": f"cowspec vector layer {index}"} for index in range(len(archives))],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": blob(encode_json(config), CONFIG_TYPE),
        "layers": layers,
        "annotations": {"org.opencontainers.image.description": about},
    }
    described = blob(encode_json(manifest), MANIFEST_TYPE)
    described["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    files["index.json"] = encode_json({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [described]})
    files["oci-layout"] = encode_json({"imageLayoutVersion": OCI_LAYOUT_VERSION})
    return files


def layout_layers(files: Mapping[str, bytes], prefix: str) -> list[bytes]:
    """The layer tars, bottom first, of the OCI layout whose files are ``files[prefix + ...]``."""

    def blob(descriptor: object) -> bytes:
        if not isinstance(descriptor, dict) or not isinstance(descriptor.get("digest"), str):
            raise SpecError(f"{prefix}: a descriptor without a digest")
        name = f"{prefix}blobs/sha256/{descriptor['digest'].removeprefix('sha256:')}"
        if name not in files or sha256(files[name]) != descriptor["digest"]:
            raise SpecError(f"{name}: missing or not the blob its digest names")
        return files[name]

    try:
        index = json.loads(files[prefix + "index.json"])
        manifest = json.loads(blob(index["manifests"][0]))
        return [blob(each) for each in manifest["layers"]]
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise SpecError(f"{prefix}index.json: not an image layout this set writes ({error})") from None


# -- the set ----------------------------------------------------------------------


def _readme(level: str, count: int) -> bytes:
    return (README_TEXT[level].replace("{COUNT}", str(count))).encode()


def build_set(sources: Sources) -> dict[str, bytes]:
    """Every file of the set, by relative path, the manifest included; the same sources give the same bytes."""
    files: dict[str, bytes] = {}
    names: dict[str, list[str]] = {level: [] for level in LEVELS}
    for name, document in sources.fs:
        files[f"fs/{name}.trace.json"] = encode_json(document)
        files[f"fs/{name}.result.json"] = encode_json(fs_answer(document))
        names["fs"].append(name)
    for case in sorted(CASES, key=lambda each: each.name):
        archives = [layer_tar(layer) for layer in case.layers]
        for path, data in oci_layout(archives, case.about).items():
            files[f"layer/{case.name}/{path}"] = data
        files[f"layer/{case.name}.rootfs.json"] = encode_json(encode_answer(layer_answer(archives)))
        files[f"layer/{case.name}.about.txt"] = (case.about + "\n").encode()
        names["layer"].append(case.name)
    for name, document in sources.store:
        files[f"store/{name}.trace.json"] = encode_json(document)
        files[f"store/{name}.result.json"] = encode_json(store_answer(document))
        names["store"].append(name)
    files["README.md"] = _readme("top", sum(len(each) for each in names.values()))
    for level in LEVELS:
        files[f"{level}/README.md"] = _readme(level, len(names[level]))
    release = set_version()
    files["VERSION"] = f"{release}\n".encode()
    files[MANIFEST] = encode_json(
        {
            "format": SET_FORMAT,
            "version": release,
            "vectors": names,
            "rules": {rule: list(vectors) for rule, vectors in sorted(RULE_VECTORS.items())},
            "files": {path: sha256(data) for path, data in sorted(files.items())},
        }
    )
    return dict(sorted(files.items()))


def write_set(directory: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` under ``directory``, which must be absent or empty; nothing is written outside it.

    Every file gets mode 0644 and every directory 0755, whatever the umask,
    so that a tarball of the tree is the same on every machine.
    """
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise SpecError(f"{directory}: exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()):
        raise SpecError(f"{directory}: not empty; export writes a new set into an empty or new directory")
    directory.mkdir(exist_ok=True)  # its parent must exist: nothing is made outside the directory named
    os.chmod(directory, 0o755)
    for relative, data in files.items():
        parts = relative.split("/")
        if relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise SpecError(f"refusing to write {relative!r}: not a plain relative path")
        target = directory
        for part in parts[:-1]:
            target = target / part
            if not target.is_dir():
                target.mkdir()
                os.chmod(target, 0o755)
        path = target / parts[-1]
        path.write_bytes(data)
        os.chmod(path, 0o644)


def read_set(directory: Path) -> dict[str, bytes]:
    """Every regular file under ``directory``, by relative path; a symlink or other special file is refused."""
    if not directory.is_dir():
        raise SpecError(f"{directory}: not a directory")
    files: dict[str, bytes] = {}
    for path in _walk(directory):
        relative = path.relative_to(directory).as_posix()
        if path.is_symlink() or not path.is_file():
            raise SpecError(f"{path}: not a regular file; a vector set holds only files and directories")
        files[relative] = path.read_bytes()
    return files


def _walk(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.iterdir()):
        if path.is_dir() and not path.is_symlink():
            yield from _walk(path)
        else:
            yield path


def check_manifest(files: Mapping[str, bytes]) -> tuple[dict[str, object], list[str]]:
    """The manifest of a set read with ``read_set``, and one line per file changed, missing or not listed."""
    if MANIFEST not in files:
        return {}, [f"{MANIFEST}: missing; this is not a vector set"]
    try:
        manifest = json.loads(files[MANIFEST])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return {}, [f"{MANIFEST}: not JSON ({error})"]
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != SET_FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        return {}, [f"{MANIFEST}: not a {SET_FORMAT} manifest"]
    listed: dict[str, object] = manifest["files"]
    problems = [f"{path}: missing" for path in sorted(set(listed) - set(files))]
    problems += [f"{path}: not in the manifest" for path in sorted(set(files) - set(listed) - {MANIFEST})]
    problems += [
        f"{path}: its sha256 does not match the manifest"
        for path in sorted(set(listed) & set(files))
        if sha256(files[path]) != listed[path]
    ]
    return manifest, problems


# -- running the set --------------------------------------------------------------

LEVEL_OF_DIRECTORY = {"fs": "filesystem", "layer": "layer", "store": "store"}
"""The driver level (``cowcheck.drivers.registry``) whose drivers run each directory of the set."""

Result = TypeVar("Result")

RULE_NAMED = re.compile(r"\b(?:APPLY|TAR)-\d+\b")
"""A rule of chapters 11 and 12 as a layer case's ``about`` names it."""


def _document(files: Mapping[str, bytes], path: str) -> object:
    try:
        return json.loads(files[path])
    except KeyError:
        raise SpecError(f"{path}: missing from the set") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SpecError(f"{path}: not JSON ({error})") from None


def _same_json(value: object, document: object) -> bool:
    """Whether ``value`` written as the set writes it is ``document`` (tuples and lists alike)."""
    return bool(json.loads(encode_json(value)) == document)


def manifest_digest(files: Mapping[str, bytes]) -> str:
    """The SHA-256 of the set's ``MANIFEST.json``: one figure a user can compare with a release's."""
    return sha256(files[MANIFEST])


def check_answers(files: Mapping[str, bytes], manifest: Mapping[str, object]) -> list[str]:
    """One line per way the set was not made by this cowspec: its version, then each answer the model does not give.

    The manifest's digests only show that the files agree with each other:
    whoever changes an answer can change its digest too. So the set is held
    to this cowspec's own model: every expected answer must be the one the
    model gives for the vector's input (the oracle for ``fs/``, the
    flatten for ``layer/``, the store model for ``store/``). Commits have no
    answer in the set; they are always compared with the model.
    """
    release = set_version()
    problems: list[str] = []
    written = files.get("VERSION", b"").decode("utf-8", "replace").strip()
    if manifest.get("version") != release or written != release:
        problems.append(
            f"the set is version {manifest.get('version')} (VERSION {written or 'missing'}), this cowspec is {release}:"
            " export the set with this cowspec or verify with the cowspec that made it"
        )
        return problems
    answers = {"fs": "result.json", "layer": "rootfs.json", "store": "result.json"}
    for directory, suffix in answers.items():
        for name in chosen(manifest, directory, ()):
            if not _same_json(model_answer(files, directory, name), _document(files, f"{directory}/{name}.{suffix}")):
                problems.append(
                    f"the set's answer for {directory}/{name} is not the model's: the set was made by another"
                    " cowspec or changed"
                )
    return problems


def model_answer(files: Mapping[str, bytes], directory: str, name: str) -> object:
    """What this cowspec's model answers for the input of vector ``DIRECTORY/NAME``, as the set writes it."""
    if directory == "fs":
        return fs_answer(_document(files, f"fs/{name}.trace.json"))
    if directory == "layer":
        return encode_answer(layer_answer(layout_layers(files, f"layer/{name}/")))
    try:
        return store_answer(_document(files, f"store/{name}.trace.json"))
    except SpecError as error:
        return {"rejected": str(error)}  # never the answer of a set this cowspec wrote


def _driver_failed(vector: str, error: Exception) -> DriverError:
    """One line for a driver that raised while running ``vector``: what it raised and why."""
    said = " ".join(str(error).split()) or "no message"
    return DriverError(f"the driver failed on {vector}: {type(error).__name__}: {said}")


def _by_driver(vector: str, call: Callable[[], Result]) -> Result:
    """``call()``, which runs driver code: whatever it raises becomes one ``DriverError`` naming ``vector``.

    ``DriverUnavailable`` passes as it is: the driver cannot run here, which
    is not a fault of this vector.
    """
    try:
        return call()
    except DriverUnavailable:
        raise
    except Exception as error:
        raise _driver_failed(vector, error) from error


def verify_fs(
    files: Mapping[str, bytes], name: str, driver: Driver, conformance: Conformance = "kernel"
) -> list[Difference]:
    """Where ``driver``'s result for vector ``fs/NAME`` differs from the model's, each with its rule.

    A trace the spec rejects is not run: the harness refuses it, as the set
    says. Otherwise the model follows the driver wherever the spec allows
    what it did [TRACE-5], and the comparison is ``cowspec check``'s.
    """
    try:
        trace = decode_trace(_document(files, f"fs/{name}.trace.json"))
        build_layers(trace)  # a layer's faults are found when the layers are built
    except SpecError:
        return []
    observed = _by_driver(f"fs/{name}", lambda: run_real(driver, trace))
    run = model_run(trace, observed_results(observed), conformance)
    return compare_run(run, observed, conformance=conformance)


def layer_rule(files: Mapping[str, bytes], name: str) -> str:
    """The rule layer case ``NAME`` is about: the first its ``about`` names (chapters 11 and 12).

    Every case names one; a case that did not would break flattening as a
    whole, which APPLY-1 states.
    """
    abouts = [case.about for case in CASES if case.name == name]
    about = abouts[0] if abouts else files.get(f"layer/{name}.about.txt", b"").decode("utf-8", "replace")
    found = RULE_NAMED.search(about)
    return found.group(0) if found else "APPLY-1"


def compare_layer(expected: Answer, actual: Answer, rule: str) -> list[Difference]:
    """Where two root filesystems differ (field ``rootfs``): a refusal agrees with any refusal, whatever its words."""
    if isinstance(expected, Refused) and isinstance(actual, Refused):
        return []
    if isinstance(expected, Refused) or isinstance(actual, Refused):
        return [Difference("rootfs", "", encode_answer(expected), encode_answer(actual), rule)]
    want = {str(entry["path"]): entry for entry in expected}
    got = {str(entry["path"]): entry for entry in actual}
    differences: list[Difference] = []
    for path in sorted(set(want) | set(got)):
        if path not in want or path not in got:
            differences.append(Difference("rootfs", path, want.get(path), got.get(path), rule))
            continue
        for key in sorted(set(want[path]) | set(got[path])):
            if want[path].get(key) != got[path].get(key):
                differences.append(Difference("rootfs", path, want[path].get(key), got[path].get(key), rule, key))
    return differences


def verify_layer(files: Mapping[str, bytes], name: str, driver: LayerDriver) -> list[Difference]:
    """Where ``driver``'s root filesystem for vector ``layer/NAME`` differs from the one the spec makes."""
    archives = layout_layers(files, f"layer/{name}/")
    actual = _by_driver(f"layer/{name}", lambda: driver.flatten(archives))
    return compare_layer(layer_answer(archives), actual, layer_rule(files, name))


def verify_store(files: Mapping[str, bytes], name: str, driver: StoreDriver) -> list[Difference]:
    """Where ``driver``'s result for vector ``store/NAME`` differs from the model's, each with its rule."""
    steps = decode_store_trace(_document(files, f"store/{name}.trace.json"))
    observed = _by_driver(f"store/{name}", lambda: driver.run(steps))
    return compare_store(run_store_model(steps), observed)


def chosen(manifest: Mapping[str, object], directory: str, patterns: Sequence[str]) -> list[str]:
    """The vectors of one directory of the set the manifest lists, narrowed to ``patterns`` (``fs/NAME`` globs)."""
    vectors = manifest.get("vectors")
    names = vectors.get(directory, []) if isinstance(vectors, dict) else []
    if not isinstance(names, list):
        raise SpecError(f"{MANIFEST}: vectors of {directory} are not a list")
    return [
        str(name)
        for name in names
        if not patterns or any(fnmatch.fnmatchcase(f"{directory}/{name}", pattern) for pattern in patterns)
    ]


def _unsupported(files: Mapping[str, bytes], name: str, features: frozenset[str] | None) -> list[str]:
    """The features trace ``fs/NAME`` turns on that are not among ``features`` (none when ``features`` is None).

    A trace the spec rejects needs nothing: it is never run, whatever it asks for.
    """
    if features is None:
        return []
    document = _document(files, f"fs/{name}.trace.json")
    try:
        build_layers(decode_trace(document))
    except SpecError:
        return []
    wanted = document.get("features") if isinstance(document, dict) else None
    if not isinstance(wanted, dict):
        return []
    return sorted(str(feature) for feature, on in wanted.items() if on is True and feature not in features)


def skip_reason(missing: Sequence[str]) -> str:
    """Why a vector is skipped: the overlay features it needs that the driver does not declare [FEATURE-1]."""
    noun = "feature" if len(missing) == 1 else "features"
    return f"needs the overlay {noun} {', '.join(missing)}, which the driver does not declare"


def _line(vector: str, differences: list[Difference]) -> Entry:
    return {"vector": vector, "agrees": not differences, "differences": [each.to_json() for each in differences]}


def verify_set(
    files: Mapping[str, bytes],
    manifest: Mapping[str, object],
    drivers: Mapping[str, Callable[[], object]],
    patterns: Sequence[str] = (),
    features: frozenset[str] | None = None,
) -> Iterator[Entry]:
    """One line per vector of each level ``drivers`` serves (keyed by level): its name, agreement and differences.

    Each vector is compared with the model (``check_answers`` holds the
    set's answers to be the model's), each difference as JSON with the rule
    it breaks. A driver is made once per level, when its level has a vector
    to run. Where ``features`` names the optional overlay features the
    driver declares, a trace that turns on another one is not run: its line
    says ``skipped`` and why [FEATURE-1]. ``None`` runs every trace. A
    layer driver that commits also runs every filesystem vector but the
    rejected ones as a commit (lines with ``"commit": true``) [COMMIT-1];
    one that only commits runs no layer vector. Whatever a driver raises
    while it is made or runs a vector is one ``DriverError`` naming it.
    """
    made: dict[str, object] = {}

    def driver_at(level: str) -> object:
        if level not in made:
            made[level] = _by_driver(f"the {level} level", drivers[level])
        return made[level]

    for directory in LEVELS:
        level = LEVEL_OF_DIRECTORY[directory]
        names = chosen(manifest, directory, patterns) if level in drivers else []
        if directory == "fs" and "layer" in drivers:
            # A layer driver that commits runs the filesystem vectors as commits too [COMMIT-1].
            yield from _verify_commits(files, chosen(manifest, "fs", patterns), lambda: driver_at("layer"), features)
        if not names:
            continue
        driver = driver_at(level)
        if getattr(driver, "flattens", True) is False:
            continue  # a layer driver that only commits
        for name in names:
            missing = _unsupported(files, name, features) if directory == "fs" else []
            if missing:
                yield {"vector": f"{directory}/{name}", "skipped": skip_reason(missing)}
                continue
            if directory == "fs":
                differences = verify_fs(files, name, cast(Driver, driver))
            elif directory == "layer":
                differences = verify_layer(files, name, cast(LayerDriver, driver))
            else:
                differences = verify_store(files, name, cast(StoreDriver, driver))
            yield _line(f"{directory}/{name}", differences)


def verify_commit(files: Mapping[str, bytes], name: str, committer: Committer) -> list[Difference]:
    """Where the layer ``committer`` commits after vector ``fs/NAME``'s ops differs from the model's.

    The model's commit is of the state after each op's first allowed
    outcome [COMMIT-1]; each difference names its rule.
    """
    trace = decode_trace(_document(files, f"fs/{name}.trace.json"))
    build_layers(trace)
    archive = _by_driver(f"fs/{name}", lambda: committer.commit(trace.layers, trace.features, trace.ops))
    return compare_commit(model_commit(trace), commit_result(archive))


def _verify_commits(
    files: Mapping[str, bytes],
    names: Sequence[str],
    layer_driver: Callable[[], object],
    features: frozenset[str] | None = None,
) -> Iterator[Entry]:
    """Every filesystem vector but the rejected ones, run as a commit by a layer driver that commits.

    Nothing is made or run when no vector is chosen or the driver does not
    commit; a trace that turns on a feature the driver does not declare
    (``features``, else the committer's own ``features``) is skipped [FEATURE-1].
    """
    runnable = [name for name in names if not name.startswith("rejected-")]
    if not runnable:
        return
    committer = committer_of(layer_driver())
    if committer is None:
        return
    if features is None:
        declared = getattr(committer, "features", None)
        features = frozenset(declared) if isinstance(declared, frozenset | set | tuple) else None
    for name in runnable:
        missing = _unsupported(files, name, features)
        if missing:
            yield {"vector": f"fs/{name}", "commit": True, "skipped": skip_reason(missing)}
            continue
        yield {"commit": True, **_line(f"fs/{name}", verify_commit(files, name, committer))}


README_TEXT = {
    "top": """# cowspec conformance vectors

A fixed set of inputs for implementations of layered copy-on-write container
storage, each with the answer the cowspec specification gives ({COUNT} vectors).
The set is versioned (`VERSION`, and `format` in `MANIFEST.json`) and
reproducible: `cowspec vectors export DIR` from the same cowspec gives the
same bytes, and `MANIFEST.json` holds the SHA-256 of every other file.

- `fs/`: filesystem traces (`cowspec-trace/1`) and their results: one
  container's ops on a stack of layers, what each op returns, and the merged
  tree, writable layer and sizes afterwards. Together they exercise every
  rule of spec chapters 1 to 10 (`rules` in `MANIFEST.json`).
- `layer/`: layer stacks as OCI image layouts and the root filesystem each
  gives, or the spec's refusal.
- `store/`: store scenarios (`cowspec-store-trace/1`): images, builds,
  containers and volumes, with every figure an engine reports.

Each directory has its own README. To run the set against an implementation:

    cowspec vectors verify --driver NAME DIR

which first says the SHA-256 of `MANIFEST.json` (compare it with the one
published with the release), checks every digest, and checks that the set
is this cowspec's: the same version, and every expected answer the one its
model gives (an answer changed along with its digest is refused). Then it
runs every vector of the levels the driver serves and prints one JSON line
per vector: `{"vector", "agrees", "differences"}`, each difference with its
`field`, `path`, `expected`, `actual` and the spec `rule` it breaks, or
`{"vector", "skipped"}` for a trace that turns on an overlay feature the
driver does not declare. Any implementation can also read the files
directly: they are plain JSON and tar.
""",
    "fs": """# Filesystem vectors (`cowspec-trace/1`)

{COUNT} vectors. `NAME.trace.json` is a trace in the format of
`docs/formats/trace-format.md`: `layers` (bottom first), `features` (the
overlay mount options), and `ops`, each standing for one system call made
as root with umask 0 in the container's merged view.

`NAME.result.json` is what the spec says the trace gives
(`cowspec-trace-result/1`): `results`, one item per op (`{"ok": true}`, with
a `value` for `read`, `stat`, `readdir` and `readlink`, or
`{"errno": "NAME"}`), then `merged` (the merged tree, root excluded),
`upper` (the writable layer as Docker's overlay2 would export it: whiteouts
and each directory's opaque flag) and `sizes` (`docker ps -s`'s SIZE and
virtual size). A result item may be `{"any_of": [...]}` where the spec
allows several outcomes; an implementation agrees when it gives one of them.

An implementation agrees with a vector when its result equals the expected
one: every item, and both trees compared entry by entry, sorted by path.

`rejected-*` vectors hold traces the spec rejects (a malformed layer, an
unknown op or feature, a path outside the spec); their result is
`{"rejected": REASON}`. A harness must refuse them before running anything;
the reason is for people and need not match word for word.

`found-*` vectors are cases cowspec's state machine found against the
Linux kernel, kept so that every implementation meets them.
""",
    "layer": """# Layer vectors

{COUNT} cases. `NAME/` is an OCI image layout (`oci-layout`, `index.json`,
`blobs/sha256/...`) of one image whose layers are uncompressed tars
(`application/vnd.oci.image.layer.v1.tar`), member order as the case needs
it: whiteouts before or after their entries, opaque markers, hardlinks,
members that escape the root. `NAME.about.txt` says what the case tests and
which spec rules (chapters 11 and 12) decide it.

`NAME.rootfs.json` is the root filesystem the spec makes of the stack: a
list of entries sorted by path (`path`, `type`, `uid`, `gid`, a directory's
and a file's `mode`, a file's `size`, `sha256` and `nlink`, a symlink's
`target`), or `{"refused": REASON}` where the spec rejects the image (the
reason is for people; any refusal agrees with a refusal).

To see the same with cowspec: `cowspec flatten layer/NAME`.
""",
    "store": """# Store vectors (`cowspec-store-trace/1`)

{COUNT} scenarios. `NAME.trace.json` is a store trace in the format of
`docs/formats/store-trace-format.md`: images loaded and built, containers
created and run, volumes, commits, tags. `NAME.result.json` is what the
spec says each step gives and every figure afterwards: image sizes and
history, each container's SIZE and virtual size, `docker system df`.

An engine agrees when every step's item and every figure equals the
expected one; a refusal agrees with a refusal of the same kind, and its
words are not compared.
""",
}
