"""Contract tier: storage and Redis contracts, in-process, against real PostgreSQL, SQLite and Redis."""
