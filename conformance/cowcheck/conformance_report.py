"""One conformance report for every implementation cowspec can drive, from real runs.

``cowspec conformance-report --out DIR`` runs, for each implementation and
level, the generated check with one budget (``cowspec check --driver X
--report FILE.json``, in a subprocess of its own, so that each driver's
daemons, mounts and namespaces live and die with its run), replays every
divergence kept under ``tests/divergences/IMPLEMENTATION/`` (each must still
diverge for the report to call it known), runs the layer-level matrix
(``cowspec matrix``), and writes:

- ``DIR/README.md``: the machine and tools, then one row per implementation,
  level and profile: examples and ops run, rules exercised, divergences
  found by the run, known divergences and how many are bugs;
- ``DIR/IMPLEMENTATION.md``: per run, the rules exercised and broken, each
  divergence with a sentence, its rule and its minimal trace (also a file
  under ``DIR/traces/``, replayable with the command shown), and the known
  divergences with their verdicts (a *bug* of the implementation, or a
  variation the spec *allows*) as their README states them;
- ``DIR/layer-matrix.md``: the layer cases through Docker, umoci and podman;
- ``DIR/runs/*.json``: the data every page was written from.

Nothing here judges: the verdicts come from the checks and from the kept
divergences' own files, and the report only gathers and renders them.
"""

import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cowcheck.report import started_now
from cowspec import __version__

Runner = Callable[[Sequence[str]], "Finished"]


@dataclass(frozen=True, slots=True)
class Implementation:
    """One implementation as the report runs it: its driver and level, the
    conformance profiles it is held to, and where its kept divergences are."""

    name: str
    driver: str
    level: str
    conformances: tuple[str, ...] = ("kernel",)
    """The conformance profiles of spec chapter 16 it is held to; a level other than the filesystem's has
    none of its own (the model's contract, exactly), written ``exact``."""
    known: str | None = None
    """The directory under ``tests/divergences/`` holding its kept divergences, if any."""
    note: str = ""


IMPLEMENTATIONS: tuple[Implementation, ...] = (
    Implementation(
        "kernel-overlay",
        "kernel-overlay",
        "filesystem",
        note="the ground truth of the filesystem level: a divergence here is a fault of the model",
    ),
    Implementation("fuse-overlayfs", "fuse-overlayfs", "filesystem", ("kernel", "portable"), known="fuse-overlayfs"),
    Implementation("containerd-overlayfs", "containerd-overlayfs", "snapshot", ("exact",), "containerd-overlayfs"),
    Implementation("containerd-native", "containerd-native", "snapshot", ("exact",), "containerd-native"),
)


@dataclass(frozen=True, slots=True)
class Finished:
    """A finished subprocess: its exit status and the last line it wrote on standard error."""

    status: int
    last_error: str


@dataclass
class Run:
    """One generated check of one implementation under one profile, as its JSON report says it."""

    implementation: Implementation
    conformance: str
    status: int
    data: Mapping[str, object] = field(default_factory=dict)
    failure: str = ""
    """Why the check could not run (empty if it ran)."""

    @property
    def label(self) -> str:
        return f"{self.implementation.name}-{self.conformance}"


@dataclass
class Known:
    """A kept divergence and what replaying it gave today."""

    trace: str
    rule: str
    verdict: str
    summary: str
    portable: bool | None
    replayed: str
    """``diverges``, ``agrees now`` or ``could not run: ...``."""
    reported_rules: tuple[str, ...] = ()
    """The rules a replay names first under each profile, where the listing says (``reported``)."""


def run_process(argv: Sequence[str]) -> Finished:
    """Run ``argv`` with its standard output discarded; its status and its last line of complaint."""
    finished = subprocess.run(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    lines = [line for line in finished.stderr.splitlines() if line.strip()]
    return Finished(finished.returncode, lines[-1].strip() if lines else "")


def cowspec_command(*arguments: str) -> list[str]:
    """The command line of ``cowspec ARGUMENTS`` run by this interpreter."""
    return [sys.executable, "-m", "cowcheck.cli", *arguments]


def check_run(
    implementation: Implementation, conformance: str, profile: str, workers: int, out: Path, runner: Runner
) -> Run:
    """The generated check of one implementation under one conformance profile; its JSON report kept in ``out/runs``."""
    run = Run(implementation, conformance, 0)
    report = out / "runs" / f"{run.label}.json"
    arguments = ["check", "--driver", implementation.driver, "--profile", profile, "--progress", "never"]
    arguments += ["--database", "none", "--report", str(report), "--save", str(out / "traces" / run.label)]
    if implementation.level == "filesystem":
        arguments += ["--conformance", conformance, "--workers", str(workers)]
    report.unlink(missing_ok=True)
    finished = runner(cowspec_command(*arguments))
    run.status = finished.status
    if finished.status in (0, 1) and report.exists():
        run.data = json.loads(report.read_text(encoding="utf-8"))
    else:
        run.failure = finished.last_error or f"exit status {finished.status}"
    return run


def known_divergences(implementation: Implementation, directory: Path, runner: Runner) -> list[Known]:
    """The divergences kept for ``implementation``, each replayed on it now."""
    if implementation.known is None:
        return []
    listing = directory / implementation.known / "divergences.json"
    if not listing.exists():
        return []
    found: list[Known] = []
    for item in json.loads(listing.read_text(encoding="utf-8")):
        trace = directory / implementation.known / str(item["trace"])
        portable = item.get("portable")
        arguments = ["check", "--driver", implementation.driver, str(trace)]
        if implementation.level == "filesystem" and portable is True:
            arguments += ["--conformance", "portable"]
        finished = runner(cowspec_command(*arguments))
        replayed = {0: "agrees now", 1: "diverges"}.get(
            finished.status, f"could not run: {finished.last_error or finished.status}"
        )
        found.append(
            Known(
                str(item["trace"]),
                str(item.get("rule", "")),
                str(item.get("verdict", "")),
                str(item.get("summary", "")),
                portable if isinstance(portable, bool) else None,
                replayed,
                tuple(str(rule) for rule in dict(item.get("reported") or {}).values() if rule),
            )
        )
    return found


def sentence(difference: Mapping[str, object], implementation: str) -> str:
    """One sentence for a difference: what the model says and what the implementation gave, and the rule."""
    where = f" of `{difference.get('path')}`" if difference.get("path") else ""
    rule = f" [{difference['rule']}]" if difference.get("rule") else ""
    expected = json.dumps(difference.get("expected"), sort_keys=True)
    actual = json.dumps(difference.get("actual"), sort_keys=True)
    return (
        f"{difference.get('field', 'result')}{where}: the model says {expected}, {implementation} gave {actual}{rule}."
    )


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _rules_of(data: Mapping[str, object]) -> dict[str, dict[str, object]]:
    rules = data.get("rules")
    return {str(rule): dict(row) for rule, row in rules.items()} if isinstance(rules, dict) else {}


def divergences_of(data: Mapping[str, object]) -> list[dict[str, object]]:
    divergences = data.get("divergences")
    return [dict(each) for each in divergences] if isinstance(divergences, list) else []


def write_traces(run: Run, out: Path) -> list[str]:
    """Each divergence's minimal trace as a file of its own (``traces/LABEL-N.json``); their names under ``out``."""
    names: list[str] = []
    for number, divergence in enumerate(divergences_of(run.data), 1):
        name = f"traces/{run.label}-{number}.json"
        if divergence.get("trace") is not None:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(json.dumps(divergence["trace"], indent=1, sort_keys=True) + "\n", encoding="utf-8")
        names.append(name)
    return names


def implementation_page(implementation: Implementation, runs: Sequence[Run], known: Sequence[Known], out: Path) -> str:
    """The Markdown page of one implementation: its runs, their rules and divergences, its kept divergences."""
    lines = [f"# {implementation.name} ({implementation.level} level)", ""]
    if implementation.note:
        lines += [implementation.note[0].upper() + implementation.note[1:] + ".", ""]
    lines += [f"Driver: `--driver {implementation.driver}`. Generated by `cowspec conformance-report`.", ""]
    for run in runs:
        lines += [f"## Profile `{run.conformance}`" if implementation.level == "filesystem" else "## Generated run", ""]
        if run.failure:
            lines += [f"The run could not be made: {run.failure}", ""]
            continue
        data = run.data
        lines += [
            f"- budget: {data.get('profile', '-')} profile"
            + (f" ({data['budget']})" if data.get("budget") else "")
            + f", {data.get('examples', 0)} examples, {data.get('ops', 0)} ops"
            + f", {float(str(data.get('seconds', 0))):.1f} s",
            f"- started: {data.get('started', '-')}, cowspec {data.get('cowspec', '-')}, "
            f"kernel {data.get('kernel', '-')}" + (f", {data['version']}" if data.get("version") else ""),
        ]
        rules = _rules_of(data)
        exercised = sorted(rule for rule, row in rules.items() if int(str(row.get("exercised", 0))) > 0)
        broken = sorted(rule for rule, row in rules.items() if int(str(row.get("broken", 0))) > 0)
        lines += [
            f"- rules exercised ({len(exercised)}): {', '.join(exercised) or '-'}",
            f"- rules broken: {', '.join(broken) or 'none'}",
            "",
        ]
        divergences = divergences_of(data)
        traces = write_traces(run, out)
        if not divergences:
            lines += ["No divergence was found in this run.", ""]
        for number, (divergence, trace) in enumerate(zip(divergences, traces, strict=True), 1):
            differences = divergence.get("differences")
            first = dict(differences[0]) if isinstance(differences, list) and differences else {}
            relaxation = " --conformance portable" if run.conformance == "portable" else ""
            rule = str(divergence.get("rule") or first.get("rule") or "")
            alike = [each.trace for each in known if rule and rule in (each.rule, *each.reported_rules)]
            kin = f" The kept divergences breaking the same rule: {', '.join(alike)}." if alike else ""
            lines += [
                f"### Divergence {number}: {rule or 'no rule named'}",
                "",
                (sentence(first, implementation.name) if first else "The run diverged without a difference recorded.")
                + kin,
                "",
                f"Minimal trace: [`{trace}`]({trace}); replay: "
                f"`cowspec check --driver {implementation.driver}{relaxation} {out / trace}`.",
                "",
            ]
    if known:
        bugs = sum(each.verdict == "bug" for each in known)
        lines += [
            "## Kept divergences",
            "",
            f"{len(known)} minimal traces kept under `tests/divergences/{implementation.known}/` "
            f"({bugs} bug(s) of {implementation.name}, {len(known) - bugs} allowed variation(s)); "
            "each was replayed on the implementation for this report.",
            "",
            "| trace | rule | verdict | under portable | replayed today | what happens |",
            "|---|---|---|---|---|---|",
        ]
        for each in known:
            link = f"../../tests/divergences/{implementation.known}/{each.trace}"
            verdict = "**bug**" if each.verdict == "bug" else each.verdict
            portable = {True: "still diverges", False: "allowed", None: "-"}[each.portable]
            lines.append(
                f"| [`{each.trace}`]({link}) | {each.rule} | {verdict} | {portable} | {each.replayed} "
                f"| {_cell(each.summary)} |"
            )
        lines.append("")
    return "\n".join(lines)


def machine_lines() -> list[str]:
    """The machine the report ran on: CPU, kernel, Python."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return [
        f"- machine: {cpu}, {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}",
        f"- cowspec {__version__}, Python {platform.python_version()}",
    ]


def index_page(
    runs: Sequence[Run], known: Mapping[str, Sequence[Known]], matrix: str, command: str, started: str
) -> str:
    """``README.md`` of the report: how it was made and one row per implementation, level and profile."""
    lines = [
        "# Conformance of real implementations to cowspec",
        "",
        f"Generated by `{command}` from real runs (started {started}); every figure below comes from those runs.",
        "",
        *machine_lines(),
        "",
        "| implementation | level | profile | examples | ops | rules exercised | divergences found "
        "| kept divergences (bugs) | page |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        implementation = run.implementation
        kept = known.get(implementation.name, ())
        kept_cell = f"{len(kept)} ({sum(each.verdict == 'bug' for each in kept)})" if kept else "-"
        page = f"[{implementation.name}.md]({implementation.name}.md)"
        if run.failure:
            lines.append(
                f"| {implementation.name} | {implementation.level} | {run.conformance} | - | - | - "
                f"| could not run: {_cell(run.failure)} | {kept_cell} | {page} |"
            )
            continue
        data = run.data
        exercised = sum(1 for row in _rules_of(data).values() if int(str(row.get("exercised", 0))) > 0)
        found = len(divergences_of(data))
        lines.append(
            f"| {implementation.name} | {implementation.level} | {run.conformance} ({data.get('profile', '-')}) "
            f"| {data.get('examples', 0)} | {data.get('ops', 0)} | {exercised} | {found or 'none'} | {kept_cell} "
            f"| {page} |"
        )
    lines += ["", "## Layer level", ""]
    lines += [matrix, ""]
    lines += [
        "## Reading it",
        "",
        "A *divergence found* is one the generated run of this report found and shrank; its minimal trace is on the "
        "implementation's page. A *kept divergence* is a minimal trace committed under `tests/divergences/`, with the "
        "rule it breaks and a verdict: a **bug** of the implementation (it breaks POSIX or its own contract), or a "
        "variation the spec allows under the portable profile (spec chapter 16). Each was replayed for this report.",
        "",
    ]
    return "\n".join(lines)


def generate(
    out: Path,
    implementations: Sequence[Implementation],
    *,
    profile: str,
    workers: int,
    known_directory: Path,
    with_matrix: bool,
    command: str,
    runner: Runner = run_process,
) -> tuple[list[Run], dict[str, list[Known]]]:
    """Run everything and write the report into ``out``; the runs and the kept divergences, as found."""
    started = started_now()
    (out / "runs").mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    known: dict[str, list[Known]] = {}
    for implementation in implementations:
        mine = [
            check_run(implementation, conformance, profile, workers, out, runner)
            for conformance in implementation.conformances
        ]
        known[implementation.name] = known_divergences(implementation, known_directory, runner)
        page = implementation_page(implementation, mine, known[implementation.name], out)
        (out / f"{implementation.name}.md").write_text(page, encoding="utf-8")
        runs += mine
    matrix = "The layer matrix was not run (`--no-matrix`)."
    if with_matrix:
        finished = runner(cowspec_command("matrix", "--out", str(out / "layer-matrix.md")))
        if finished.status == 0:
            matrix = (
                "[`layer-matrix.md`](layer-matrix.md): hand-made layer stacks flattened by cowspec and by Docker, "
                f"umoci and podman ({finished.last_error.removeprefix('cowspec matrix: ')})."
            )
        else:
            matrix = f"The layer matrix could not be made: {finished.last_error or finished.status}."
    summary = {
        "started": started,
        "runs": [
            {
                "implementation": run.implementation.name,
                "level": run.implementation.level,
                "conformance": run.conformance,
                "status": run.status,
                "failure": run.failure,
                "report": f"runs/{run.label}.json" if not run.failure else None,
            }
            for run in runs
        ],
        "known": {name: [vars(each) for each in items] for name, items in known.items()},
    }
    (out / "runs" / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (out / "README.md").write_text(index_page(runs, known, matrix, command, started), encoding="utf-8")
    return runs, known


def command_line(arguments: Sequence[str]) -> str:
    """How the report says it was made."""
    return " ".join(["cowspec conformance-report", *(shlex.quote(argument) for argument in arguments)])
