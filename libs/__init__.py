"""Plumbing shared by every service: config, telemetry, logging, the gRPC server
bootstrap, auth, error mapping, Redis and Postgres helpers and bounded caches.
No game logic lives here, and no local servers (those are in tools/).

Importing this package sets one process-wide default that must be in place
before gRPC loads: gRPC's I/O runs on the aio poller thread (the
`-event_engine_client,-event_engine_listener` experiments) rather than being
handed through the EventEngine's threads to the event loop; what it saves is
in README, "Benchmarks". An operator who sets GRPC_EXPERIMENTS keeps their own
value. Packages whose modules import grpc before libs (bench, tests, tools)
import libs in their `__init__`, so the setting holds wherever the process
starts.
"""

import os

os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client,-event_engine_listener")
