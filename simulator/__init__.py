"""A Jasmin stand-in for demos, tests and benchmarks: ``smsgw simulator``."""
