"""What pack reads: models (Hugging Face, local folders, GGUF files), wheels and plain files.

Each source turns part of the spec into :class:`~airlock.bundle.staging.sources.base.Collected` artifacts:
logical paths and where to read them, before anything is hashed or written.
"""
