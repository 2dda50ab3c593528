"""Benchmarks (`make bench`). Imports libs first: it sets gRPC's I/O default
before grpc loads (see libs/__init__.py)."""

import libs  # noqa: F401
