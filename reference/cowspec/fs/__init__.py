"""Level 1: one container's filesystem (spec chapters 1-9).

A stack of read-only layers under one writable layer: what a layer holds at
a path (``entries``, ``layer``), the stack and lookup through it (``stack``),
path resolution (``resolve``), copy-up (``copy_up``), whiteouts and opaque
directories (``whiteouts``), every system call of the trace format as a
value (``calls``) and as a check then an effect (``operations``), sizes as
Docker's overlay2 counts them (``sizes``), overlay features in force
(``features``), and the whole-tree observations a check compares
(``observe``). Ground truth: the Linux kernel's overlayfs.

Imports nothing of ``cowspec.oci``, ``cowspec.store`` or ``cowspec.formats``.
"""
