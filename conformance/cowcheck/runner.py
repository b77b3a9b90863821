"""Running a whole trace on a real implementation."""

from cowspec.observe import Entry
from cowspec.trace import RESULT_FORMAT, Trace

from .driver import Driver


def run_real(driver: Driver, trace: Trace) -> Entry:
    """The result document ``driver`` gives for ``trace``."""
    session = driver.open(trace.layers, trace.features)
    try:
        results = [session.perform(op) for op in trace.ops]
        return {
            "format": RESULT_FORMAT,
            "results": results,
            "merged": session.merged(),
            "upper": session.upper(),
            "sizes": session.sizes(),
        }
    finally:
        session.close()
