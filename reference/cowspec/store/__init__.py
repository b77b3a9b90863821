"""Level 3: the store of images and containers (spec chapter 15).

Images and containers sharing layers by ChainID, build steps that add layers
or only metadata, commits, volumes that bypass the layers, reference counts,
and every figure Docker reports (sizes, shared and unique sizes,
``docker system df``). Ground truth: a real Docker engine.

Imports ``cowspec.fs`` and ``cowspec.oci``, never ``cowspec.formats``.
"""
