"""Chapter 12: what ``inspect`` and ``layers --files`` show: history, wasted files, efficiency, the CI gate."""

import json
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

from cowcheck.cli.inspect_report import human_size, layers_table, parse_ratio, parse_size
from cowcheck.cli.main import main
from cowcheck.images import docker_archive, write_oci_layout
from cowspec.oci.apply import ApplyOptions, Copy, flatten_traced, flatten_with_stats
from cowspec.oci.history import HistoryRow, LayerHistory, layer_history, shown_command
from cowspec.oci.layer_tar import LayerTar, TarEntry, encode_layer
from cowspec.oci.waste import Thresholds, image_waste, judge

# The model's own reader: these tests are about what is made of the layers.
STREAM = ["--reader", "stream"]


def L(entries: list[TarEntry], whiteouts: tuple[str, ...] = (), opaque: tuple[str, ...] = ()) -> LayerTar:
    return LayerTar(
        tuple(sorted(entries, key=lambda e: tuple(e.path.split("/")))), frozenset(whiteouts), frozenset(opaque)
    )


def F(path: str, size: int) -> TarEntry:
    return TarEntry(path, "file", data=b"x" * size)


def D(path: str) -> TarEntry:
    return TarEntry(path, "dir", 0o755)


# Layer 0: a base; layer 1 overwrites a file and deletes one; layer 2 makes a directory opaque.
WASTEFUL = [
    L(
        [
            D("/app"),
            F("/app/big", 1000),
            D("/etc"),
            F("/etc/conf", 300),
            D("/opt"),
            D("/opt/d"),
            F("/opt/d/x", 200),
            F("/opt/d/y", 50),
            F("/keep", 10),
        ]
    ),
    L([D("/app"), F("/app/big", 400)], whiteouts=("/etc/conf",)),
    L([D("/opt/d"), F("/opt/d/z", 30)], opaque=("/opt/d",)),
]
# By hand: stored 1560 + 400 + 30 = 1990; kept /keep 10, /app/big 400, /opt/d/z 30 = 440.
STORED, KEPT, USER_STORED = 1990, 440, 430
HISTORY = [("ADD base.tar /", False), ("ENV A=1", True), ("RUN make", False), ('CMD ["x"]', True), ("COPY z", False)]


def save(
    tmp_path: Path, layers: list[LayerTar], history: list[tuple[str, bool]] | None = None, name: str = "saved.tar"
) -> str:
    path = tmp_path / name
    path.write_bytes(docker_archive([encode_layer(each) for each in layers], "cowspec/inspect:1", history))
    return str(path)


def inspect_json(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, dict[str, object]]:
    status = main(["inspect", *STREAM, "--json", *arguments])
    return status, json.loads(capsys.readouterr().out)


def objects(document: dict[str, object], key: str) -> list[dict[str, object]]:
    """The list of JSON objects at ``key`` of a parsed ``inspect --json`` document."""
    return cast(list[dict[str, object]], document[key])


def test_history_rows_are_paired_with_layers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[APPLY-11][STORE-2] Rows with empty_layer stand for no layer; the others, in order, for the layers."""
    image = save(tmp_path, WASTEFUL, HISTORY)
    _, document = inspect_json(capsys, image)
    layers = document["layers"]
    assert isinstance(layers, list)
    assert [row["created_by"] for row in layers] == ["ADD base.tar /", "RUN make", "COPY z"]
    assert [row["index"] for row in layers] == [0, 1, 2]
    assert document["history_layer_rows"] == 3
    assert main(["layers", *STREAM, "--json", image]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["created_by"] for row in rows] == ["ADD base.tar /", "RUN make", "COPY z"]
    assert main(["inspect", *STREAM, image]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].split()[0] == "1" and table[2].endswith("RUN make")
    # A history that names too few layers: the last has none, and inspect says so.
    short = save(tmp_path, WASTEFUL, HISTORY[:3], "short.tar")
    _, document = inspect_json(capsys, short)
    assert [row["created_by"] for row in objects(document, "layers")] == ["ADD base.tar /", "RUN make", None]
    assert main(["inspect", *STREAM, short]) == 0
    out = capsys.readouterr().out
    assert "note: the config's history has 2 rows that made a layer, for 3 layers" in out
    assert "(no history)" in out
    # PATH:REF names the same image, its reference holding a colon of its own; standard input too.
    assert main(["layers", *STREAM, "--json", image + ":cowspec/inspect:1"]) == 0
    assert [row["created_by"] for row in json.loads(capsys.readouterr().out)][1] == "RUN make"
    with open(image, "rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-m", "cowcheck.cli", "layers", "--json", "-"],
            stdin=stdin,
            capture_output=True,
            check=True,
        )
    assert [row["created_by"] for row in json.loads(done.stdout)] == ["ADD base.tar /", "RUN make", "COPY z"]
    # An OCI layout's history is read too.
    write_oci_layout(str(tmp_path / "oci"), [encode_layer(each) for each in WASTEFUL])
    _, document = inspect_json(capsys, str(tmp_path / "oci"))
    assert [row["created_by"] for row in objects(document, "layers")] == [
        "cowspec layer 0",
        "cowspec layer 1",
        "cowspec layer 2",
    ]


def test_a_row_without_a_command_shows_its_comment() -> None:
    """[APPLY-11] docker import's row (created and comment only) shows ``# COMMENT``; neither: ``(no history)``."""
    config = {"history": [{"created": "2024-01-01T00:00:00Z", "comment": "Imported from -"}, {"created_by": ""}]}
    paired = layer_history(config, 3)
    assert [shown_command(row) for row in paired.rows] == ["# Imported from -", "(no history)", "(no history)"]
    assert shown_command(HistoryRow("RUN x", None, "buildkit")) == "RUN x"
    rows = [{"index": index, "diff_id": "sha256:0", "chain_id": "sha256:0", "size": 0, "adds": 0, "changes": 0,
             "deletes": 0} for index in range(3)]  # fmt: skip
    hostile = LayerHistory((HistoryRow(None, None, "Imported\nfrom \u202e-"), *paired.rows[1:]), 2)
    table = layers_table(rows, hostile, human_size)
    assert [line.split("  ")[-1] for line in table[1:]] == [
        "# Imported\\nfrom \\u202e-",
        "(no history)",
        "(no history)",
    ]


def test_layer_history_pairing_by_hand() -> None:
    """[APPLY-11] Too many rows are left out; no history list gives no rows; odd values are ignored."""
    config = {
        "history": [
            {"created_by": "a", "created": "2024-01-01T00:00:00Z"},
            {"created_by": "env", "empty_layer": True},
            {"created_by": "b", "comment": "buildkit"},
            {"created_by": "c"},
        ]
    }
    paired = layer_history(config, 2)
    assert paired.rows == (HistoryRow("a", "2024-01-01T00:00:00Z"), HistoryRow("b", None, "buildkit"))
    assert paired.layer_rows == 3
    assert layer_history({"architecture": "amd64"}, 2).rows == (None, None)
    assert layer_history({"architecture": "amd64"}, 2).layer_rows is None
    assert layer_history({"history": [{"created_by": 7}]}, 1).rows == (HistoryRow(None),)


def test_wasted_files_and_efficiency(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[APPLY-8][APPLY-9] An overwritten file, a whited-out file, an opaque directory's children."""
    _, stats, traces = flatten_traced(WASTEFUL)
    waste = image_waste(stats, traces)
    assert (waste.stored, waste.kept, waste.wasted, waste.user_stored) == (STORED, KEPT, STORED - KEPT, USER_STORED)
    assert waste.efficiency == pytest.approx(440 / 1990)
    assert waste.user_wasted_ratio == pytest.approx(1550 / 430)
    assert [(each.path, each.wasted, each.copies) for each in waste.files] == [
        ("/app/big", 1000, (Copy("/app/big", 0, 1000, 1), Copy("/app/big", 1, 400, None))),
        ("/etc/conf", 300, (Copy("/etc/conf", 0, 300, 1),)),
        ("/opt/d/x", 200, (Copy("/opt/d/x", 0, 200, 2),)),
        ("/opt/d/y", 50, (Copy("/opt/d/y", 0, 50, 2),)),
    ]
    assert sum(each.wasted for each in waste.files) == waste.wasted
    status, document = inspect_json(capsys, save(tmp_path, WASTEFUL, HISTORY))
    assert status == 0
    assert document["format"] == "cowspec-inspect/1"
    assert document["image_totals"] == {
        "stored": 1990,
        "kept": 440,
        "wasted": 1550,
        "user_stored": 430,
        "efficiency": 440 / 1990,
        "user_wasted_ratio": 1550 / 430,
    }
    assert objects(document, "wasted_files")[0] == {
        "path": "/app/big",
        "wasted": 1000,
        "copies": [{"layer": 0, "size": 1000, "lost_in": 1}, {"layer": 1, "size": 400, "lost_in": None}],
    }
    assert [(row["size"], row["kept"], row["wasted"]) for row in objects(document, "layers")] == [
        (1560, 10, 1550),
        (400, 400, 0),
        (30, 30, 0),
    ]
    assert document["gate"] is None
    assert set(objects(document, "layers")[0]) == {
        "index", "diff_id", "chain_id", "media_type", "created_by", "created", "comment",
        "size", "kept", "wasted", "adds", "changes", "deletes",
    }  # fmt: skip


def test_losses_the_totals_would_hide() -> None:
    """[APPLY-8][APPLY-9] A surviving hardlink keeps its inode; a parent implied over a file loses it."""
    layers = [
        L([F("/b", 3), TarEntry("/c", "hardlink", link="/b"), F("/x", 4)]),
        L([F("/x/y", 1)], whiteouts=("/b",)),
    ]
    _, stats, traces = flatten_traced(layers)
    waste = image_waste(stats, traces)
    assert [(each.path, each.wasted) for each in waste.files] == [("/x", 4)]
    assert traces[1].copies == (Copy("/x/y", 1, 1, None),)
    # One layer: nothing above layer 0, so no user wasted ratio.
    _, stats, traces = flatten_traced(layers[:1])
    assert image_waste(stats, traces).user_wasted_ratio is None


@pytest.mark.parametrize("options", [ApplyOptions(), ApplyOptions("default", "follow")])
def test_traced_agrees_with_stats(options: ApplyOptions) -> None:
    """[APPLY-6][APPLY-8] Path by path, the same adds, changes, deletes and kept bytes as the counts."""
    stacks = [
        WASTEFUL,
        [L([D("/a"), D("/a/b"), F("/a/b/f", 2), F("/a/g", 1)]), L([], whiteouts=("/a", "/a/b"), opaque=("/a/b",))],
        [L([D("/t"), F("/t/old", 3), TarEntry("/l", "symlink", link="t")]), L([F("/l/new", 1)], opaque=("/l",))],
    ]
    for layers in stacks:
        rootfs, stats, traces = flatten_traced(layers, options)
        plain, counted = flatten_with_stats(layers, options)
        assert stats == counted and rootfs.entries == plain.entries
        for layer, stat, trace in zip(layers, stats, traces, strict=True):
            assert len(trace.changed) == stat.changes
            assert len(trace.deleted) == stat.deletes
            assert sum(each.size for each in trace.copies) == stat.size
            assert {entry.path for entry in layer.entries} >= trace.changed


def test_layers_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[APPLY-8] Each layer's entries, added, changed or deleted, with type and size."""
    image = save(tmp_path, WASTEFUL, HISTORY)
    assert main(["layers", *STREAM, "--files", "--json", image]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(each["path"], each["change"], each["type"], each["size"]) for each in rows[1]["files"]] == [
        ("/app", "C", "dir", 0),
        ("/app/big", "C", "file", 400),
        ("/etc/conf", "D", "file", 300),
    ]
    assert [(each["path"], each["change"]) for each in rows[2]["files"]] == [
        ("/opt/d", "C"),
        ("/opt/d/x", "D"),
        ("/opt/d/y", "D"),
        ("/opt/d/z", "A"),
    ]
    assert [sum(each["change"] == "A" for each in row["files"]) for row in rows] == [row["adds"] for row in rows]
    assert main(["layers", *STREAM, "--files", image]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "layer 1: 3 entries (A added, C changed, D deleted)" in lines
    assert "  D file         300 B  /etc/conf" in lines
    assert "  C file         400 B  /app/big" in lines
    assert main(["layers", *STREAM, image]) == 0
    assert "layer 1:" not in capsys.readouterr().out


def test_human_readable_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[APPLY-9] SI units as Docker and dive show them, exact bytes on request."""
    assert [human_size(n) for n in (0, 9, 10, 999, 1000, 1234, 1550, 99_949, 12_345_678, 3 * 10**12)] == [
        "0 B", "9 B", "10 B", "999 B", "1.0 kB", "1.2 kB", "1.6 kB", "100 kB", "12 MB", "3.0 TB",
    ]  # fmt: skip
    image = save(tmp_path, WASTEFUL, HISTORY)
    assert main(["inspect", *STREAM, image]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "image: 2.0 kB stored in 3 layers, 440 B kept, 1.6 kB wasted; efficiency 22.1%" in out
    assert "user wasted: 1.6 kB of 430 B stored above layer 0 (360.5%)" in out
    assert "   1.0 kB  /app/big  (layer 0 1.0 kB lost in layer 1, layer 1 400 B kept)" in out
    assert main(["inspect", *STREAM, "--bytes", image]) == 0
    assert "image: 1990 B stored in 3 layers, 440 B kept, 1550 B wasted; efficiency 22.1%" in capsys.readouterr().out


def test_one_line_stays_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[APPLY-11] A command with a newline and an escape sequence is shown escaped; JSON keeps it."""
    image = save(tmp_path, [L([F("/a\nb", 1)])], [("RUN echo \x1b[31mred\nok", False)])
    assert main(["inspect", *STREAM, image]) == 0
    out = capsys.readouterr().out
    assert "RUN echo \\x1b[31mred\\nok" in out and "\x1b" not in out
    assert main(["layers", *STREAM, "--files", image]) == 0
    assert "  A file           1 B  /a\\nb" in capsys.readouterr().out.splitlines()
    _, document = inspect_json(capsys, image)
    assert objects(document, "layers")[0]["created_by"] == "RUN echo \x1b[31mred\nok"


def test_tables_escape_what_messages_escape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[APPLY-8][APPLY-11] U+202E, U+2028, U+2029 and bytes that are not UTF-8 are escaped, as messages escape them.

    A backslash is doubled, so that it is not read as an escape; one entry is "1 entry".
    """
    hostile = "/x\u202etxt.exe\u2028y\u2029z\udcff\\n"
    image = save(tmp_path, [L([F(hostile, 1)])], [("RUN echo \u202ecba\udcfe", False)])
    assert main(["layers", *STREAM, "--files", image]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "layer 0: 1 entry (A added, C changed, D deleted)" in lines
    assert "  A file           1 B  /x\\u202etxt.exe\\u2028y\\u2029z\\udcff\\\\n" in lines
    assert lines[1].endswith("  RUN echo \\u202ecba\\udcfe")
    assert main(["inspect", *STREAM, image]) == 0
    out = capsys.readouterr().out
    assert "RUN echo \\u202ecba\\udcfe" in out
    for text in (lines, [out]):
        assert not any(char in line for line in text for char in "\u202e\u2028\u2029\udcff\udcfe")


def test_thresholds_by_hand() -> None:
    """[APPLY-10] dive's defaults; below fails efficiency, above fails the others, equal passes."""
    _, stats, traces = flatten_traced(WASTEFUL)
    waste = image_waste(stats, traces)
    assert Thresholds() == Thresholds(0.9, None, 0.1)
    assert [each.status for each in judge(waste, Thresholds())] == ["fail", "skip", "fail"]
    assert [each.status for each in judge(waste, Thresholds(440 / 1990, 1550, 1550 / 430))] == ["pass"] * 3
    assert [each.status for each in judge(waste, Thresholds(0.23, 1549, 3.6))] == ["fail"] * 3
    assert parse_size("20MB") == 20_000_000 and parse_size("20MiB") == 20 * 1024**2
    assert parse_size("1.5kB") == 1500 and parse_size("1000") == 1000 and parse_size("disabled") is None
    assert parse_ratio("0.1") == 0.1 and parse_ratio("10%") == pytest.approx(0.1) and parse_ratio("disabled") is None
    with pytest.raises(ValueError):
        parse_size("20XB")


def test_ci_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[APPLY-10] Exit 1 and a FAIL line naming each failed threshold; PASS otherwise."""
    image = save(tmp_path, WASTEFUL, HISTORY)

    def gate(*limits: str) -> tuple[int, list[str]]:
        status = main(["inspect", *STREAM, "--ci", *limits, image])
        lines = capsys.readouterr().out.splitlines()
        return status, [line for line in lines if line.split(" ")[0] in ("PASS", "FAIL", "SKIP", "Result:")]

    off = ["--highest-user-wasted-percent", "disabled"]
    assert gate("--lowest-efficiency", "0.23", *off) == (
        1,
        [
            "FAIL lowest-efficiency: efficiency 0.2211 is below the threshold 0.23",
            "SKIP highest-wasted-bytes: disabled",
            "SKIP highest-user-wasted-percent: disabled",
            "Result: FAIL (1 of 1 thresholds failed, 2 skipped)",
        ],
    )
    assert gate("--lowest-efficiency", "0.22", *off)[0] == 0
    status, lines = gate("--lowest-efficiency", "0", "--highest-wasted-bytes", "1.5kB", *off)
    assert status == 1
    assert "FAIL highest-wasted-bytes: wasted 1.6 kB (1550 bytes) is above the threshold 1.5 kB (1500 bytes)" in lines
    assert gate("--lowest-efficiency", "0", "--highestWastedBytes", "1550", *off)[0] == 0
    status, lines = gate("--lowest-efficiency", "disabled", "--highest-user-wasted-percent", "3.6")
    assert status == 1
    assert lines[2] == (
        "FAIL highest-user-wasted-percent: wasted over the bytes above layer 0 3.6047 is above the threshold 3.6"
    )
    assert gate("--lowest-efficiency", "disabled", "--highestUserWastedPercent", "361%")[0] == 0
    # dive's defaults: efficiency 0.9 and 0.1 of the user bytes both fail here.
    status, lines = gate()
    assert status == 1 and lines[-1] == "Result: FAIL (2 of 2 thresholds failed, 1 skipped)"
    clean = save(tmp_path, [WASTEFUL[0], L([F("/new", 5)])], None, "clean.tar")
    assert main(["inspect", *STREAM, "--ci", clean]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-4:] == [
        "PASS lowest-efficiency: efficiency 1.0000 is not below the threshold 0.9",
        "SKIP highest-wasted-bytes: disabled",
        "PASS highest-user-wasted-percent: wasted over the bytes above layer 0 0.0000 is not above the threshold 0.1",
        "Result: PASS (2 thresholds passed, 1 skipped)",
    ]
    status, document = inspect_json(capsys, "--ci", image)
    assert status == 1
    assert document["gate"] == {
        "passed": False,
        "thresholds": [
            {"name": "lowest-efficiency", "status": "fail", "value": 440 / 1990, "threshold": 0.9},
            {"name": "highest-wasted-bytes", "status": "skip", "value": 1550, "threshold": None},
            {"name": "highest-user-wasted-percent", "status": "fail", "value": 1550 / 430, "threshold": 0.1},
        ],
    }


def test_gate_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[APPLY-10] A threshold without --ci, or one that is not a number: one line, exit 2."""
    image = save(tmp_path, WASTEFUL, HISTORY)
    assert main(["inspect", *STREAM, "--lowest-efficiency", "0.5", image]) == 2
    assert capsys.readouterr().err == "cowspec: the thresholds hold only with --ci\n"
    assert main(["inspect", *STREAM, "--ci", "--highest-wasted-bytes", "20XB", image]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'20XB': expected a size" in err
