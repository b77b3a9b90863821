"""Tests of level 1, cowspec.fs."""

import importlib

from tests.support import Scenario

SCENARIO_MODULES = ("copy_up", "entries", "operations", "paths", "redirect", "sizes", "stack", "whiteouts")
"""The level-1 test modules whose ``SCENARIOS`` are kernel vectors too."""


def every_scenario() -> list[Scenario]:
    """The scenarios of every level-1 test module: small traces with their facts, which other drivers replay."""
    modules = [importlib.import_module(f"tests.fs.test_{name}") for name in SCENARIO_MODULES]
    return [scenario for module in modules for scenario in module.SCENARIOS]
