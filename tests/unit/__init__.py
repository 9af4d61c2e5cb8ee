"""Unit tier: pure code, no service and no subprocess; passes with Redis and PostgreSQL stopped."""
