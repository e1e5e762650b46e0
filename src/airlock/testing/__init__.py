"""Test seams shipped with airlock: a fake OpenAI-compatible engine (a real HTTP server)."""
