"""cowcheck: the conformance harness of cowspec.

- ``cowcheck.drivers``: the protocol a real implementation speaks at each
  level, the registry of drivers by name, and the drivers themselves (the
  kernel's overlayfs, a private Docker engine, umoci, podman);
- ``cowcheck.machines``: the Hypothesis state machines, their strategies
  and their settings profiles;
- ``cowcheck.cli``: the ``cowspec`` command, one module per command group;
- ``cowcheck.images``, ``cowcheck.fastlayer``: reading images from disk,
  held to the model's reader; ``cowcheck.compare``: where two results differ;
  ``cowcheck.matrix``: the layer cases fed to every real tool.
"""
