"""``cowspec drivers``: what ``--driver`` can name on this machine."""

import argparse

from cowcheck.cli.output import emit
from cowcheck.drivers import registry


def describe(found: registry.Registered) -> dict[str, object]:
    """One driver as JSON: name, levels, optional features, origin."""
    return {
        "name": found.name,
        "levels": list(found.levels),
        "features": sorted(found.features),
        "origin": found.origin,
    }


def command_drivers(arguments: argparse.Namespace) -> int:
    """List the installed drivers, and describe the ones named with ``--driver``."""
    drivers = registry.installed() + [registry.find(spec) for spec in arguments.driver]
    if arguments.json:
        emit({"drivers": [describe(found) for found in drivers]})
        return 0
    rows = [("NAME", "LEVEL", "FEATURES", "FROM")]
    for found in drivers:
        levels = ", ".join(found.levels) or "broken"
        rows.append((found.name, levels, ", ".join(sorted(found.features)) or "-", found.origin))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[3])
    print(
        "\nEach also takes Docker's overlay2 configuration (no optional feature)."
        " Also: --driver module:attr, --driver exec:COMMAND (docs/formats/driver-protocol.md)."
    )
    return 0
