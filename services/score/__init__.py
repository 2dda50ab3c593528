"""The score service (docs/ARCHITECTURE.md, "score")."""
