"""Operator and development tools: the local stack (`make up`/`make down`,
tools/stack.py) and the local servers under it (tools/localinfra.py), which
the tests and the benchmarks start too, services in process and servicer
doubles for them (tools/inprocess.py, tools/doubles.py), and `huntctl`.
Imports libs first: it sets gRPC's I/O default before grpc loads (see
libs/__init__.py)."""

import libs  # noqa: F401
