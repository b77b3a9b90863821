"""Real implementations, driven: the protocol of each level and the drivers.

``protocol`` says what a filesystem-level driver is (sessions, ops, trees);
``registry`` names the drivers the command line knows; ``kernel_overlay``
is the kernel's overlayfs mounted as Docker's overlay2 mounts it (level 1);
``layer_tools`` asks Docker, umoci and podman to apply layer tars (level 2);
``docker_store`` runs store traces on a private Docker engine (level 3);
``engines`` starts and stops those engines; ``namespace`` keeps every mount
in a private mount namespace; ``runner`` runs a whole trace on a driver.
"""
