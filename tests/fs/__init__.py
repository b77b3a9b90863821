"""Tests of level 1, cowspec.fs."""

from tests.support import Scenario


def every_scenario() -> list[Scenario]:
    """The scenarios of every level-1 test module: small traces with their facts, which other drivers replay."""
    from tests.fs import (
        test_copy_up,
        test_entries,
        test_operations,
        test_paths,
        test_redirect,
        test_sizes,
        test_stack,
        test_whiteouts,
    )

    modules = (
        test_copy_up,
        test_entries,
        test_operations,
        test_paths,
        test_redirect,
        test_sizes,
        test_stack,
        test_whiteouts,
    )
    return [scenario for module in modules for scenario in module.SCENARIOS]
