"""Plumbing shared by every service: config, telemetry, logging, the gRPC server
bootstrap, auth, error mapping, Redis and Postgres helpers, bounded caches and
test fixtures. No game logic lives here."""
