"""The conformance vectors: every rule covered, the same bytes each time, tampering found, real systems held to them."""

import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

import cowcheck.cli.vectors_commands as vectors_commands
from cowcheck.cli.main import main as cowspec_main
from cowcheck.cli.vectors_commands import add_commands
from cowcheck.drivers.kernel_overlay import KernelOverlay
from cowcheck.drivers.layer_tools import Spec
from cowcheck.drivers.protocol import Answer, DriverUnavailable
from cowcheck.vectors import (
    CURATED,
    MANIFEST,
    NOT_BY_A_TRACE,
    RULE_VECTORS,
    build_set,
    check_answers,
    check_manifest,
    encode_json,
    load_sources,
    read_set,
    set_version,
    sha256,
    verify_set,
)  # fmt: skip
from cowspec.formats.oracle import model_run
from cowspec.formats.store_trace import run_store_model
from cowspec.formats.trace import Trace, build_layers, decode_trace
from cowspec.fs.build import LayerEntry
from cowspec.fs.calls import Op
from cowspec.fs.features import Features
from cowspec.fs.observe import Entry
from cowspec.fs.operations import allowed
from cowspec.fs.stack import new_container
from cowspec.oci.commit import commit
from cowspec.oci.layer_tar import LayerTar, encode_layer
from cowspec.store.steps import Step
from tests.cowcheck.test_machine import LyingDriver

ROOT = Path(__file__).resolve().parents[2]
RULE = re.compile(r"^### ([A-Z]+-\d+):", re.MULTILINE)
CHAPTERS = [ROOT / "spec" / f"{number:02d}-{name}.md" for number, name in (
    (1, "entries"), (2, "paths"), (3, "stack"), (4, "whiteouts"), (5, "copy-up"),
    (6, "operations"), (7, "sizes"), (8, "features"), (9, "observations"), (10, "trace"),
)]  # fmt: skip


def main(arguments: list[str]) -> int:
    """``cowspec vectors ARGUMENTS``: its exit status."""
    return cowspec_main(["vectors", *arguments])


def export(directory: Path) -> dict[str, bytes]:
    """``cowspec vectors export DIRECTORY``, then every file it wrote."""
    assert main(["export", str(directory)]) == 0
    return read_set(directory)


def fs_names() -> list[str]:
    return [name for name, _ in load_sources().fs]


def model_rules(document: object) -> set[str]:
    """The rules the model records for a trace's ops (none where it does not record them)."""
    trace = decode_trace(document)
    container = new_container(build_layers(trace), trace.features)
    recorded: set[str] = set()
    for op in trace.ops:
        taken = allowed(container, op).transitions[0]
        recorded |= set(getattr(taken, "rules", ()))
        container = taken.container
    return recorded


# -- coverage ---------------------------------------------------------------------


def test_every_rule_of_chapters_1_to_10_has_a_vector() -> None:
    """[TRACE-1][TRACE-2] Each rule has a vector that exercises it, or a reason why no trace can."""
    rules = {rule for chapter in CHAPTERS for rule in RULE.findall(chapter.read_text())}
    assert len(rules) > 60
    assert not set(RULE_VECTORS) & set(NOT_BY_A_TRACE)
    assert set(RULE_VECTORS) | set(NOT_BY_A_TRACE) == rules
    names = set(fs_names())
    for rule, vectors in RULE_VECTORS.items():
        assert vectors and set(vectors) <= names, (rule, set(vectors) - names)
    assert all(reason for reason in NOT_BY_A_TRACE.values())


def test_the_models_record_agrees_with_the_table() -> None:
    """Every rule the model records on the set is in the table, and recorded on one of the table's vectors for it.

    Where the model records no rules (before it states them per step), this
    holds trivially; once it does, the table cannot claim a vector the model
    never takes through its rule.
    """
    by_rule: dict[str, set[str]] = {}
    for name, document in load_sources().fs:
        if not name.startswith("rejected-"):
            for rule in model_rules(document):
                by_rule.setdefault(rule, set()).add(name)
    chapter_rules = {rule for chapter in CHAPTERS for rule in RULE.findall(chapter.read_text())}
    for rule, names in by_rule.items():
        if rule in chapter_rules:
            assert rule in RULE_VECTORS, rule
            assert names & set(RULE_VECTORS[rule]), (rule, RULE_VECTORS[rule], sorted(names))


def test_each_vector_is_answered_or_rejected_as_its_name_says() -> None:
    """[TRACE-1][TRACE-4] ``rejected-*`` traces are rejected; every other one has one result per op."""
    files = build_set(load_sources())
    for name in fs_names():
        trace = json.loads(files[f"fs/{name}.trace.json"])
        result = json.loads(files[f"fs/{name}.result.json"])
        if name.startswith("rejected-"):
            assert set(result) == {"rejected"}, name
        else:
            assert result["format"] == "cowspec-trace-result/1", name
            assert len(result["results"]) == len(trace["ops"]), name
    # Each curated trace is in the set as it was written, re-encoded and nothing else.
    for path in sorted(CURATED.glob("*.json")):
        assert json.loads(files[f"fs/{path.stem}.trace.json"]) == json.loads(path.read_text())


# -- the same bytes, and only inside the directory -------------------------------


def test_export_is_byte_identical_and_its_manifest_holds(tmp_path: Path) -> None:
    first, second = export(tmp_path / "one"), export(tmp_path / "two")
    assert first == second
    assert first == build_set(load_sources())
    manifest, problems = check_manifest(first)
    assert problems == []
    assert set(cast(dict[str, str], manifest["files"])) == set(first) - {MANIFEST}
    assert first["VERSION"].decode().strip() == manifest["version"]
    for level in ("fs", "layer", "store"):
        assert f"{level}/README.md" in first and cast(dict[str, list[str]], manifest["vectors"])[level]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["one", "two"]  # nothing written beside them


def test_the_tarball_is_byte_identical(tmp_path: Path) -> None:
    """``scripts/make-vectors.sh`` twice: the same tarball, every member owned by 0:0 at time 0."""
    built = []
    for out in ("a", "b"):
        done = subprocess.run(
            ["sh", str(ROOT / "scripts" / "make-vectors.sh"), str(tmp_path / out)],
            env={**os.environ, "PYTHON": sys.executable},
            capture_output=True,
            check=True,
        )
        built.append(Path(done.stdout.decode().strip()))
    assert built[0].name == built[1].name and built[0].name.startswith("cowspec-vectors-")
    assert built[0].read_bytes() == built[1].read_bytes()
    with tarfile.open(built[0]) as tar:
        members = tar.getmembers()
    top = built[0].name.removesuffix(".tar.gz")
    assert {(each.mtime, each.uid, each.gid) for each in members} == {(0, 0, 0)}
    assert f"{top}/{MANIFEST}" in {each.name for each in members}


def test_export_refuses_a_directory_that_is_not_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "kept").write_text("mine")
    assert main(["export", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("cowspec: ") and "not empty" in error
    assert [path.name for path in tmp_path.iterdir()] == ["kept"]
    assert main(["export", str(tmp_path / "kept")]) == 2
    assert "not a directory" in capsys.readouterr().err


# -- tampering --------------------------------------------------------------------


@pytest.mark.parametrize(
    "tamper, said",
    [
        (lambda root: (root / "fs" / "sizes.result.json").write_bytes(b"{}\n"), "sizes.result.json: its sha256"),
        (lambda root: (root / "store" / "extra.trace.json").write_text("{}"), "extra.trace.json: not in the manifest"),
        (lambda root: (root / "layer" / "bare-whiteout.rootfs.json").unlink(), "bare-whiteout.rootfs.json: missing"),
        (lambda root: (root / MANIFEST).write_text("[]"), "MANIFEST.json: not a cowspec-vectors/1 manifest"),
    ],
    ids=["changed", "added", "removed", "manifest"],
)
def test_tampering_is_found_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper: Callable[[Path], object], said: str
) -> None:
    export(tmp_path / "set")
    capsys.readouterr()
    tamper(tmp_path / "set")
    assert main(["verify", "--driver", "no-such-driver", str(tmp_path / "set")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    digest, refusal = captured.err.splitlines()  # the manifest's digest, then one line: nothing ran
    assert digest.endswith("MANIFEST.json is " + sha256((tmp_path / "set" / MANIFEST).read_bytes()))
    assert "not intact" in refusal and said in refusal


def rewrite(root: Path, path: str, document: object) -> None:
    """Write ``document`` as the set's ``path`` and give it its digest in the manifest, as a forger would."""
    data = encode_json(document)
    (root / path).write_bytes(data)
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["files"][path] = sha256(data)
    (root / MANIFEST).write_bytes(encode_json(manifest))


@pytest.mark.parametrize(
    ("path", "vector"),
    [
        ("fs/rename-image-directory-is-exdev.result.json", "fs/rename-image-directory-is-exdev"),
        ("layer/hardlinks-in-one-layer.rootfs.json", "layer/hardlinks-in-one-layer"),
        ("store/init-layer.result.json", "store/init-layer"),
    ],
)
def test_a_forged_answer_with_its_digest_fixed_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str, vector: str
) -> None:
    """An expected answer changed along with its digest passes the manifest, but not the model: exit 2, naming it."""
    files = export(tmp_path / "set")
    document = json.loads(files[path])
    if isinstance(document, dict) and isinstance(document.get("results"), list):
        refused = document["results"].index({"errno": "EXDEV"})
        document["results"][refused] = {"ok": True}  # the rename that must fail with EXDEV, said to succeed
    elif isinstance(document, list):
        document = [{**entry, "nlink": 1} for entry in document]
    else:
        document["images_total"] = cast(int, document["images_total"]) + 1
    rewrite(tmp_path / "set", path, document)
    forged = read_set(tmp_path / "set")
    assert check_manifest(forged)[1] == []  # the digests alone cannot tell
    capsys.readouterr()
    assert main(["verify", "--driver", "no-such-driver", str(tmp_path / "set")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    digest, refusal = captured.err.splitlines()
    assert digest.endswith(sha256(forged[MANIFEST])) and digest != sha256(files[MANIFEST])
    assert f"the set's answer for {vector} is not the model's" in refusal


def test_a_set_of_another_version_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A set made by another cowspec is refused before anything runs, even with every digest fixed."""
    export(tmp_path / "set")
    (tmp_path / "set" / "VERSION").write_text("0.0.1\n")
    manifest = json.loads((tmp_path / "set" / MANIFEST).read_text())
    manifest["version"] = "0.0.1"
    manifest["files"]["VERSION"] = sha256(b"0.0.1\n")
    (tmp_path / "set" / MANIFEST).write_bytes(encode_json(manifest))
    capsys.readouterr()
    assert main(["verify", "--driver", "no-such-driver", str(tmp_path / "set")]) == 2
    refusal = capsys.readouterr().err.splitlines()[-1]
    assert f"the set is version 0.0.1 (VERSION 0.0.1), this cowspec is {set_version()}" in refusal


# -- the filesystem level: the kernel, and a planted bug --------------------------


@pytest.mark.kernel
def test_every_filesystem_vector_agrees_with_the_kernel(
    kernel: KernelOverlay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """[OBSERVE-1] The whole set on Linux overlayfs: every result, tree and size as the set says."""
    export(tmp_path / "set")
    capsys.readouterr()
    assert main(["verify", "--driver", "kernel-overlay", str(tmp_path / "set")]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["vector"] for line in lines] == [f"fs/{name}" for name in fs_names()]
    assert all(line["agrees"] and line["differences"] == [] for line in lines)
    assert f"{len(lines)} agree, 0 diverge" in captured.err


@pytest.mark.kernel
def test_a_planted_bug_fails_the_vectors(
    kernel: KernelOverlay, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """[WHITEOUT-2] A driver that hides whiteouts diverges on the vectors that leave one, and verify exits 1."""
    files = export(tmp_path / "set")
    manifest, _ = check_manifest(files)
    lines = list(verify_set(files, manifest, {"filesystem": lambda: LyingDriver(kernel)}))
    diverged = {line["vector"] for line in lines if not line["agrees"]}
    assert "fs/whiteout-when-removing-leaves-one" in diverged and "fs/found-planted-hidden-whiteout" in diverged
    assert "fs/stat-does-not-follow" not in diverged  # nothing removed, nothing hidden
    # The command line, with the driver put in through its seam.
    monkeypatch.setattr(vectors_commands, "_resolve", lambda name: {"filesystem": lambda: LyingDriver(kernel)})
    monkeypatch.setattr(vectors_commands, "_features", lambda name: kernel.features)
    capsys.readouterr()
    assert main(["verify", "--driver", "hiding", "--only", "fs/whiteout-*", str(tmp_path / "set")]) == 1
    captured = capsys.readouterr()
    shown = [json.loads(line) for line in captured.out.splitlines()]
    assert {line["vector"] for line in shown} == {
        "fs/whiteout-hides-the-name",
        "fs/whiteout-mkdir-over-one-is-opaque",
        "fs/whiteout-replaced-by-a-new-name",
        "fs/whiteout-when-removing-leaves-one",
    }
    # The differences are ``cowspec check``'s: structured, each naming the rule it breaks.
    (hidden,) = [line for line in shown if line["vector"] == "fs/whiteout-when-removing-leaves-one"]
    assert hidden["differences"] and all(
        set(each) >= {"field", "path", "expected", "actual", "rule"} for each in hidden["differences"]
    )
    assert {"field": "upper", "rule": "WHITEOUT-2"}.items() <= hidden["differences"][0].items()
    assert "diverge" in captured.err and captured.err.count("\n") == 2  # the manifest's digest, the summary


class NoRedirectKernel(KernelOverlay):
    """The kernel overlay driver declaring no optional feature, as a driver of Docker's configuration alone would."""

    features: frozenset[str] = frozenset()


@pytest.mark.kernel
def test_a_driver_without_optional_features_skips_those_vectors_and_passes_the_rest(
    kernel: KernelOverlay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """[FEATURE-1] The traces that turn a feature on are skipped, each said so with the features it needs; every
    other one runs and agrees."""
    files = export(tmp_path / "set")
    needing: dict[str, list[str]] = {}
    for name in fs_names():
        wanted = json.loads(files[f"fs/{name}.trace.json"]).get("features", {})
        on = sorted(feature for feature, value in wanted.items() if value is True)
        if on and "rejected" not in name:
            needing[f"fs/{name}"] = on
    capsys.readouterr()
    assert main(["verify", "--driver", f"{__name__}:NoRedirectKernel", str(tmp_path / "set")]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    skipped = {line["vector"]: line["skipped"] for line in lines if "skipped" in line}
    assert set(skipped) == set(needing) and 8 <= len(needing) < len(lines) // 4
    for vector, features in needing.items():
        noun = "feature" if len(features) == 1 else "features"
        assert skipped[vector] == f"needs the overlay {noun} {', '.join(features)}, which the driver does not declare"
    assert any("index" in features for features in needing.values())
    assert any("metacopy" in features for features in needing.values())
    ran = [line for line in lines if "skipped" not in line]
    assert len(ran) == len(fs_names()) - len(needing) and all(line["agrees"] for line in ran)
    assert f"{len(ran)} agree, 0 diverge, {len(needing)} skipped" in captured.err


class RaisingDriver:
    """A filesystem driver with a bug of its own: opening a container raises."""

    name = "raising"
    features: tuple[str, ...] = ()

    def open(self, layers: object, features: object) -> object:
        raise TypeError("unsupported operand type(s)\nfor +: 'int' and 'str'")


def test_a_driver_that_raises_is_one_line_and_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Whatever a driver raises on a vector is one line naming the vector and what it raised: no traceback."""
    export(tmp_path / "set")
    capsys.readouterr()
    arguments = ["verify", "--driver", f"{__name__}:RaisingDriver", "--only", "fs/read-*", str(tmp_path / "set")]
    assert main(arguments) == 3
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    refusal = captured.err.splitlines()[-1]
    assert refusal == (
        "cowspec: the driver failed on fs/read-whole-content: TypeError: unsupported operand type(s)"
        " for +: 'int' and 'str'"
    )


# -- the layer level --------------------------------------------------------------


class OneLinkEach:
    """The reference flatten, except that every file reports one link: hardlinks are lost."""

    name = "one-link-each"

    def flatten(self, archives: list[bytes]) -> Answer:
        answer = Spec().flatten(archives)
        if isinstance(answer, list):
            return [{**entry, "nlink": 1} if entry["type"] == "file" else entry for entry in answer]
        return answer


def test_layer_vectors_hold_the_reference_and_catch_a_planted_bug(tmp_path: Path) -> None:
    files = export(tmp_path / "set")
    manifest, _ = check_manifest(files)
    lines = list(verify_set(files, manifest, {"layer": Spec}))
    assert len(lines) == len(cast(dict[str, list[str]], manifest["vectors"])["layer"]) > 10
    assert all(line["agrees"] for line in lines)
    planted = list(verify_set(files, manifest, {"layer": OneLinkEach}))
    (diverged,) = [line for line in planted if not line["agrees"]]
    assert diverged["vector"] == "layer/hardlinks-in-one-layer"
    # Each link count as a structured difference, with the rule the case is about (its about names APPLY-3).
    assert diverged["differences"] == [
        {"field": "rootfs", "path": path, "attribute": "nlink", "expected": 2, "actual": 1, "rule": "APPLY-3"}
        for path in ("/a", "/b")
    ]


def test_layer_vectors_are_images_cowspec_flattens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each case's directory is an OCI image layout: ``cowspec flatten`` gives its ``rootfs.json``."""
    export(tmp_path / "set")
    for name in ("hardlinks-in-one-layer", "opaque-marker-last", "implied-parent-attributes"):
        capsys.readouterr()
        assert cowspec_main(["flatten", str(tmp_path / "set" / "layer" / name)]) == 0
        flattened = json.loads(capsys.readouterr().out)
        assert flattened == json.loads((tmp_path / "set" / "layer" / f"{name}.rootfs.json").read_text())


# -- the store level --------------------------------------------------------------


class ModelStore:
    """The model as a store driver; ``lie`` adds a byte to each container's SIZE."""

    name = "model"

    def __init__(self, lie: bool = False) -> None:
        self.lie = lie

    def run(self, steps: tuple[Step, ...]) -> Entry:
        result = run_store_model(steps)
        if self.lie:
            containers = cast(dict[str, dict[str, int]], result.get("containers", {}))
            result["containers"] = {name: {**sizes, "size": sizes["size"] + 1} for name, sizes in containers.items()}
        return result


def test_store_vectors_hold_the_model_and_catch_a_planted_bug(tmp_path: Path) -> None:
    files = export(tmp_path / "set")
    manifest, _ = check_manifest(files)
    lines = list(verify_set(files, manifest, {"store": ModelStore}))
    assert len(lines) > 5 and all(line["agrees"] for line in lines)
    planted = list(verify_set(files, manifest, {"store": lambda: ModelStore(lie=True)}))
    with_containers = [
        line["vector"] for line in lines if json.loads(files[f"{line['vector']}.result.json"])["containers"]
    ]
    assert with_containers and [line["vector"] for line in planted if not line["agrees"]] == with_containers
    rules = {each["rule"] for line in planted for each in cast(list[dict[str, object]], line["differences"])}
    fields = {each["field"] for line in planted for each in cast(list[dict[str, object]], line["differences"])}
    assert "containers" in fields and rules and all(re.fullmatch(r"STORE-\d+", str(rule)) for rule in rules)


def test_store_vectors_run_on_docker(tmp_path: Path) -> None:
    """[STORE-13] A store vector on a real engine, as ``verify --driver docker`` runs it."""
    from cowcheck.drivers.docker_store import DockerStore

    files = export(tmp_path / "set")
    manifest, _ = check_manifest(files)
    try:
        lines = list(verify_set(files, manifest, {"store": DockerStore}, ["store/init-layer", "store/copy-over"]))
    except DriverUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(str(error))
        pytest.skip(str(error))
    assert [line["vector"] for line in lines] == ["store/copy-over", "store/init-layer"]
    assert all(line["agrees"] for line in lines), lines


# -- the command line -------------------------------------------------------------


def test_every_option_has_help() -> None:
    import argparse

    top = argparse.ArgumentParser(prog="cowspec")
    add_commands(top.add_subparsers(dest="command"))
    commands = next(action for action in top._actions if isinstance(action, argparse._SubParsersAction))
    vectors = commands.choices["vectors"]
    actions = next(action for action in vectors._actions if isinstance(action, argparse._SubParsersAction))
    assert set(actions.choices) == {"export", "verify"}
    for name, sub in actions.choices.items():
        for action in sub._actions:
            assert action.help, (name, action.dest)


def test_an_unknown_driver_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export(tmp_path / "set")
    capsys.readouterr()
    assert main(["verify", "--driver", "no-such-driver", str(tmp_path / "set")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 2 and "no-such-driver" in error.splitlines()[1]  # after the manifest's digest
    assert main(["verify", "--driver", "kernel-overlay", str(tmp_path / "absent")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_a_rejected_vector_that_cowspec_accepts_is_refused(tmp_path: Path) -> None:
    """A set whose ``rejected-*`` trace cowspec would run is not this cowspec's answer: it is named, nothing runs."""
    files = build_set(load_sources())
    files["fs/rejected-unknown-op.trace.json"] = b'{"format": "cowspec-trace/1", "layers": [[]], "ops": []}'
    manifest, _ = check_manifest(files)
    assert check_answers(files, manifest) == [
        "the set's answer for fs/rejected-unknown-op is not the model's: the set was made by another cowspec or changed"
    ]
    assert check_answers(build_set(load_sources()), manifest) == []


def test_a_trace_needing_an_unsupported_feature_is_skipped() -> None:
    """[FEATURE-1] Told the driver supports no optional feature, verify skips the redirect_dir traces, and only them."""
    files = build_set(load_sources())
    manifest, _ = check_manifest(files)

    class Unused:
        name = "unused"

        def open(self, layers: object, features: object) -> object:
            raise AssertionError("only skipped vectors were asked for")

    needing = [
        name
        for name in fs_names()
        if json.loads(files[f"fs/{name}.trace.json"]).get("features", {}).get("redirect_dir") is True
    ]
    lines = list(verify_set(files, manifest, {"filesystem": Unused}, [f"fs/{name}" for name in needing], frozenset()))
    assert len(needing) >= 4 and [line["vector"] for line in lines] == [f"fs/{name}" for name in needing]
    for line in lines:
        features = sorted(
            feature
            for feature, on in json.loads(files[f"{line['vector']}.trace.json"])["features"].items()
            if on is True
        )
        noun = "feature" if len(features) == 1 else "features"
        assert "redirect_dir" in features
        assert line["skipped"] == f"needs the overlay {noun} {', '.join(features)}, which the driver does not declare"
    # A trace the spec rejects is never run, so it needs no feature: it is refused, not skipped.
    rejected = list(verify_set(files, manifest, {"filesystem": Unused}, ["fs/rejected-feature-*"], frozenset()))
    assert len(rejected) == 2 and all(line["agrees"] for line in rejected)


# -- commits at the layer level ---------------------------------------------------


class ModelCommitter:
    """The model's commit as a layer driver that commits and does not flatten; ``drop_opaque`` plants a bug."""

    name = "model-commit"
    flattens = False

    def __init__(self, drop_opaque: bool = False) -> None:
        self.drop_opaque = drop_opaque
        self.committed = 0

    def commit(self, layers: tuple[tuple[LayerEntry, ...], ...], features: Features, ops: tuple[Op, ...]) -> bytes:
        self.committed += 1
        layer = commit(model_run(Trace(features, layers, ops)).container)
        if self.drop_opaque:
            layer = LayerTar(layer.entries, layer.whiteouts, frozenset())
        return encode_layer(layer)

    def flatten(self, archives: list[bytes]) -> Answer:
        raise AssertionError("a driver that does not flatten is not asked to")


def test_a_layer_driver_that_commits_runs_the_filesystem_vectors_as_commits() -> None:
    """[COMMIT-1] Each accepted fs vector is committed and compared; no layer vector runs; a lost marker is found."""
    files = build_set(load_sources())
    manifest, _ = check_manifest(files)
    accepted = [name for name in fs_names() if not name.startswith("rejected-")]
    driver = ModelCommitter()
    lines = list(verify_set(files, manifest, {"layer": lambda: driver}))
    assert [line["vector"] for line in lines] == [f"fs/{name}" for name in accepted]
    assert driver.committed == len(accepted) > 50
    assert all(line["commit"] is True and line["agrees"] for line in lines)
    planted = list(verify_set(files, manifest, {"layer": lambda: ModelCommitter(drop_opaque=True)}))
    diverging = [line for line in planted if not line["agrees"]]
    assert diverging and len(diverging) < len(planted)
    for line in diverging:
        differences = cast(list[dict[str, object]], line["differences"])
        assert differences and all(each["rule"] == "COMMIT-1" and "opaque" in json.dumps(each) for each in differences)
