"""The air-gapped (offline) side of a bundle: ``verify``, ``install`` into the store, ``rebuild`` a volume."""
