"""A conformance run's report per spec rule, as Markdown or as one HTML page.

The checker fills a ``RunReport``: the run's header (driver, kernel,
features, profile, conformance, budget), what it did (examples, ops,
seconds, the mix of results), how often each spec rule was exercised,
broken and relaxed (``RuleTally``, fed with the model's transitions and the
differences found), and each divergence with its source, its minimal trace
and its differences. ``render_markdown`` and ``render_html`` only render:
they read the spec's text of each rule a divergence breaks from ``spec/``
(found next to the package; where it is absent, the page says the text is
unavailable), and change nothing.

A rule is *exercised* each time a model transition names it
(``Transition.rules``), *broken* each time a difference names it
(``Difference.rule``), and *relaxed* each time a profile's relaxation let a
real answer pass (spec chapter 16, [CONFORM-1]).
"""

import html
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cowcheck.compare import Difference
from cowspec import __version__
from cowspec.fs.conformance import Conformance
from cowspec.fs.operations import Transition

RULE_HEADING = re.compile(r"^#{2,4} ([A-Z]+-\d+): (.*)$")
RULE_ID = re.compile(r"^([A-Z]+)-(\d+)$")
FILESYSTEM_CHAPTERS_END = "11"
"""Chapters 01 to 10 state the filesystem level (their files sort below ``11-``)."""
REPORT_FORMATS = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html", ".json": "json"}


@dataclass
class RuleTally:
    """How often each rule was exercised, broken and relaxed in a run.

    The one mutable piece of a report: a checker records into it as it
    goes, and ``merge`` adds a worker's tally to another's.
    """

    exercised: Counter[str] = field(default_factory=Counter)
    broken: Counter[str] = field(default_factory=Counter)
    relaxed: Counter[str] = field(default_factory=Counter)

    def record(self, transition: Transition) -> None:
        """Count the rules one model transition exercised (its deciding rule at least)."""
        for rule in transition.rules or ((transition.rule,) if transition.rule else ()):
            self.exercised[rule] += 1

    def record_all(self, transitions: Iterable[Transition]) -> None:
        """Count the rules of every transition (``ModelRun.taken``)."""
        for transition in transitions:
            self.record(transition)

    def record_differences(self, differences: Iterable[Difference]) -> None:
        """Count each difference under the rule it breaks."""
        for difference in differences:
            self.broken[difference.rule] += 1

    def merge(self, other: "RuleTally") -> None:
        """Add ``other``'s counts to these."""
        self.exercised.update(other.exercised)
        self.broken.update(other.broken)
        self.relaxed.update(other.relaxed)

    def rules(self) -> set[str]:
        """Every rule with any count."""
        return set(self.exercised) | set(self.broken) | set(self.relaxed)

    def to_json(self) -> dict[str, dict[str, int]]:
        """The counts as JSON, for a worker to hand its tally to the process that reports."""
        return {"exercised": dict(self.exercised), "broken": dict(self.broken), "relaxed": dict(self.relaxed)}

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, int]]) -> "RuleTally":
        """A tally from ``to_json``'s form."""
        return cls(
            Counter(data.get("exercised", {})), Counter(data.get("broken", {})), Counter(data.get("relaxed", {}))
        )


@dataclass(frozen=True, slots=True)
class ReportedDivergence:
    """One divergence: where it came from (a trace file's name, or
    ``generated``), its minimal trace (a ``cowspec-trace/1`` document, None
    if there is none), and its differences, the first naming the rule it
    breaks."""

    source: str
    trace: Mapping[str, object] | None
    differences: tuple[Difference, ...]

    @property
    def rule(self) -> str:
        """The rule the divergence breaks: its first difference's."""
        return self.differences[0].rule if self.differences else ""


@dataclass(frozen=True, slots=True)
class RunReport:
    """Everything a report says about one run of ``cowspec check``."""

    driver: str
    conformance: Conformance = "kernel"
    kernel: str = ""
    features: Mapping[str, object] = field(default_factory=dict)
    profile: str = ""
    budget: str = ""
    examples: int = 0
    ops: int = 0
    seconds: float = 0.0
    results: Mapping[str, int] = field(default_factory=dict)
    tally: RuleTally = field(default_factory=RuleTally)
    divergences: tuple[ReportedDivergence, ...] = ()
    started: str = ""
    """When the run started, as an ISO 8601 UTC time (``started_now()``); empty if not said."""

    @property
    def agrees(self) -> bool:
        """True if the run found no divergence."""
        return not self.divergences

    def to_json(self) -> dict[str, object]:
        """The report as a JSON object."""
        return {
            "cowspec": __version__,
            "started": self.started,
            "driver": self.driver,
            "conformance": self.conformance,
            "kernel": self.kernel,
            "features": dict(self.features),
            "profile": self.profile,
            "budget": self.budget,
            "examples": self.examples,
            "ops": self.ops,
            "seconds": self.seconds,
            "results": dict(self.results),
            "rules": {rule: row.to_json() for rule, row in rule_rows(self, {}).items()},
            "divergences": [
                {
                    "source": each.source,
                    "rule": each.rule,
                    "trace": each.trace,
                    "differences": [difference.to_json() for difference in each.differences],
                }
                for each in self.divergences
            ],
        }


def started_now() -> str:
    """The time now, as a report's ``started`` says it (UTC, to the second)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the spec's rules ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpecRule:
    """A rule as a chapter of spec/ states it: its ID, title, chapter file and text."""

    rule: str
    title: str
    chapter: str
    text: str


def default_spec_dir() -> Path | None:
    """The spec/ folder of the source tree this package runs from, if there is one."""
    candidate = Path(__file__).resolve().parents[2] / "spec"
    return candidate if candidate.is_dir() else None


def spec_rules(spec_dir: Path | None) -> dict[str, SpecRule]:
    """Every rule the chapters in ``spec_dir`` define, in chapter order; none if there is no spec."""
    rules: dict[str, SpecRule] = {}
    if spec_dir is None or not spec_dir.is_dir():
        return rules
    for chapter in sorted(spec_dir.glob("[0-9]*.md")):
        current: tuple[str, str] | None = None
        body: list[str] = []
        fenced = False
        for line in [*chapter.read_text(encoding="utf-8").splitlines(), "## END"]:
            if line.startswith("```"):
                fenced = not fenced
            heading = None if fenced else RULE_HEADING.match(line)
            if heading or (line.startswith("#") and not fenced):
                if current is not None:
                    rules[current[0]] = SpecRule(current[0], current[1], chapter.name, "\n".join(body).strip())
                current, body = (heading.group(1), heading.group(2)) if heading else None, []
            elif current is not None:
                body.append(line)
    return rules


def rule_order(rule: str, known: Mapping[str, SpecRule]) -> tuple[int, str, int]:
    """A key that sorts rules as the spec orders them, unknown ones last by name."""
    position = list(known).index(rule) if rule in known else len(known)
    match = RULE_ID.match(rule)
    return (position, match.group(1) if match else rule, int(match.group(2)) if match else 0)


@dataclass(frozen=True, slots=True)
class RuleRow:
    """One row of the per-rule table."""

    rule: str
    title: str
    chapter: str
    exercised: int
    broken: int
    relaxed: int

    @property
    def status(self) -> str:
        """``broken``, ``relaxed``, ``held`` or ``not exercised``."""
        if self.broken:
            return "broken"
        if self.relaxed:
            return "relaxed"
        return "held" if self.exercised else "not exercised"

    def to_json(self) -> dict[str, object]:
        """The row as a JSON object."""
        return {"exercised": self.exercised, "broken": self.broken, "relaxed": self.relaxed, "status": self.status}


def rule_rows(report: RunReport, known: Mapping[str, SpecRule]) -> dict[str, RuleRow]:
    """A row per rule the run counted, and per rule of every chapter it touched, in the spec's order."""
    tally = report.tally
    counted = tally.rules()
    chapters = {known[rule].chapter for rule in counted if rule in known}
    if any(chapter < FILESYSTEM_CHAPTERS_END for chapter in chapters):
        # A run at the filesystem level is held to every rule of its chapters and of the profiles, those it
        # never reached included: a reviewer sees what the run did not exercise.
        chapters |= {each.chapter for each in known.values() if each.chapter < FILESYSTEM_CHAPTERS_END}
        chapters |= {each.chapter for each in known.values() if each.rule.startswith("CONFORM-")}
    shown = counted | {rule for rule, each in known.items() if each.chapter in chapters}
    rows: dict[str, RuleRow] = {}
    for rule in sorted(shown, key=lambda each: rule_order(each, known)):
        spec = known.get(rule)
        rows[rule] = RuleRow(
            rule,
            spec.title if spec else "",
            spec.chapter if spec else "",
            tally.exercised[rule],
            tally.broken[rule],
            tally.relaxed[rule],
        )
    return rows


# -- rendering ------------------------------------------------------------------------------


def report_format(path: str) -> str:
    """``markdown``, ``html`` or ``json``, from the name of the file a report goes to.

    Raises ``ValueError`` with a one-line reason for any other name.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in REPORT_FORMATS:
        raise ValueError(f"a report is written as .md, .html or .json, not {path!r}")
    return REPORT_FORMATS[suffix]


def render(report: RunReport, path: str, spec_dir: Path | None = None) -> str:
    """The report in the format ``path``'s name asks for (``report_format``)."""
    chosen = report_format(path)
    if chosen == "html":
        return render_html(report, spec_dir)
    if chosen == "json":  # for programs (``cowspec conformance-report`` reads it): the report's data, unrendered
        return json.dumps(report.to_json(), indent=1, sort_keys=True) + "\n"
    return render_markdown(report, spec_dir)


def _summary(report: RunReport) -> list[tuple[str, str]]:
    rate = f"{report.examples / report.seconds:.1f} examples/s" if report.seconds > 0 else "-"
    features = ", ".join(f"{name}={_json(value)}" for name, value in sorted(report.features.items())) or "-"
    relaxed = sum(report.tally.relaxed.values())
    return [
        ("verdict", "agrees" if report.agrees else f"{len(report.divergences)} divergence(s)"),
        ("cowspec", f"{__version__}" + (f", run {report.started}" if report.started else "")),
        ("driver", report.driver),
        ("conformance", report.conformance),
        ("kernel", report.kernel or "-"),
        ("features", features),
        ("profile", report.profile or "-"),
        ("budget", report.budget or "-"),
        ("examples", str(report.examples)),
        ("ops", str(report.ops)),
        ("time", f"{report.seconds:.1f} s ({rate})"),
        ("results", ", ".join(f"{name} {count}" for name, count in sorted(report.results.items())) or "-"),
        ("relaxations applied", str(relaxed)),
    ]


def _trace_text(trace: Mapping[str, object] | None) -> str:
    """A trace as JSON a person can read and copy: one layer entry or op per line."""
    if trace is None:
        return "(no trace kept)"
    layers, ops = trace.get("layers"), trace.get("ops")
    if not isinstance(layers, list) or not isinstance(ops, list):
        return json.dumps(trace, indent=2)
    head = [f"{json.dumps(key)}: {json.dumps(value)}" for key, value in trace.items() if key not in ("layers", "ops")]
    written = [
        "  [" + ",\n   ".join(json.dumps(entry) for entry in layer) + "]" if isinstance(layer, list) else "  []"
        for layer in layers
    ]
    lines = ["{" + ", ".join(head) + ("," if head else ""), ' "layers": [', ",\n".join(written), " ],", ' "ops": [']
    lines += [",\n".join("  " + json.dumps(each) for each in ops), " ]", "}"]
    return "\n".join(line for line in lines if line)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: RunReport, spec_dir: Path | None = None) -> str:
    """The report as Markdown: summary, per-rule table, each divergence with
    its differences, minimal trace and the spec text of its rule."""
    known = spec_rules(spec_dir if spec_dir is not None else default_spec_dir())
    out = [f"# cowspec check: {report.driver}", ""]
    out += ["| | |", "|---|---|"]
    out += [f"| {name} | {_md_cell(value)} |" for name, value in _summary(report)]
    out += ["", "## Rules", ""]
    rows = rule_rows(report, known)
    if rows:
        out += ["| rule | title | exercised | broken | relaxed | status |", "|---|---|---:|---:|---:|---|"]
        for row in rows.values():
            out.append(
                f"| {row.rule} | {_md_cell(row.title)} | {row.exercised} | {row.broken} | {row.relaxed}"
                f" | {row.status} |"
            )
    else:
        out.append("No rule was exercised.")
    out += ["", "## Divergences", ""]
    if not report.divergences:
        out.append("None.")
    for number, divergence in enumerate(report.divergences, 1):
        out += [f"### {number}. {divergence.rule or 'unattributed'} ({divergence.source})", ""]
        out += [f"- {difference.line()}" for difference in divergence.differences]
        out += ["", "Minimal trace:", "", "```json", _trace_text(divergence.trace), "```", ""]
        out += _markdown_rule_text(divergence.rule, known)
    return "\n".join(out).rstrip() + "\n"


def _markdown_rule_text(rule: str, known: Mapping[str, SpecRule]) -> list[str]:
    spec = known.get(rule)
    if spec is None:
        return [f"The spec text of {rule or 'its rule'} is unavailable.", ""]
    quoted = [f"> {line}" if line else ">" for line in spec.text.splitlines()]
    return [f"{spec.rule}: {spec.title} ({spec.chapter}):", "", *quoted, ""]


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; line-height: 1.4; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
td.count { text-align: right; }
tr.broken td { background: #fdd; } tr.relaxed td { background: #ffd; } tr.unexercised td { color: #888; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
blockquote { border-left: 4px solid #ccc; margin: 0.5em 0; padding-left: 1em; white-space: pre-wrap; }
.verdict-ok { color: #060; } .verdict-bad { color: #a00; }
"""


def render_html(report: RunReport, spec_dir: Path | None = None) -> str:
    """The report as one self-contained HTML page, every value escaped."""
    known = spec_rules(spec_dir if spec_dir is not None else default_spec_dir())
    esc = html.escape
    title = f"cowspec check: {report.driver}"
    verdict = "verdict-ok" if report.agrees else "verdict-bad"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="{verdict}"><strong>{esc(_summary(report)[0][1])}</strong></p>',
        "<h2>Summary</h2><table>",
    ]
    parts += [f"<tr><th>{esc(name)}</th><td>{esc(value)}</td></tr>" for name, value in _summary(report)[1:]]
    parts += ["</table>", "<h2>Rules</h2>"]
    rows = rule_rows(report, known)
    if rows:
        parts.append(
            "<table><tr><th>rule</th><th>title</th><th>exercised</th><th>broken</th><th>relaxed</th><th>status</th></tr>"
        )
        for row in rows.values():
            css = {"broken": "broken", "relaxed": "relaxed", "not exercised": "unexercised"}.get(row.status, "")
            parts.append(
                f'<tr class="{css}"><td>{esc(row.rule)}</td><td>{esc(row.title)}</td>'
                f'<td class="count">{row.exercised}</td><td class="count">{row.broken}</td>'
                f'<td class="count">{row.relaxed}</td><td>{esc(row.status)}</td></tr>'
            )
        parts.append("</table>")
    else:
        parts.append("<p>No rule was exercised.</p>")
    parts.append("<h2>Divergences</h2>")
    if not report.divergences:
        parts.append("<p>None.</p>")
    for number, divergence in enumerate(report.divergences, 1):
        parts.append(f"<h3>{number}. {esc(divergence.rule or 'unattributed')} ({esc(divergence.source)})</h3>")
        parts.append("<table><tr><th>field</th><th>path</th><th>expected</th><th>actual</th><th>rule</th></tr>")
        for difference in divergence.differences:
            where = f"{difference.path} {difference.attribute}".strip()
            parts.append(
                f"<tr><td>{esc(difference.field)}</td><td>{esc(where)}</td>"
                f"<td><code>{esc(_json(difference.expected))}</code></td>"
                f"<td><code>{esc(_json(difference.actual))}</code></td><td>{esc(difference.rule)}</td></tr>"
            )
        parts.append("</table><p>Minimal trace:</p>")
        parts.append(f"<pre>{esc(_trace_text(divergence.trace))}</pre>")
        spec = known.get(divergence.rule)
        if spec is None:
            parts.append(f"<p>The spec text of {esc(divergence.rule or 'its rule')} is unavailable.</p>")
        else:
            parts.append(f"<p>{esc(spec.rule)}: {esc(spec.title)} ({esc(spec.chapter)}):</p>")
            parts.append(f"<blockquote>{esc(spec.text)}</blockquote>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def divergences_from(
    items: Sequence[tuple[str, Mapping[str, object] | None, Sequence[Difference]]],
) -> tuple[ReportedDivergence, ...]:
    """``ReportedDivergence`` values from (source, trace, differences), leaving out those with no difference."""
    return tuple(ReportedDivergence(source, trace, tuple(found)) for source, trace, found in items if found)
