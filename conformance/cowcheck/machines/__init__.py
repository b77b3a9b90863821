"""Hypothesis state machines that hold real implementations to the model.

``fs_machine`` drives a filesystem-level driver, ``store_machine`` a Docker
engine; ``strategies`` draws layers, paths and ops; ``profiles`` is the one
place that defines the settings profiles (``dev``, ``ci``, ``nightly``).
"""
