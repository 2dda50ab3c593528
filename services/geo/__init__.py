"""The geo service (docs/ARCHITECTURE.md, "geo")."""
