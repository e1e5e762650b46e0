"""Readers of weight-file headers (GGUF, safetensors) shared by plan (model facts) and bundle (pack-time checks)."""
