"""LALO inference-small: GGUF models on CPU through llama.cpp with continuous batching."""
