"""Test support for LALO: tiny models, fixtures, process helpers."""
