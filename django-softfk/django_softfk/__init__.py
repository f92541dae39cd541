"""Django integration for the pg_softfk PostgreSQL extension (soft foreign keys)."""

__version__ = "0.1.0"
