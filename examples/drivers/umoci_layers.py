#!/usr/bin/env python3
"""A cowspec-driver/1 program at the layer level: umoci flattens the layers (standard library and umoci only).

    exec:python3 examples/drivers/umoci_layers.py      (a layer driver for cowspec)

For each ``flatten`` request it writes the layer tars into an OCI image
layout (gzipped blobs, a minimal config, a manifest and an index), runs
``umoci unpack`` into a bundle, and answers with the bundle's root
filesystem as entries in the shape ``cowspec flatten`` prints; when umoci
refuses the image, it answers with umoci's first line of complaint. Every
request works in a temporary directory removed before the reply.
"""

import base64
import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

PROTOCOL = "cowspec-driver/1"
MEDIA = "application/vnd.oci.image"


def write_layout(directory, archives):
    """An OCI image layout at ``directory`` with one image, tagged ``t``, of ``archives`` (bottom first)."""
    blobs = os.path.join(directory, "blobs", "sha256")
    os.makedirs(blobs)

    def put(data, media_type):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as handle:
            handle.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}

    layers = [put(gzip.compress(each, mtime=0), MEDIA + ".layer.v1.tar+gzip") for each in archives]
    diff_ids = ["sha256:" + hashlib.sha256(each).hexdigest() for each in archives]
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA + ".manifest.v1+json",
        "config": put(json.dumps(config).encode(), MEDIA + ".config.v1+json"),
        "layers": layers,
    }
    described = put(json.dumps(manifest).encode(), MEDIA + ".manifest.v1+json")
    described["annotations"] = {"org.opencontainers.image.ref.name": "t"}
    with open(os.path.join(directory, "index.json"), "w") as handle:
        json.dump({"schemaVersion": 2, "manifests": [described]}, handle)
    with open(os.path.join(directory, "oci-layout"), "w") as handle:
        json.dump({"imageLayoutVersion": "1.0.0"}, handle)


def entries(rootfs):
    """Everything below ``rootfs`` as cowspec flatten shows it, sorted by path."""
    found = []
    pending = [("", rootfs)]
    while pending:
        logical, real = pending.pop()
        for name in os.listdir(real):
            path, child = logical + "/" + name, os.path.join(real, name)
            info = os.lstat(child)
            mode = info.st_mode
            entry = {"path": path, "uid": info.st_uid, "gid": info.st_gid}
            if stat.S_ISLNK(mode):
                entry.update(type="symlink", target=os.readlink(child))
            else:
                kinds = [(stat.S_ISDIR, "dir"), (stat.S_ISREG, "file"), (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block")]
                entry.update(type=next((kind for test, kind in kinds if test(mode)), "fifo"), mode=stat.S_IMODE(mode))
            if entry["type"] == "file":
                with open(child, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                entry.update(size=info.st_size, sha256=digest, nlink=info.st_nlink)
            if entry["type"] in ("char", "block"):
                entry["device"] = [os.major(info.st_rdev), os.minor(info.st_rdev)]
            found.append(entry)
            if stat.S_ISDIR(mode):
                pending.append((path, child))
    return sorted(found, key=lambda entry: entry["path"])


def flatten(umoci, archives):
    work = tempfile.mkdtemp(prefix="umoci-layers-")
    try:
        write_layout(os.path.join(work, "image"), archives)
        bundle = os.path.join(work, "b")
        done = subprocess.run([umoci, "unpack", "--image", os.path.join(work, "image") + ":t", bundle],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()] or [f"status {done.returncode}"]
            return {"refused": lines[0].replace(work, "<work>")}
        return {"entries": entries(os.path.join(bundle, "rootfs"))}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    umoci = shutil.which("umoci")
    for line in sys.stdin:
        request = json.loads(line)
        kind = request.get("request")
        try:
            if kind == "hello":
                reply = {"protocol": PROTOCOL, "name": "umoci-layers"}
                if umoci and os.geteuid() == 0:
                    reply["levels"] = ["layer"]
                else:
                    reply["unavailable"] = "needs umoci on PATH, and root to unpack as the image says"
            elif kind == "flatten":
                reply = flatten(umoci, [base64.b64decode(each) for each in request["layers"]])
            elif kind == "bye":
                reply = {"ok": True}
            else:
                reply = {"error": f"unknown request {kind}"}
        except Exception as error:  # the driver failed: one line, and serve on
            reply = {"error": " ".join(f"{type(error).__name__}: {error}".split())}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if kind == "bye":
            break


if __name__ == "__main__":
    main()
