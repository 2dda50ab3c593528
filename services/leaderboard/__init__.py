"""The leaderboard service (docs/ARCHITECTURE.md, "leaderboard")."""
