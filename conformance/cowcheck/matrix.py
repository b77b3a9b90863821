"""The conformance matrix: the same layer stacks fed to every real tool.

Each case is a stack of hand-made layer tars, member order included, taken
from the known divergences between implementations (research notes, section
4.3) and from the malicious inputs of spec chapter 11. cowspec's verdict is
the reference; each tool either agrees or diverges, and the matrix says how.
"""

import io
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass

from cowcheck.drivers.protocol import Answer, LayerDriver, Refused

Member = tuple[str, str, bytes | str] | tuple[str, str, bytes | str, int, int]


def raw_layer(members: Sequence[Member]) -> bytes:
    """A layer tar with exactly these members, in this order.

    A member is (name, kind, data or link target[, mode[, uid]]); kind is
    ``f`` file, ``d`` directory, ``l`` symlink, ``h`` hardlink.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            name, kind, payload = member[0], member[1], member[2]
            info = tarfile.TarInfo(name)
            info.type = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE}[kind]
            info.mode = member[3] if len(member) > 3 else (0o755 if kind == "d" else 0o644)
            info.uid = member[4] if len(member) > 4 else 0
            data = payload if isinstance(payload, bytes) else b""
            if isinstance(payload, str):
                info.linkname = payload
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass(frozen=True)
class Case:
    """A named stack of layers and what it tests."""

    name: str
    about: str
    layers: tuple[tuple[Member, ...], ...]

    def archives(self) -> list[bytes]:
        return [raw_layer(layer) for layer in self.layers]


CASES = (
    Case("same-layer-entry-then-whiteout", "L1 `foo`, then `.wh.foo` in the same layer: `foo` is kept (APPLY-2)",
         ((("foo", "f", b"old"),), (("foo", "f", b"new"), (".wh.foo", "f", b"")))),
    Case("same-layer-whiteout-then-entry", "L1 `.wh.foo`, then `foo` in the same layer: `foo` is kept (APPLY-2)",
         ((("foo", "f", b"old"),), ((".wh.foo", "f", b""), ("foo", "f", b"new")))),
    Case("opaque-marker-last", "L0 `a/x`; L1 `a/`, `a/y`, then `a/.wh..wh..opq`: `a/y` only (APPLY-2)",
         ((("a/", "d", b""), ("a/x", "f", b"x")), (("a/", "d", b""), ("a/y", "f", b"y"), ("a/.wh..wh..opq", "f", b"")))),
    Case("opaque-marker-first", "the same with the marker first (TAR-2)",
         ((("a/", "d", b""), ("a/x", "f", b"x")), (("a/", "d", b""), ("a/.wh..wh..opq", "f", b""), ("a/y", "f", b"y")))),
    Case("directory-whiteout-then-recreate", "L0 `a/foo`; L1 `.wh.a`; L2 `a/baz`: `a/baz` only (APPLY-2, APPLY-4)",
         ((("a/", "d", b""), ("a/foo", "f", b"")), ((".wh.a", "f", b""),), (("a/baz", "f", b""),))),
    Case("symlink-over-directory", "L0 `d/f`; L1 symlink `d` with no whiteout: the subtree is gone (APPLY-3)",
         ((("d/", "d", b""), ("d/f", "f", b"")), (("d", "l", "/target"),))),
    Case("bare-whiteout", "`x/.wh.`: refused (TAR-3)", ((("x/", "d", b""), ("x/f", "f", b"")), (("x/.wh.", "f", b""),))),
    Case("whiteout-dot-dot", "`x/.wh..`: refused (TAR-3)", ((("x/", "d", b""), ("x/f", "f", b"")), (("x/.wh..", "f", b""),))),
    Case("whiteout-three-dots", "`x/.wh...`: refused (TAR-3)",
         ((("x/", "d", b""), ("x/f", "f", b"")), (("x/.wh...", "f", b""),))),
    Case("opaque-prefix-lookalike", "`a/.wh..wh..opqX` whites out `.wh..opqX`, nothing: `a/k` stays (TAR-1)",
         ((("a/", "d", b""), ("a/k", "f", b"")), (("a/.wh..wh..opqX", "f", b""),))),
    Case("opaque-under-lower-symlink", "L0 `t/old`, `l -> t`; L1 `l/.wh..wh..opq`: `l` becomes an empty directory, `t/old` stays (APPLY-4)",
         ((("t/", "d", b""), ("t/old", "f", b""), ("l", "l", "t")), (("l/.wh..wh..opq", "f", b""),))),
    Case("entry-under-lower-symlink", "L0 `t/`, `l -> t`; L1 `l/new`: `l` becomes a directory holding `new` (APPLY-5)",
         ((("t/", "d", b""), ("t/old", "f", b""), ("l", "l", "t")), (("l/new", "f", b"n"),))),
    Case("hardlink-to-lower-layer", "L0 `a`; L1 hardlink `b -> a`: refused (TAR-3)", ((("a", "f", b"a"),), (("b", "h", "a"),))),
    Case("implied-parent-attributes", "L0 `d/` 0700 uid 7; L1 `d/f` only: `d` keeps 0700 and uid 7 (APPLY-5)",
         ((("d/", "d", b"", 0o700, 7),), (("d/f", "f", b""),))),
    Case("absolute-names", "members named `/abs/x`: cleaned to `abs/x` (TAR-3)", ((("/abs/", "d", b""), ("/abs/x", "f", b"x")),)),
    Case("path-traversal", "a member named `../evil`: refused (TAR-3)", ((("../evil", "f", b"x"),),)),
    Case("duplicate-entries", "two members for `a`: refused (TAR-3)", ((("a", "f", b"1"), ("a", "f", b"2")),)),
    Case("whiteout-of-nothing", "`.wh.nothing`: no effect (APPLY-2)", ((("a", "f", b""),), ((".wh.nothing", "f", b""),))),
    Case("file-under-lower-file", "L0 file `x`; L1 `x/y`: `x` becomes a directory (APPLY-4)", ((("x", "f", b"x"),), (("x/y", "f", b"y"),))),
    Case("hardlinks-in-one-layer", "`a` and hardlink `b -> a` in one layer: two names, nlink 2 (APPLY-3)",
         ((("a", "f", b"ab"), ("b", "h", "a")),)),
    Case("entry-under-same-layer-symlink", "L0 `t/`; L1 `l -> t` and `l/new` in one layer: refused (TAR-6)",
         ((("t/", "d", b""),), (("l", "l", "t"), ("l/new", "f", b"n")))),
    Case("entry-under-same-layer-file", "one layer: file `p` and `p/child`: refused (TAR-6)",
         ((("p", "f", b"p"), ("p/child", "f", b"c")),)),
)  # fmt: skip


def compare(reference: Answer, other: Answer) -> str:
    """``agrees`` or a short account of how ``other`` diverges."""
    if isinstance(reference, Refused) and isinstance(other, Refused):
        return "agrees (refused)"
    if isinstance(reference, Refused):
        return "diverges: accepts it"
    if isinstance(other, Refused):
        return f"diverges: refuses it ({other.reason})"
    want = {str(entry["path"]): entry for entry in reference}
    got = {str(entry["path"]): entry for entry in other}
    notes: list[str] = []
    for path in sorted(set(want) | set(got)):
        if path not in got:
            notes.append(f"no `{path}`")
        elif path not in want:
            notes.append(f"extra `{path}` ({got[path]['type']})")
        elif want[path] != got[path]:
            fields = sorted(
                key for key in set(want[path]) | set(got[path]) if want[path].get(key) != got[path].get(key)
            )
            shown = ", ".join(
                f"{key} {got[path].get(key)!r} not {want[path].get(key)!r}" for key in fields if key != "sha256"
            )
            notes.append(f"`{path}`: {shown or 'other content'}")
    return "agrees" if not notes else "diverges: " + "; ".join(notes[:3]) + (" …" if len(notes) > 3 else "")


def run_matrix(drivers: Sequence[LayerDriver], reference: LayerDriver) -> list[tuple[Case, Answer, list[str]]]:
    """Every case through the reference and every driver."""
    rows = []
    for case in CASES:
        archives = case.archives()
        expected = reference.flatten(archives)
        rows.append((case, expected, [compare(expected, driver.flatten(archives)) for driver in drivers]))
    return rows


def markdown(rows: list[tuple[Case, Answer, list[str]]], names: list[str], versions: dict[str, str]) -> str:
    """The matrix as a Markdown document."""
    lines = [
        "# Conformance matrix: layer stacks through real tools",
        "",
        "Generated by `cowspec matrix`: each case is a stack of hand-made layer tars",
        "(`conformance/cowcheck/matrix.py`), flattened by cowspec (the reference) and",
        "by each tool. A cell says whether the tool's root filesystem equals",
        "cowspec's, and if not, how it differs. Docker's init-layer placeholders",
        "(`/.dockerenv`, `/etc/hosts` and the like) are taken out of its export.",
        "",
        "Tools: " + ", ".join(f"{name} {versions.get(name, '?')}" for name in names) + ".",
        "",
        "| case | cowspec | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for case, expected, cells in rows:
        verdict = f"refused: {expected.reason}" if isinstance(expected, Refused) else f"{len(expected)} entries"
        verdict = verdict.replace("|", "\\|")
        shown = [cell.replace("|", "\\|") for cell in cells]
        lines.append(f"| **{case.name}**: {case.about} | {verdict} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"
