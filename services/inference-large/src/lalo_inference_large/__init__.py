"""LALO inference-large: big models on vLLM behind the lalo.inference.v1 contract."""
