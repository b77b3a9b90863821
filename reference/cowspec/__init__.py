"""cowspec: the reference model of layered copy-on-write container storage.

The package is a set of immutable values and pure functions on them. It does
no I/O: reading trace files, mounting and talking to real systems live in
``cowcheck`` (``conformance/``), which depends on this package and never the
other way round.
"""

__version__ = "0.1.0"
