"""What ``cowspec layers`` and ``cowspec inspect`` print (see docs/formats/inspect-format.md).

Sizes are SI, as Docker and dive print them (1 kB = 1000 B), in
go-humanize's form: ``999 B``, ``1.2 kB``, ``12 MB``. Layers are numbered
from 0, bottom first, everywhere: in the tables, in the JSON and in
messages ("layer 0"). Paths and commands are shown escaped as messages
are (``cli.one_line``: control and format characters such as U+202E, line
and paragraph separators, bytes that are not UTF-8), backslashes doubled,
so that one line stays one line and reads as the image holds it.
"""

import re
from collections.abc import Callable, Sequence

from cowcheck.cli.output import one_line
from cowcheck.images import ImageLayer
from cowspec.fs.paths import ROOT
from cowspec.oci.apply import Copy, LayerStats, LayerTrace
from cowspec.oci.history import HistoryRow, LayerHistory, shown_command
from cowspec.oci.layer_tar import TarEntry, canonical_key
from cowspec.oci.waste import ImageWaste, Thresholds, Verdict

FORMAT = "cowspec-inspect/1"
UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
PARSED_UNITS = {
    "": 1,
    "b": 1,
    **{prefix: 1000**power for power, prefix in enumerate(("", "k", "m", "g", "t", "p", "e")) if prefix},
    **{prefix + "b": 1000**power for power, prefix in enumerate(("", "k", "m", "g", "t", "p", "e")) if prefix},
    **{prefix + "i": 1024**power for power, prefix in enumerate(("", "k", "m", "g", "t", "p", "e")) if prefix},
    **{prefix + "ib": 1024**power for power, prefix in enumerate(("", "k", "m", "g", "t", "p", "e")) if prefix},
}
SIZE_TEXT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")
Sizes = Callable[[int], str]


def human_size(size: int) -> str:
    """``size`` bytes in SI units, as go-humanize's ``Bytes`` (Docker, dive) shows them."""
    if size < 10:
        return f"{size} B"
    power = 0
    while power + 1 < len(UNITS) and size >= 1000 ** (power + 1):
        power += 1
    value = int(size * 10 / 1000**power + 0.5) / 10
    return f"{value:.1f} {UNITS[power]}" if value < 10 else f"{value:.0f} {UNITS[power]}"


def exact_size(size: int) -> str:
    return f"{size} B"


def parse_size(text: str) -> int | None:
    """A byte count as dive takes one: ``20MB`` (SI), ``20MiB`` (binary), ``1234``; None for ``disabled``."""
    if text.strip().lower() == "disabled":
        return None
    found = SIZE_TEXT.match(text)
    unit = found.group(2).lower() if found else ""
    if found is None or unit not in PARSED_UNITS:
        raise ValueError(f"{text!r}: expected a size such as 20MB, 512kB, 1GiB or 1000, or disabled")
    return int(float(found.group(1)) * PARSED_UNITS[unit])


def parse_ratio(text: str) -> float | None:
    """A ratio as dive takes one (``0.1``), or a percentage (``10%``); None for ``disabled``."""
    stripped = text.strip()
    if stripped.lower() == "disabled":
        return None
    try:
        return float(stripped[:-1]) / 100 if stripped.endswith("%") else float(stripped)
    except ValueError:
        raise ValueError(f"{text!r}: expected a ratio such as 0.9, a percentage such as 90%, or disabled") from None


def escape(text: str) -> str:
    """``text`` as a table shows it: escaped as a message is (``one_line``), backslashes doubled first.

    Doubling keeps an escape unambiguous: a name that holds a backslash and
    an ``n`` is shown ``\\\\n``, a newline ``\\n``.
    """
    return one_line(text.replace("\\", "\\\\") if "\\" in text else text)


def entry_size(entry: TarEntry) -> int:
    """An entry's own bytes as SIZE-1 counts them: a file's length, a symlink's target; else 0."""
    if entry.kind == "file":
        return entry.size
    return len(entry.link.encode()) if entry.kind == "symlink" else 0


def layer_files(layer: ImageLayer, trace: LayerTrace) -> list[dict[str, object]]:
    """The layer's entries, adding (A) or changing (C) a path, and the paths its markers deleted (D) [APPLY-8]."""
    rows: list[tuple[str, str, TarEntry]] = [
        ("C" if entry.path in trace.changed else "A", entry.path, entry)
        for entry in layer.layer.entries
        if entry.path != ROOT
    ]
    rows += [("D", entry.path, entry) for entry in trace.deleted]
    rows.sort(key=lambda row: canonical_key(row[1]))
    shown: list[dict[str, object]] = []
    for change, path, entry in rows:
        fields: dict[str, object] = {"path": path, "type": entry.kind, "size": entry_size(entry), "change": change}
        if entry.kind in ("symlink", "hardlink"):
            fields["target"] = entry.link
        shown.append(fields)
    return shown


def _history(row: HistoryRow | None) -> dict[str, object]:
    return {
        "created_by": row.created_by if row else None,
        "created": row.created if row else None,
        "comment": row.comment if row else None,
    }


def layer_rows(
    layers: Sequence[ImageLayer],
    stats: Sequence[LayerStats],
    history: LayerHistory,
    traces: Sequence[LayerTrace] | None = None,
) -> list[dict[str, object]]:
    """One JSON row per layer, numbered from 0 bottom first [APPLY-6][APPLY-7][APPLY-11]."""
    rows: list[dict[str, object]] = []
    for index, (layer, stat, row) in enumerate(zip(layers, stats, history.rows, strict=True)):
        fields: dict[str, object] = {
            "index": index,
            "diff_id": layer.diff_id,
            "chain_id": layer.chain_id,
            "media_type": layer.media_type,
            **_history(row),
            "size": stat.size,
            "kept": stat.kept,
            "wasted": stat.wasted,
            "adds": stat.adds,
            "changes": stat.changes,
            "deletes": stat.deletes,
        }
        if traces is not None:
            fields["files"] = layer_files(layer, traces[index])
        rows.append(fields)
    return rows


def _copy(copy: Copy) -> dict[str, object]:
    return {"layer": copy.layer, "size": copy.size, "lost_in": copy.lost_in}


def verdict_json(verdict: Verdict) -> dict[str, object]:
    return {"name": verdict.name, "status": verdict.status, "value": verdict.value, "threshold": verdict.threshold}


def inspect_document(
    image: str,
    rows: list[dict[str, object]],
    waste: ImageWaste,
    history: LayerHistory,
    verdicts: Sequence[Verdict] | None,
) -> dict[str, object]:
    """``inspect --json``: the document docs/formats/inspect-format.md describes [APPLY-9][APPLY-10]."""
    return {
        "format": FORMAT,
        "image": image,
        "layers": rows,
        "history_layer_rows": history.layer_rows,
        "image_totals": {
            "stored": waste.stored,
            "kept": waste.kept,
            "wasted": waste.wasted,
            "user_stored": waste.user_stored,
            "efficiency": waste.efficiency,
            "user_wasted_ratio": waste.user_wasted_ratio,
        },
        "wasted_files": [
            {"path": each.path, "wasted": each.wasted, "copies": [_copy(copy) for copy in each.copies]}
            for each in waste.files
        ],
        "gate": None
        if verdicts is None
        else {
            "passed": not any(each.status == "fail" for each in verdicts),
            "thresholds": [verdict_json(each) for each in verdicts],
        },
    }


def _command(row: HistoryRow | None) -> str:
    return escape(shown_command(row))


def layers_table(rows: list[dict[str, object]], history: LayerHistory, size: Sizes) -> list[str]:
    """``cowspec layers``: a line per layer and, with ``--files``, its entries below it."""
    lines = [
        f"{'#':>3}  {'DIFF ID':<19}  {'CHAIN ID':<19}  {'SIZE':>9}  {'ADDS':>7}  {'CHANGES':>7}  {'DELETES':>7}"
        "  CREATED BY"
    ]
    for row, entry in zip(rows, history.rows, strict=True):
        lines.append(
            f"{row['index']:>3}  {str(row['diff_id'])[:19]:<19}  {str(row['chain_id'])[:19]:<19}"
            f"  {size(int(str(row['size']))):>9}  {row['adds']:>7}  {row['changes']:>7}  {row['deletes']:>7}"
            f"  {_command(entry)}"
        )
    for row in rows:
        files = row.get("files")
        if not isinstance(files, list):
            continue
        count = f"{len(files)} entry" if len(files) == 1 else f"{len(files)} entries"
        lines.append(f"layer {row['index']}: {count} (A added, C changed, D deleted)")
        for each in files:
            target = f" -> {escape(str(each['target']))}" if "target" in each else ""
            lines.append(
                f"  {each['change']} {each['type']:<8} {size(int(each['size'])):>9}  {escape(each['path'])}{target}"
            )
    return lines


def _percent(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{100 * ratio:.1f}%"


def inspect_report(rows: list[dict[str, object]], waste: ImageWaste, history: LayerHistory, size: Sizes) -> list[str]:
    """``cowspec inspect``: each layer, the image's totals, its wasted files [APPLY-9][APPLY-11]."""
    lines = [f"{'#':>3}  {'SIZE':>9}  {'WASTED':>9}  {'ADDS':>7}  {'CHANGES':>7}  {'DELETES':>7}  CREATED BY"]
    for row, entry in zip(rows, history.rows, strict=True):
        lines.append(
            f"{row['index']:>3}  {size(int(str(row['size']))):>9}  {size(int(str(row['wasted']))):>9}"
            f"  {row['adds']:>7}  {row['changes']:>7}  {row['deletes']:>7}  {_command(entry)}"
        )
    if history.layer_rows is not None and history.layer_rows != len(rows):
        lines.append(
            f"note: the config's history has {history.layer_rows} rows that made a layer, for {len(rows)} layers"
        )
    lines.append(
        f"image: {size(waste.stored)} stored in {len(rows)} layers, {size(waste.kept)} kept,"
        f" {size(waste.wasted)} wasted; efficiency {_percent(waste.efficiency)}"
    )
    lines.append(
        f"user wasted: {size(waste.wasted)} of {size(waste.user_stored)} stored above layer 0"
        f" ({_percent(waste.user_wasted_ratio)})"
    )
    lines.append(f"wasted files: {len(waste.files)}")
    if waste.files:
        lines.append(f"{'WASTED':>9}  PATH  (copies: layer, size, fate)")
    for each in waste.files:
        copies = ", ".join(
            f"layer {copy.layer} {size(copy.size)} "
            + ("kept" if copy.lost_in is None else f"lost in layer {copy.lost_in}")
            for copy in each.copies
        )
        lines.append(f"{size(each.wasted):>9}  {escape(each.path)}  ({copies})")
    return lines


RULE_TEXT = {
    "lowest-efficiency": "efficiency",
    "highest-wasted-bytes": "wasted",
    "highest-user-wasted-percent": "wasted over the bytes above layer 0",
}


def gate_lines(verdicts: Sequence[Verdict], size: Sizes) -> list[str]:
    """One line per threshold, PASS, FAIL or SKIP, and the result [APPLY-10]."""
    lines: list[str] = []
    for verdict in verdicts:
        name, value, limit = verdict.name, verdict.value, verdict.threshold
        if verdict.status == "skip":
            why = "disabled" if limit is None else "no bytes above layer 0"
            lines.append(f"SKIP {name}: {why}")
            continue
        assert value is not None and limit is not None
        if name == "highest-wasted-bytes":
            shown, bound = f"{size(int(value))} ({int(value)} bytes)", f"{size(int(limit))} ({int(limit)} bytes)"
        else:
            shown, bound = f"{value:.4f}", f"{limit:g}"
        relation = {"lowest-efficiency": ("below", "not below")}.get(name, ("above", "not above"))
        if verdict.status == "fail":
            lines.append(f"FAIL {name}: {RULE_TEXT[name]} {shown} is {relation[0]} the threshold {bound}")
        else:
            lines.append(f"PASS {name}: {RULE_TEXT[name]} {shown} is {relation[1]} the threshold {bound}")
    failed = sum(each.status == "fail" for each in verdicts)
    skipped = sum(each.status == "skip" for each in verdicts)
    checked = len(verdicts) - skipped
    if failed:
        lines.append(f"Result: FAIL ({failed} of {checked} thresholds failed, {skipped} skipped)")
    else:
        lines.append(f"Result: PASS ({checked} thresholds passed, {skipped} skipped)")
    return lines


def thresholds(lowest_efficiency: str | None, highest_wasted_bytes: str | None, highest_user: str | None) -> Thresholds:
    """The gate's limits from the command line: dive's defaults where one is not given [APPLY-10]."""
    limits = Thresholds()
    return Thresholds(
        limits.lowest_efficiency if lowest_efficiency is None else parse_ratio(lowest_efficiency),
        limits.highest_wasted_bytes if highest_wasted_bytes is None else parse_size(highest_wasted_bytes),
        limits.highest_user_wasted_percent if highest_user is None else parse_ratio(highest_user),
    )
