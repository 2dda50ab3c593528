"""Operator tools: the local stack (`make up`/`make down`) and `huntctl`.
Imports libs first: it sets gRPC's I/O default before grpc loads (see
libs/__init__.py)."""

import libs  # noqa: F401
