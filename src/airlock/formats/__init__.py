"""Readers of weight-file headers shared by plan (model facts) and bundle (pack-time checks)."""
