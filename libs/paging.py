"""Opaque page tokens: a versioned JSON cursor, base64url-encoded.

A token carries the position after the last item served (a keyset cursor), so
pages stay stable while rows are added. A token that does not decode is
INVALID_ARGUMENT on the `page_token` field.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from libs.errors import InvalidArgument

_VERSION = 1
_MAX_TOKEN_LEN = 1024


def encode(cursor: dict[str, Any]) -> str:
    raw = json.dumps({"v": _VERSION, **cursor}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(
    token: str, *, field: str = "page_token", keys: tuple[str, ...] = ()
) -> dict[str, Any] | None:
    """The cursor of a token, None for an empty token (the first page)."""
    if not token:
        return None
    if len(token) > _MAX_TOKEN_LEN:
        raise InvalidArgument(field, "is not a valid page token")
    try:
        padded = token + "=" * (-len(token) % 4)
        cursor = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument(field, "is not a valid page token") from None
    if (
        not isinstance(cursor, dict)
        or cursor.get("v") != _VERSION
        or any(k not in cursor for k in keys)
    ):
        raise InvalidArgument(field, "is not a valid page token")
    return cursor
