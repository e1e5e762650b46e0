"""Transfer bundles, grouped by the side each module serves.

* :mod:`airlock.bundle.format`: what both sides share: the on-disk layout, the signed manifest,
  signatures, the reader of a mounted set, zstd frames, the parity scheme, the inventory.
* :mod:`airlock.bundle.staging`: the online side: sources (``sources/``; image sources go there
  too), collect, hashing, volume planning, the writer, compression, parity shares, SBOM, delta, ``pack``.
* :mod:`airlock.bundle.airgap`: the offline side: ``verify``, ``install`` (into the model store,
  :mod:`airlock.store`; registry targets go beside it), commit, ``rebuild``.

``staging`` and ``airgap`` never import each other; both build on ``format``.
"""
