"""What the tests present to services: the local stack's tokens (defined in
tools/stack.py, with the settings services get: tools.stack.stack_env, and
tools.inprocess.service_env for one service on its own) and bearer metadata."""

from __future__ import annotations

from tools.stack import ADMIN_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN

__all__ = ["ADMIN_TOKEN", "CLIENT_TOKEN", "SERVICE_TOKEN", "bearer"]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
