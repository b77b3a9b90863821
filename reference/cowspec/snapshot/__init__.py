"""Level 2b: containerd's snapshotters (spec chapter 17, ``spec/17-snapshots.md``).

A snapshotter keeps snapshots by key: *active* ones (writable), *views*
(read-only) and *committed* ones (read-only, the only kind that can be a
parent). This package states what each call does with its error kinds
(``calls``, ``state``, ``steps``), and what can be observed of the result
(``observe``): the snapshots ``ctr snapshots ls`` lists, the tree a
snapshot's mounts show, its mounts, its usage, and its diff against its
parent as containerd's walking differ writes it. Two snapshotters are
stated: ``overlayfs`` (each snapshot its own directory, stacked by overlay
mounts, so the filesystem level's Docker overlay2 rules apply) and
``native`` (each snapshot a full copy of its parent's tree).

Ground truth: containerd 1.6.20 with a private instance on this machine.
Imports only ``cowspec.fs``, ``cowspec.oci`` and ``cowspec.errors``.
"""
