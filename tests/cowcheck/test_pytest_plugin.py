"""The pytest plugin: ``pytest --cowspec-driver NAME`` in an implementer's repository.

Each test makes a small repository of an implementer's (a test of its own,
a driver module) in pytester's temporary directory and runs pytest there in
a fresh process, as the implementer would: the plugin comes in by its
``pytest11`` entry point. Two planted-bug drivers are used: one over the
model itself (it runs anywhere), one over the kernel's overlayfs, like
``test_machine.py``'s liar; both hide the whiteouts of the writable layer.
"""

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from cowcheck import vectors
from cowcheck.drivers.kernel_overlay import KernelOverlay

pytest_plugins = ["pytester"]

OWN_TEST = "def test_own():\n    assert 1 + 1 == 2\n"

MODEL_DRIVERS = '''
"""Drivers over the model: ``Honest`` answers as the model does, ``HidesWhiteouts`` hides them in the upper layer;
two layer tools, one that agrees and one that does not."""

from cowcheck.vectors import layer_answer
from cowspec.formats.trace import encode_outcome
from cowspec.fs.build import build_layer
from cowspec.fs.observe import layer_tree, merged_tree
from cowspec.fs.operations import step
from cowspec.fs.sizes import container_sizes
from cowspec.fs.stack import new_container


class Session:
    def __init__(self, layers, features, hide):
        lowers = tuple(build_layer(entries, f"layer {index}") for index, entries in enumerate(layers))
        self.container = new_container(lowers, features)
        self.hide = hide

    def perform(self, op):
        transition = step(self.container, op)
        self.container = transition.container
        return encode_outcome(transition.outcome)

    def merged(self):
        return merged_tree(self.container)

    def upper(self):
        tree = layer_tree(self.container.upper)
        return [entry for entry in tree if entry["type"] != "whiteout"] if self.hide else tree

    def sizes(self):
        sizes = container_sizes(self.container)
        return {"size": sizes.size, "virtual_size": sizes.virtual_size}

    def close(self):
        pass


class Honest:
    name = "honest"

    def open(self, layers, features):
        return Session(layers, features, hide=False)


class HidesWhiteouts:
    name = "hides-whiteouts"

    def open(self, layers, features):
        return Session(layers, features, hide=True)


class Unpacker:
    """A layer tool that flattens as the spec does."""

    name = "unpacker"

    def flatten(self, archives):
        return layer_answer(archives)


class LosesTheLastEntry:
    """A layer tool that drops the last path of every root filesystem it accepts."""

    name = "loses-the-last-entry"

    def flatten(self, archives):
        answer = layer_answer(archives)
        return answer[:-1] if isinstance(answer, list) else answer
'''

KERNEL_BUG = '''
"""The kernel's overlayfs, but the writable layer is reported without its whiteouts."""

from cowcheck import vectors
from cowcheck.drivers.kernel_overlay import KernelOverlay


class Session:
    def __init__(self, real):
        self.real = real

    def perform(self, op):
        return self.real.perform(op)

    def merged(self):
        return self.real.merged()

    def upper(self):
        return [entry for entry in self.real.upper() if entry["type"] != "whiteout"]

    def sizes(self):
        return self.real.sizes()

    def close(self):
        self.real.close()


class Driver:
    name = "mybug"

    def __init__(self):
        self.kernel = KernelOverlay()

    def open(self, layers, features):
        return Session(self.kernel.open(layers, features))
'''

UNAVAILABLE = """
from cowcheck.drivers.protocol import DriverUnavailable


class Driver:
    name = "nowhere"

    def open(self, layers, features):
        raise DriverUnavailable("this machine has no such filesystem")
"""

EXPLODING = '''
"""A driver over the model with a bug of its own: its sessions' third op raises ``TypeError``."""

from modeldrivers import Session


class ExplodingSession(Session):
    performed = 0

    def perform(self, op):
        self.performed += 1
        if self.performed == 3:
            raise TypeError("unsupported operand")
        return super().perform(op)


class Exploding:
    name = "exploding"

    def open(self, layers, features):
        return ExplodingSession(layers, features, hide=False)
'''

SMALL = ("--cowspec-profile", "dev", "--cowspec-examples", "10", "--cowspec-steps", "10")
"""A small budget for the machine: a bug that hides whiteouts shows within a few examples."""


@pytest.fixture
def repository(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """An implementer's repository: a test of its own and the driver modules; not in CI unless a test says so."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile(test_own=OWN_TEST)
    pytester.makepyfile(modeldrivers=MODEL_DRIVERS, kernelbug=KERNEL_BUG, nowhere=UNAVAILABLE, exploding=EXPLODING)
    return pytester


def outcomes(result: pytest.RunResult) -> dict[str, int]:
    """The counts of the summary line; an absent kind counts 0."""
    return {kind: count for kind, count in result.parseoutcomes().items() if count}


def replay(pytester: pytest.Pytester, driver: str, path: str) -> subprocess.CompletedProcess[str]:
    """``cowspec check --driver DRIVER PATH`` run in the repository, as the failure message says to."""
    return subprocess.run(
        [sys.executable, "-m", "cowcheck.cli", "check", "--driver", driver, path],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        check=False,
    )


def saved_path(result: pytest.RunResult, what: str) -> str:
    """The path the failure message says ``what`` was saved to."""
    for line in result.stdout.lines:
        if what in line and " saved to " in line:
            return line.rsplit(" saved to ", 1)[1].strip()
    raise AssertionError(f"no line says where {what} was saved:\n{result.stdout.str()}")


# -- without a driver -------------------------------------------------------------


def test_the_plugin_is_installed_by_its_entry_point() -> None:
    points = {point.name: point.value for point in entry_points(group="pytest11")}
    assert points.get("cowspec") == "cowcheck.pytest_plugin"


def test_without_a_driver_the_plugin_adds_nothing(repository: pytest.Pytester) -> None:
    result = repository.runpytest_subprocess("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    assert "test_own.py::test_own" in result.stdout.str()
    assert "cowspec" not in result.stdout.str()
    # The plugin is loaded all the same: its options are known, and its marker selects nothing.
    assert repository.runpytest_subprocess("-m", "cowspec").ret == pytest.ExitCode.NO_TESTS_COLLECTED
    helped = repository.runpytest_subprocess("--help")
    for option in ("--cowspec-driver", "--cowspec-profile", "--cowspec-save", "--cowspec-features"):
        assert option in helped.stdout.str()


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (("--cowspec-driver", "no-such-driver"), "cowspec: unknown driver 'no-such-driver'"),
        (("--cowspec-driver", "nomodule:Driver"), "cowspec: driver nomodule:Driver: cannot import nomodule"),
        (("--cowspec-driver", "modeldrivers:Honest", "--cowspec-profile", "huge"), "--cowspec-profile 'huge'"),
        (("--cowspec-driver", "modeldrivers:Honest", "--cowspec-examples", "0"), "must be at least 1"),
        (("--cowspec-driver", "modeldrivers:Honest", "--cowspec-features", "nosuch"), "unknown feature 'nosuch'"),
        (
            ("--cowspec-driver", "modeldrivers:Honest", "--cowspec-features", "redirect_dir"),
            "does not declare the feature redirect_dir",
        ),
        (("--cowspec-driver", "modeldrivers:Honest", "--cowspec-vectors", "nowhere"), "--cowspec-vectors"),
    ],
    ids=["unknown-name", "no-module", "profile", "examples", "feature", "undeclared-feature", "vector-set"],
)
def test_a_wrong_option_is_a_usage_error(repository: pytest.Pytester, options: tuple[str, ...], said: str) -> None:
    result = repository.runpytest_subprocess(*options)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert said in result.stderr.str()
    assert "Traceback" not in result.stderr.str()


def test_a_driver_that_fails_its_handshake_is_said_once(repository: pytest.Pytester) -> None:
    """A program that exits at once: one usage error that says the driver failed once, not twice."""
    result = repository.runpytest_subprocess("--cowspec-driver", "exec:/bin/true")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    said = result.stderr.str()
    assert said.count("driver exec:/bin/true failed:") == 1, said
    assert "Traceback" not in said


# -- drivers over the model (anywhere) ----------------------------------------------


def test_a_driver_that_raises_in_the_machine_fails_in_one_line(repository: pytest.Pytester) -> None:
    """A Python driver raising during the generated checks: the machine's test fails saying the driver, the
    call and the error once, with none of Hypothesis's words for what it made of it while shrinking."""
    result = repository.runpytest_subprocess("--cowspec-driver", "exploding:Exploding", *SMALL, "-k", "machine")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert outcomes(result)["failed"] == 1
    printed = result.stdout.str()
    assert "cowspec: driver exploding failed: TypeError: unsupported operand (on perform)" in printed, printed
    for jargon in ("ExceptionGroup", "Flaky", "Traceback", "state machine stopped"):
        assert jargon not in printed, printed


def test_the_tests_it_adds_are_named_marked_and_selectable(repository: pytest.Pytester) -> None:
    listed = repository.runpytest_subprocess("--cowspec-driver", "modeldrivers:Honest", "--collect-only", "-q")
    names = [line for line in listed.stdout.lines if line.startswith("cowspec::")]
    assert "cowspec::machine::filesystem" in names
    assert "cowspec::vector::whiteout-when-removing-leaves-one" in names
    assert "cowspec::vector::found-planted-hidden-whiteout" in names
    assert not any(name.startswith("cowspec::vector::rejected-") for name in names)  # the spec rejects those
    assert "test_own.py::test_own" in listed.stdout.str()
    assert f"{len(names) + 1} tests collected" in listed.stdout.str()
    # A filesystem driver is given the filesystem vectors only: no layer or store vector.
    assert "cowspec::vector::build" not in names
    for selection in (("-m", "cowspec"), ("-k", "cowspec")):
        chosen = repository.runpytest_subprocess(
            "--cowspec-driver", "modeldrivers:Honest", "--collect-only", "-q", *selection
        )
        assert f"{len(names)}/{len(names) + 1} tests collected (1 deselected)" in chosen.stdout.str()
    only = repository.runpytest_subprocess(
        "--cowspec-driver", "modeldrivers:Honest", "--collect-only", "-q", "-m", "not cowspec"
    )
    assert "test_own.py::test_own" in only.stdout.str() and "cowspec::" not in only.stdout.str()


def test_a_driver_that_agrees_passes(repository: pytest.Pytester) -> None:
    result = repository.runpytest_subprocess("--cowspec-driver", "modeldrivers:Honest", *SMALL, "-v", "-rs")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["cowspec::vector::sizes PASSED*", "cowspec::machine::filesystem PASSED*"])
    counts = outcomes(result)
    assert "failed" not in counts and counts["passed"] > 50
    # The vectors that need redirect_dir are skipped, saying why: this driver does not declare the feature.
    assert counts["skipped"] >= 1
    assert "the vector needs redirect_dir, which the driver does not declare" in result.stdout.str()


def test_a_planted_bug_fails_the_machine_with_a_trace_that_replays(repository: pytest.Pytester) -> None:
    result = repository.runpytest_subprocess("--cowspec-driver", "modeldrivers:HidesWhiteouts", *SMALL, "-k", "machine")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    counts = outcomes(result)
    assert counts["failed"] == 1 and "passed" not in counts
    text = result.stdout.str()
    assert "cowspec: the filesystem state machine found a divergence from the model that breaks WHITEOUT-2" in text
    # The minimal trace's difference, naming the rule it breaks.
    assert "  upper /" in text and '"type": "whiteout"}, actual null [WHITEOUT-2]' in text
    assert "Traceback" not in text and "During handling" not in text
    path = saved_path(result, "minimal trace")
    assert Path(path) == repository.path / "cowspec-divergences" / "machine-filesystem.json"
    assert f"replay: cowspec check --driver modeldrivers:HidesWhiteouts {path}" in text
    # The saved trace is a trace cowspec reads; it diverges on the liar and agrees with the honest driver.
    caught = replay(repository, "modeldrivers:HidesWhiteouts", path)
    assert caught.returncode == 1, caught.stderr
    assert "diverges: upper /" in caught.stderr
    assert replay(repository, "modeldrivers:Honest", path).returncode == 0


def test_a_failing_vector_lists_its_differences_and_its_trace(repository: pytest.Pytester) -> None:
    save = repository.path / "elsewhere"
    result = repository.runpytest_subprocess(
        "--cowspec-driver",
        "modeldrivers:HidesWhiteouts",
        "--cowspec-save",
        str(save),
        "-k",
        "whiteout-when-removing-leaves-one or found-planted-hidden-whiteout",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert outcomes(result)["failed"] == 2
    text = result.stdout.str()
    assert "cowspec: the driver diverges from the model on the vector whiteout-when-removing-leaves-one:" in text
    # One line per difference, each a path of the writable layer whose whiteout the driver hid, and its rule.
    differences = [line for line in result.stdout.lines if line.startswith("  upper /")]
    assert len(differences) >= 3 and all(line.endswith("actual null [WHITEOUT-2]") for line in differences)
    trace = save / "vector-whiteout-when-removing-leaves-one.json"
    assert f"the filesystem trace: {trace}" in text
    assert replay(repository, "modeldrivers:HidesWhiteouts", str(trace)).returncode == 1
    assert replay(repository, "modeldrivers:Honest", str(trace)).returncode == 0


def test_portable_conformance_relaxes_what_the_spec_lets_vary(repository: pytest.Pytester) -> None:
    """[CONFORM-2] The writable layer's form may vary under portable: a driver that hides its whiteouts passes
    the vector and the state machine there, and fails both under kernel, the machine naming the rule."""
    selection = ("-k", "whiteout-when-removing-leaves-one or machine", "-rs")
    options = ("--cowspec-driver", "modeldrivers:HidesWhiteouts", *SMALL, *selection)
    portable = repository.runpytest_subprocess(*options, "--cowspec-conformance", "portable")
    assert portable.ret == pytest.ExitCode.OK, portable.stdout.str()
    assert outcomes(portable) == {"passed": 2, "deselected": outcomes(portable)["deselected"]}
    kernel = repository.runpytest_subprocess(*options, "--cowspec-conformance", "kernel")
    assert kernel.ret == pytest.ExitCode.TESTS_FAILED
    assert outcomes(kernel)["failed"] == 2
    assert "divergence from the model that breaks WHITEOUT-2 (conformance kernel" in kernel.stdout.str()


def test_an_exported_set_is_run_from_its_directory(repository: pytest.Pytester) -> None:
    """``--cowspec-vectors DIR`` runs a set ``cowspec vectors export`` wrote; a failing vector names the set's
    own trace file, and a set whose files do not match its manifest is refused before any test runs."""
    exported = repository.path / "vector-set"
    vectors.write_set(exported, vectors.build_set(vectors.load_sources()))
    options = ("--cowspec-driver", "modeldrivers:HidesWhiteouts", "--cowspec-vectors", str(exported))
    result = repository.runpytest_subprocess(*options, "-k", "found-planted-hidden-whiteout")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert outcomes(result)["failed"] == 1
    trace = exported / "fs" / "found-planted-hidden-whiteout.trace.json"
    assert f"the filesystem trace: {trace}" in result.stdout.str()
    assert f"the set in {exported}" in result.stdout.str()
    assert not (repository.path / "cowspec-divergences").exists()  # nothing copied: the set's file is named
    trace.write_text(trace.read_text().replace('"/a"', '"/b"'))
    tampered = repository.runpytest_subprocess(*options)
    assert tampered.ret == pytest.ExitCode.USAGE_ERROR
    assert "fs/found-planted-hidden-whiteout.trace.json: its sha256 does not match the manifest" in (
        tampered.stderr.str()
    )


def test_without_a_vector_set_the_vectors_skip_saying_how_to_get_one(repository: pytest.Pytester) -> None:
    """Where cowspec is installed without the vectors' sources (no source checkout), the vectors skip with the
    reason and the way out; the machine still runs."""
    repository.makeconftest(
        """
        import cowcheck.vectors
        from cowspec.errors import SpecError


        def no_sources(*arguments):
            raise SpecError("vector sources not found")


        cowcheck.vectors.load_sources = no_sources
        """
    )
    result = repository.runpytest_subprocess("--cowspec-driver", "modeldrivers:Honest", *SMALL, "-m", "cowspec", "-rs")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert outcomes(result) == {"passed": 1, "skipped": 1, "deselected": 1}
    assert "no vector set: vector sources not found; export a set with `cowspec vectors export DIR`" in (
        result.stdout.str()
    )


def test_a_layer_tool_is_given_the_layer_vectors(repository: pytest.Pytester) -> None:
    agrees = repository.runpytest_subprocess("--cowspec-driver", "modeldrivers:Unpacker", "-m", "cowspec", "-v")
    assert agrees.ret == pytest.ExitCode.OK, agrees.stdout.str()
    counts = outcomes(agrees)
    assert counts["passed"] >= 10 and "skipped" not in counts
    assert "machine" not in agrees.stdout.str()  # the state machine is the filesystem level's
    loses = repository.runpytest_subprocess("--cowspec-driver", "modeldrivers:LosesTheLastEntry", "-m", "cowspec")
    assert loses.ret == pytest.ExitCode.TESTS_FAILED
    text = loses.stdout.str()
    assert "model has" in text and "real system has nothing" in text and "rootfs /" in text
    images = [line.split(": ", 1)[1] for line in loses.stdout.lines if "the image (an OCI layout): " in line]
    assert images and all((Path(image) / "index.json").is_file() for image in images)
    # Every case the spec accepts fails; those it refuses pass (a refusal has no entry to lose).
    files = vectors.build_set(vectors.load_sources())
    answers = [json.loads(data) for path, data in files.items() if path.startswith("layer/") and ".rootfs." in path]
    accepted = sum(1 for answer in answers if isinstance(answer, list) and answer)
    assert 0 < accepted < len(answers) == counts["passed"]
    assert outcomes(loses)["failed"] == accepted and outcomes(loses)["passed"] == len(answers) - accepted


def test_a_driver_that_cannot_run_skips_and_fails_in_ci(
    repository: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = ("--cowspec-driver", "nowhere:Driver", *SMALL, "-k", "machine or sizes", "-rs")
    skipped = repository.runpytest_subprocess(*options)
    assert skipped.ret == pytest.ExitCode.OK
    assert outcomes(skipped)["skipped"] >= 2 and "passed" not in outcomes(skipped)
    assert "the driver cannot run here: this machine has no such filesystem" in skipped.stdout.str()
    monkeypatch.setenv("CI", "true")
    failed = repository.runpytest_subprocess(*options)
    assert failed.ret == pytest.ExitCode.TESTS_FAILED
    assert outcomes(failed)["failed"] >= 2 and "skipped" not in outcomes(failed)
    assert "CI=true requires it to: this machine has no such filesystem" in failed.stdout.str()


# -- the kernel's overlayfs ---------------------------------------------------------


@pytest.mark.kernel
def test_the_kernel_passes_every_test(kernel: KernelOverlay, repository: pytest.Pytester) -> None:
    """[OBSERVE-1] The real kernel driver, by its installed name: every vector and the machine pass."""
    result = repository.runpytest_subprocess("--cowspec-driver", "kernel-overlay", *SMALL, "-v")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["cowspec::machine::filesystem PASSED*"])
    assert outcomes(result)["passed"] > 50
    assert not (repository.path / "cowspec-divergences").exists()


@pytest.mark.kernel
def test_a_planted_bug_in_a_kernel_driver_is_caught(kernel: KernelOverlay, repository: pytest.Pytester) -> None:
    """[WHITEOUT-2] A wrapper of the kernel driver that hides whiteouts: the machine fails with a minimal trace
    that diverges on the wrapper and agrees on the kernel."""
    result = repository.runpytest_subprocess("--cowspec-driver", "kernelbug:Driver", *SMALL, "-k", "machine")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert outcomes(result)["failed"] == 1
    assert "divergence from the model that breaks WHITEOUT-2" in result.stdout.str()
    path = saved_path(result, "minimal trace")
    assert f"replay: cowspec check --driver kernelbug:Driver {path}" in result.stdout.str()
    assert replay(repository, "kernelbug:Driver", path).returncode == 1
    assert replay(repository, "kernel-overlay", path).returncode == 0
