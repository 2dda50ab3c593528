"""The leaderboard service (DESIGN.md, "leaderboard")."""
