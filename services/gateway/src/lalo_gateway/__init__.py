"""LALO gateway: the public OpenAI-compatible API."""
