"""The scan service (docs/ARCHITECTURE.md, "scan")."""
