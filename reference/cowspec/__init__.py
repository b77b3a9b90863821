"""cowspec: the reference model of layered copy-on-write container storage.

The package is a set of immutable values and pure functions on them, in
three levels and the formats over them:

- ``cowspec.fs``: one container's filesystem (spec chapters 1-9);
- ``cowspec.oci``: layer tars, their identity, applying and committing them
  (chapters 11-14);
- ``cowspec.store``: images and containers sharing layers, and the figures
  Docker reports (chapter 15);
- ``cowspec.formats``: the JSON trace formats over the three levels, decoded
  and encoded (chapter 10, and the store trace of chapter 15);
- ``cowspec.errors``: the three kinds of failure every level shares.

A level imports only the levels below it: ``fs`` neither ``oci`` nor
``store``; ``oci`` not ``store``; nothing imports ``formats`` but the
formats themselves. It does no I/O: reading files, mounting and talking to
real systems live in ``cowcheck`` (``conformance/``), which depends on this
package and never the other way round.
"""

__version__ = "0.1.0"
