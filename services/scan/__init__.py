"""The scan service (DESIGN.md, "scan")."""
