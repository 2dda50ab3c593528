"""The test suite. Imports libs first: it sets gRPC's I/O default before grpc
loads (see libs/__init__.py), so in-process servers run as the services do."""

import libs  # noqa: F401
