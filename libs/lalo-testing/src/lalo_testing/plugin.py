"""pytest plugin: fixtures shared by every LALO test suite."""
