"""Level 2: OCI layer tars and what is made of them (spec chapters 11-14).

The layer tar codec as pure functions over bytes and records
(``layer_tar``), DiffID and ChainID (``identity``), applying layers to an
empty root (``apply``), committing a container's writable layer to a tar
(``commit``), ``docker diff`` (``diff``), and what an image's history and
waste say of its layers (``history``, ``waste``). Ground truth: the OCI
image-spec, and the real tools that read and write layers.

Imports ``cowspec.fs`` (a commit reads a container), never ``cowspec.store``
or ``cowspec.formats``.
"""
