"""Running a whole trace on a real implementation."""

from cowcheck.drivers.protocol import Driver
from cowspec.formats.trace import RESULT_FORMAT, Trace, build_layers
from cowspec.fs.observe import Entry


def run_real(driver: Driver, trace: Trace) -> Entry:
    """The result document ``driver`` gives for ``trace``.

    The layers are checked by the model first, so a malformed trace is
    rejected the same way whichever driver runs it.
    """
    build_layers(trace)
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
