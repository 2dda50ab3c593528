"""Test support: real servers (Postgres, Redis, our services) for the suite."""
