"""Built-in tools. Each is a plain class, unit-tested without the network."""
