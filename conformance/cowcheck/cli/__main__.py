"""``python -m cowcheck.cli``: the ``cowspec`` command."""

from cowcheck.cli.main import run

run()
