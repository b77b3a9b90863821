"""cowcheck: the conformance harness of cowspec.

Drivers run traces on real implementations (first the Linux kernel's
overlayfs); Hypothesis state machines generate cases and hold every result
against the reference model in ``cowspec``; the ``cowspec`` command is here.
"""
