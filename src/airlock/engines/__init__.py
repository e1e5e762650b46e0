"""Engines: child processes (llama-server, vLLM) or remote URLs that serve models behind the gateway."""
