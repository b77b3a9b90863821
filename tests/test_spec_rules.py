"""Every rule of spec/ is cited by code and by a test, and every citation exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFINITION = re.compile(r"^#{2,4} ([A-Z]+-\d+):", re.MULTILINE)
CITATION = re.compile(r"\[([A-Z]+-\d+)\]")


def defined_rules(spec: Path) -> dict[str, Path]:
    rules: dict[str, Path] = {}
    for chapter in sorted(spec.glob("*.md")):
        for rule in DEFINITION.findall(chapter.read_text()):
            assert rule not in rules, f"{rule} is defined twice ({rules[rule].name}, {chapter.name})"
            rules[rule] = chapter
    return rules


def citations(folders: list[Path], skip: Path | None = None) -> dict[str, set[str]]:
    cited: dict[str, set[str]] = {}
    for folder in folders:
        for source in sorted(folder.rglob("*.py")):
            if source == skip:
                continue
            for rule in CITATION.findall(source.read_text()):
                cited.setdefault(rule, set()).add(str(source.relative_to(ROOT)))
    return cited


def problems(rules: dict[str, Path], code: dict[str, set[str]], tests: dict[str, set[str]]) -> list[str]:
    """Every broken link between the spec, the code and the tests."""
    found = [f"{rule} is cited by no code" for rule in sorted(rules) if rule not in code]
    found += [f"{rule} is cited by no test" for rule in sorted(rules) if rule not in tests]
    for where, cited in (("code", code), ("test", tests)):
        for rule, files in sorted(cited.items()):
            if rule not in rules:
                found.append(f"{rule} is cited by {where} ({', '.join(sorted(files))}) but no chapter defines it")
    return found


def test_every_rule_is_cited_and_every_citation_exists() -> None:
    rules = defined_rules(ROOT / "spec")
    assert len(rules) > 50
    code = citations([ROOT / "reference", ROOT / "conformance"])
    tests = citations([ROOT / "tests"], skip=Path(__file__).resolve())
    assert problems(rules, code, tests) == []


def test_the_check_finds_broken_links() -> None:
    """The checker itself can fail: an uncited rule and an unknown citation."""
    rules = {"LOOKUP-1": ROOT, "LOOKUP-2": ROOT}
    code = {"LOOKUP-1": {"a.py"}, "LOOKUP-2": {"a.py"}, "LOOKUP-9": {"b.py"}}
    tests = {"LOOKUP-1": {"t.py"}}
    assert problems(rules, code, tests) == [
        "LOOKUP-2 is cited by no test",
        "LOOKUP-9 is cited by code (b.py) but no chapter defines it",
    ]
