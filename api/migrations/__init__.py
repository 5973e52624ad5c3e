"""Versioned schema migrations (alembic), applied by ``smsgw migrate``."""
