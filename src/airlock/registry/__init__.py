"""Image targets on the air-gapped side: an OCI image layout (``oci``), the OCI distribution API for
an internal registry (``push``), and a local docker daemon (``docker_load``).

This package sits at the store's layer: it imports ``common``, ``errors``, ``settings`` and ``formats``
only; ``bundle/airgap`` calls it to place image artifacts.
"""
