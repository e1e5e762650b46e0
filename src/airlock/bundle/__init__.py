"""Transfer bundles: ``pack`` on the staging side, ``verify`` and ``install`` on the air-gapped side.

Format: :mod:`airlock.bundle.layout`; the signed contract: :mod:`airlock.bundle.manifest`.
"""
