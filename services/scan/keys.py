"""Every Redis key of the scan service. All scan state is per player, so every
key carries the `{player_id}` hash tag: the admission script touches the
idempotency answer, the rate bucket and the last position of one player in one
slot. Ids are validated (libs.validate) before they reach these functions, and
checked again here (`key_id`)."""

from __future__ import annotations

from libs.validate import key_id


def idempotency(player_id: str, hunt_id: str, client_scan_id: str) -> str:
    """`scan:idem:{p42}:h7:c-91f3` -> the answer to (player, hunt,
    client_scan_id): a short-lived "pending:<fingerprint>" marker while the
    first copy runs, then the answer and the request's fingerprint (JSON) for
    24 h. Lost on eviction: the Postgres unique key still decides. (Ids hold
    no ':', so the parts cannot run into each other.)"""
    return (
        f"scan:idem:{{{key_id('player_id', player_id)}}}:{key_id('hunt_id', hunt_id)}"
        f":{key_id('client_scan_id', client_scan_id)}"
    )


def rate(player_id: str) -> str:
    """`scan:rate:{p42}` -> hash {tokens, ts_ms}: the player's token bucket."""
    return f"scan:rate:{{{key_id('player_id', player_id)}}}"


def last_scan(player_id: str) -> str:
    """`scan:last:{p42}` -> hash {lat, lon, acc, at (ms)}: where the player's
    last plausible scan was, for the speed check. Falls back to Postgres.
    Expires a day after that scan, or sooner: never later than the location
    retention (services.scan.purge)."""
    return f"scan:last:{{{key_id('player_id', player_id)}}}"
