"""airlock: take large language models into air-gapped sites and serve them there, verified."""

__version__ = "0.1.0"
