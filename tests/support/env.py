"""Settings the tests give services: local tokens, port 0, short timeouts."""

from __future__ import annotations

CLIENT_TOKEN = "local-client-token"
SERVICE_TOKEN = "local-service-token"
ADMIN_TOKEN = "local-admin-token"

TOKENS = {
    "AUTH_CLIENT_TOKENS": CLIENT_TOKEN,
    "AUTH_SERVICE_TOKENS": SERVICE_TOKEN,
    "AUTH_ADMIN_TOKENS": ADMIN_TOKEN,
    "AUTH_PEER_TOKEN": SERVICE_TOKEN,
}


def service_env(prefix: str, **settings: str) -> dict[str, str]:
    """Environment of one service for an in-process or subprocess test run."""
    env = {
        **TOKENS,
        f"{prefix}_GRPC_LISTEN": "127.0.0.1:0",
        f"{prefix}_METRICS_LISTEN": "127.0.0.1:0",
        "SHUTDOWN_GRACE_S": "5",
        "STARTUP_TIMEOUT_S": "10",
    }
    env.update(settings)
    return env


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
