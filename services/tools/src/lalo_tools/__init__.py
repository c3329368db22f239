"""LALO tools service: a registry of JSON-Schema described tools and their sandboxed execution."""
