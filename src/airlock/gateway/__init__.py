"""The gateway: one OpenAI-compatible door with API keys, metrics and routing to supervised engines."""
