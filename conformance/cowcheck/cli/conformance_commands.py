"""``cowspec conformance-report``: one report of every implementation's conformance, from real runs.

The work is in ``cowcheck.conformance_report``; this module reads the
command line, checks it, and says in one line what was written and whether
any implementation could not be run (exit 3 then: a report with a hole in
it is not a clean result).
"""

import argparse
import os
import sys
from pathlib import Path

from cowcheck.cli.output import EXIT_UNAVAILABLE, UsageError

DEFAULT_OUT = "docs/conformance"
DEFAULT_KNOWN = "tests/divergences"


IMPLEMENTATION_NAMES = ("kernel-overlay", "fuse-overlayfs", "containerd-overlayfs", "containerd-native")
"""The names ``--only`` takes, without importing the report (the parser is built for every command);
``cowcheck.conformance_report.IMPLEMENTATIONS`` holds them, and a test checks the two agree."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``cowspec conformance-report``."""
    names = ", ".join(IMPLEMENTATION_NAMES)
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help=f"directory the report is written to (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--profile",
        default="quick",
        choices=("dev", "quick", "ci", "nightly"),
        help="budget of each generated run (default quick)",
    )
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="workers of each filesystem-level run")
    parser.add_argument(
        "--only", action="append", metavar="NAME", help=f"run only these implementations (of: {names}); repeatable"
    )
    parser.add_argument(
        "--known",
        default=DEFAULT_KNOWN,
        metavar="DIR",
        help=f"where the kept divergences are, one directory per implementation (default {DEFAULT_KNOWN})",
    )
    parser.add_argument("--no-matrix", action="store_true", help="leave out the layer matrix (docker, umoci, podman)")


def command_conformance_report(arguments: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Run every implementation and write the report; 3 if one of them could not be run."""
    from cowcheck.conformance_report import IMPLEMENTATIONS, command_line, divergences_of, generate

    chosen = list(IMPLEMENTATIONS)
    if arguments.only:
        known_names = {each.name for each in IMPLEMENTATIONS}
        unknown = [name for name in arguments.only if name not in known_names]
        if unknown:
            raise UsageError(f"--only {unknown[0]}: no such implementation (known: {', '.join(sorted(known_names))})")
        chosen = [each for each in IMPLEMENTATIONS if each.name in arguments.only]
    if arguments.workers < 1:
        raise UsageError(f"--workers {arguments.workers}: give at least 1")
    out = Path(arguments.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out {arguments.out}: cannot make the directory ({error.strerror})") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"--out {arguments.out}: not writable")
    runs, _known = generate(
        out,
        chosen,
        profile=arguments.profile,
        workers=arguments.workers,
        known_directory=Path(arguments.known),
        with_matrix=not arguments.no_matrix,
        command=command_line(argv if argv is not None else sys.argv[2:]),
    )
    failed = [run for run in runs if run.failure]
    found = sum(len(divergences_of(run.data)) for run in runs)
    print(
        f"cowspec conformance-report: {len(runs)} runs, {found} divergences found, written to {out}/", file=sys.stderr
    )
    if failed:
        print(f"cowspec: {failed[0].label} could not run: {failed[0].failure}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return 0
