"""The score service (DESIGN.md, "score")."""
