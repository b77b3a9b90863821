"""The config of an image already read, for its history [APPLY-11].

``images.ImageReading`` checks the config's DiffIDs against the layers but
keeps no more of it. Here the image is opened again, read only, and the
config whose ``rootfs.diff_ids`` are the layers' DiffIDs is found: in a
``docker save``, among ``manifest.json``'s images; in an OCI layout, among
the manifests ``index.json`` reaches (nested indexes included). Two images
of the same layers and different histories would be told apart by their
reference only; the first found is taken. History is metadata: a config
that cannot be read again gives none, never an error.
"""

import os
from collections.abc import Sequence
from typing import Protocol, cast

from cowspec.errors import SpecError
from cowspec.history import LayerHistory, layer_history

MAX_NESTING = 8
MAX_CONFIGS = 256
"""Configs looked at, at most, in a layout of many images."""


class Files(Protocol):
    """What is read of an image: ``images._Source``."""

    def has(self, name: str) -> bool: ...

    def json(self, name: str) -> object: ...


def _blob(digest: object) -> str | None:
    if not isinstance(digest, str):
        return None
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
        return None
    return f"blobs/sha256/{hexdigest}"


def _configs(files: Files) -> list[str]:
    """The names of the image's configs, in the order the image lists them."""
    names: list[str] = []
    if files.has("index.json"):
        pending: list[tuple[object, int]] = [(files.json("index.json"), 0)]
        while pending and len(names) < MAX_CONFIGS:
            document, depth = pending.pop(0)
            manifests = document.get("manifests") if isinstance(document, dict) else None
            for each in manifests if isinstance(manifests, list) else ():
                name = _blob(each.get("digest")) if isinstance(each, dict) else None
                if name is None or not files.has(name):
                    continue
                inner = files.json(name)
                if isinstance(inner, dict) and isinstance(inner.get("manifests"), list):
                    if depth < MAX_NESTING:
                        pending.append((inner, depth + 1))
                    continue
                config = inner.get("config") if isinstance(inner, dict) else None
                config_name = _blob(config.get("digest")) if isinstance(config, dict) else None
                if config_name is not None:
                    names.append(config_name)
    elif files.has("manifest.json"):
        manifest = files.json("manifest.json")
        for image in manifest if isinstance(manifest, list) else ():
            config_name = image.get("Config") if isinstance(image, dict) else None
            if isinstance(config_name, str):
                names.append(config_name)
    return names[:MAX_CONFIGS]


def find_config(files: Files, diff_ids: Sequence[str]) -> object | None:
    """The config among ``files`` whose DiffIDs are ``diff_ids``; None if there is none."""
    wanted = list(diff_ids)
    try:
        for name in _configs(files):
            if not files.has(name):
                continue
            config = files.json(name)
            rootfs = config.get("rootfs") if isinstance(config, dict) else None
            if isinstance(rootfs, dict) and rootfs.get("diff_ids") == wanted:
                return config
    except SpecError:
        return None
    return None


def read_history(image: str, diff_ids: Sequence[str]) -> LayerHistory:
    """Each layer's history row, for the image ``image`` whose layers are ``diff_ids`` [APPLY-11].

    Standard input was read once and is gone: an image from it has no history.
    """
    from .images import _Source

    nothing = layer_history(None, len(diff_ids))
    if image == "-":
        return nothing
    candidates = [image]
    if not os.path.exists(image):
        # PATH:REF, where REF may hold colons of its own (``name:tag``)
        candidates += [image[:at] for at, char in enumerate(image) if char == ":" and os.path.exists(image[:at])]
    for path in candidates:
        try:
            source = _Source(path)
        except SpecError:
            continue
        try:
            config = find_config(cast(Files, source), diff_ids)
        finally:
            if source.tar is not None:
                source.tar.close()
        if config is not None:
            return layer_history(config, len(diff_ids))
    return nothing
