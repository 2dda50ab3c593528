"""Settings of the scan service, read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from libs.admission import LimitSettings
from libs.config import Env, ReadReplica, ServiceSettings


@dataclass(frozen=True)
class ScanConfig:
    common: ServiceSettings
    pg_dsn: str
    #: The read replica for the reads that tolerate bounded staleness (none by default).
    pg_read: ReadReplica
    redis_url: str
    geo_addr: str
    score_addr: str
    #: Oldest `scanned_at` accepted (devices briefly offline).
    max_scan_age_s: float
    #: Token bucket: `rate_limit` scans per `rate_window_s` per player.
    rate_limit: int
    rate_window_s: float
    #: Above this speed between two scans, a scan is IMPLAUSIBLE_SPEED.
    max_speed_mps: float
    idempotency_ttl_s: int
    geo_timeout_s: float
    score_timeout_s: float
    relay_interval_s: float
    relay_batch: int
    lease_s: float
    #: The most a scan waits on its Redis before going on without it.
    redis_timeout_s: float
    #: New SubmitScan scans this process works on at once, at most; the
    #: admission limit adapts between `min_in_flight` and this (libs.admission).
    max_in_flight: int
    min_in_flight: int
    #: Latency taken as "not queueing", as a multiple of the fastest scans lately.
    admission_tolerance: float
    #: New scans (and answers) sent together in one statement at most (natural
    #: batching; 1: one statement each).
    pg_batch: int
    #: CheckIn and Unlock go as calls on one long-lived stream per peer
    #: (CheckInStream, UnlockStream) rather than one unary call each.
    peer_streams: bool
    #: A scan's location is purged this long after its hunt ends (services.scan.purge).
    location_retention_s: int
    #: How often the location purge looks for rows that are due.
    purge_interval_s: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ScanConfig:
        """Reads every setting; ConfigError names each missing or invalid one."""
        env = Env(environ)
        common = ServiceSettings.read(env, "SCAN", grpc_port=50051, metrics_port=9101)
        common.require_peer_token(env)
        config = cls(
            common=common,
            pg_dsn=env.str("SCAN_PG_DSN"),
            pg_read=ReadReplica.read(env, "SCAN"),
            redis_url=env.str("SCAN_REDIS_URL"),
            geo_addr=env.target("GEO_SERVICE_ADDR"),
            score_addr=env.target("SCORE_SERVICE_ADDR"),
            max_scan_age_s=env.float("SCAN_MAX_SCAN_AGE_S", 600.0, min=1, max=7 * 86400),
            rate_limit=env.int("SCAN_RATE_LIMIT", 5, min=1, max=10_000),
            rate_window_s=env.float("SCAN_RATE_WINDOW_S", 10.0, min=0.001, max=86400),
            max_speed_mps=env.float("SCAN_MAX_SPEED_MPS", 50.0, min=0.1, max=100_000),
            idempotency_ttl_s=env.int("SCAN_IDEMPOTENCY_TTL_S", 86400, min=60, max=30 * 86400),
            geo_timeout_s=env.float("SCAN_GEO_TIMEOUT_S", 1.0, min=0.001, max=60),
            score_timeout_s=env.float("SCAN_SCORE_TIMEOUT_S", 2.0, min=0.001, max=60),
            relay_interval_s=env.float("SCAN_RELAY_INTERVAL_S", 1.0, min=0.01, max=3600),
            relay_batch=env.int("SCAN_RELAY_BATCH", 50, min=1, max=1000),
            lease_s=env.float("SCAN_LEASE_S", 15.0, min=0.1, max=3600),
            redis_timeout_s=env.float("SCAN_REDIS_TIMEOUT_S", 0.25, min=0.001, max=10),
            max_in_flight=env.int("SCAN_MAX_IN_FLIGHT", 64, min=1, max=100_000),
            min_in_flight=env.int("SCAN_MIN_IN_FLIGHT", 4, min=1, max=100_000),
            admission_tolerance=env.float("SCAN_ADMISSION_TOLERANCE", 5.0, min=1.0, max=100.0),
            pg_batch=env.int("SCAN_PG_BATCH", 32, min=1, max=1000),
            peer_streams=env.bool("SCAN_PEER_STREAMS", True),
            location_retention_s=env.int(
                "SCAN_LOCATION_RETENTION_S", 7 * 86400, min=1, max=10 * 365 * 86400
            ),
            purge_interval_s=env.float("SCAN_PURGE_INTERVAL_S", 300.0, min=0.05, max=86400),
        )
        env.finish()
        return config

    def admission(self) -> LimitSettings:
        """The admission limit's settings: between SCAN_MIN_IN_FLIGHT (capped at
        the maximum) and SCAN_MAX_IN_FLIGHT, starting at 16 within them."""
        low = min(self.min_in_flight, self.max_in_flight)
        return LimitSettings(
            min_limit=low,
            max_limit=self.max_in_flight,
            initial=max(low, min(16, self.max_in_flight)),
            tolerance=self.admission_tolerance,
        )
