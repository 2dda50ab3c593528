"""The geo service (DESIGN.md, "geo")."""
