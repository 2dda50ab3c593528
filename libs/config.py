"""Settings from the environment, read into frozen dataclasses.

`Env` collects every missing or invalid setting before failing, so one start
names all of them at once. `ServiceSettings` holds what every service reads
the same way (listen addresses, tokens, TLS, telemetry, shutdown grace).
Only a service's `config.py` (and `__main__.py`) call these.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias, cast

_REQUIRED = object()


class ConfigError(Exception):
    """One or more settings are missing or invalid; the message names each."""


# The builtins, for annotations inside Env, whose methods are named after them.
_Str: TypeAlias = str
_Int: TypeAlias = int
_Float: TypeAlias = float
_Bool: TypeAlias = bool


class Env:
    """Typed reads of settings that remember every problem until `finish()`."""

    def __init__(self, environ: Mapping[_Str, _Str]) -> None:
        self._environ = environ
        self._problems: list[str] = []

    def _raw(self, name: _Str, default: object) -> _Str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            if default is _REQUIRED:
                self._problems.append(f"{name} is required but not set")
            return None
        return value.strip()

    def str(self, name: _Str, default: object = _REQUIRED) -> _Str:
        value = self._raw(name, default)
        if value is None:
            return "" if default is _REQUIRED else str(default)
        return value

    def int(
        self,
        name: _Str,
        default: object = _REQUIRED,
        *,
        min: _Int | None = None,
        max: _Int | None = None,
    ) -> _Int:
        value = self._raw(name, default)
        if value is None:
            return 0 if default is _REQUIRED else int(cast(_Int, default))
        try:
            number = int(value)
        except ValueError:
            self._problems.append(f"{name} must be an integer, got {value!r}")
            return 0
        self._check_range(name, number, min, max)
        return number

    def float(
        self,
        name: _Str,
        default: object = _REQUIRED,
        *,
        min: _Float | None = None,
        max: _Float | None = None,
    ) -> _Float:
        value = self._raw(name, default)
        if value is None:
            return 0.0 if default is _REQUIRED else float(cast(_Float, default))
        try:
            number = float(value)
        except ValueError:
            self._problems.append(f"{name} must be a number, got {value!r}")
            return 0.0
        if not math.isfinite(number):
            self._problems.append(f"{name} must be finite, got {value!r}")
            return 0.0
        self._check_range(name, number, min, max)
        return number

    def bool(self, name: _Str, default: _Bool) -> _Bool:
        value = self._raw(name, default)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        self._problems.append(f"{name} must be true or false, got {value!r}")
        return default

    def list(self, name: _Str) -> tuple[_Str, ...]:
        """A comma-separated list; empty when unset."""
        value = self._raw(name, "")
        if value is None:
            return ()
        return tuple(item.strip() for item in value.split(",") if item.strip())

    def target(self, name: _Str) -> _Str:
        """A peer's address as a gRPC channel target (`peer_target`): one
        `host:port`, several IP `host:port`s separated by commas (replicas),
        or a gRPC target with its scheme, such as `dns:///geo.hunt.svc:50054`."""
        value = self._raw(name, _REQUIRED)
        if value is None:
            return ""
        try:
            return peer_target(value)
        except ValueError as exc:
            self._problems.append(f"{name}: {exc}")
            return ""

    def _check_range(
        self, name: _Str, number: _Float, low: _Float | None, high: _Float | None
    ) -> None:
        if low is not None and number < low:
            self._problems.append(f"{name} must be >= {low}, got {number}")
        if high is not None and number > high:
            self._problems.append(f"{name} must be <= {high}, got {number}")

    def problem(self, message: _Str) -> None:
        """Records a problem found by a check across settings."""
        self._problems.append(message)

    def finish(self) -> None:
        """Raises ConfigError naming every problem seen, if any."""
        if self._problems:
            lines = "\n".join(f"  - {p}" for p in self._problems)
            raise ConfigError(f"invalid configuration:\n{lines}")


_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")


def peer_target(addresses: _Str) -> _Str:
    """The gRPC target of a `<PEER>_SERVICE_ADDR`. A list of replicas
    (`10.0.0.1:50054,10.0.0.2:50054`) becomes gRPC's `ipv4:` (or `ipv6:`)
    list, which the channel balances round robin; gRPC lists take IP
    addresses only, so a host name in a list is refused (one name that
    resolves to every replica is `dns:///name:port`)."""
    value = addresses.strip()
    if value.startswith(_SCHEMES):
        return value
    parts = [part.strip() for part in value.split(",")]
    if any(not part for part in parts):
        raise ValueError(f"an empty address in {value!r}")
    if len(parts) == 1:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port, got {value!r}")
        return value
    families = {_ip_family(part) for part in parts}
    if len(families) != 1:
        raise ValueError(f"a list mixes IPv4 and IPv6 addresses: {value!r}")
    return f"{families.pop()}:{','.join(parts)}"


def _ip_family(address: _Str) -> _Str:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"expected ip:port, got {address!r}")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(
            f"a list of replicas takes IP addresses ({address!r} is not one); "
            "for a name that resolves to every replica use dns:///name:port"
        ) from None
    return "ipv4" if ip.version == 4 else "ipv6"


def target_width(target: _Str) -> int:
    """How many replicas a target lists (1 unless an `ipv4:`/`ipv6:` list)."""
    if target.startswith(("ipv4:", "ipv6:")):
        return target.count(",") + 1
    return 1


@dataclass(frozen=True)
class Tokens:
    """Bearer tokens accepted per role, and the one this service presents to peers."""

    client: tuple[str, ...] = ()
    service: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()
    peer: str = ""

    def __repr__(self) -> str:  # never print a token
        return (
            f"Tokens(client={len(self.client)}, service={len(self.service)}, "
            f"admin={len(self.admin)}, peer={'set' if self.peer else 'unset'})"
        )


@dataclass(frozen=True)
class TlsSettings:
    """Certificate files. Server TLS when cert and key are set; mTLS when
    client_ca_file is set too. ca_file verifies the peers this service calls."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    ca_file: str = ""

    @property
    def server_enabled(self) -> bool:
        return bool(self.cert_file and self.key_file)

    @property
    def client_enabled(self) -> bool:
        return bool(self.ca_file)


@dataclass(frozen=True)
class ReadReplica:
    """`<SVC>_PG_READ_DSN`: a streaming standby of the service's Postgres for
    the reads that tolerate bounded staleness (libs.pgreads); "" for none.
    `<SVC>_PG_READ_MAX_LAG_S`: over this replay lag the reads go to the primary."""

    dsn: str = ""
    max_lag_s: float = 1.0

    @classmethod
    def read(cls, env: Env, prefix: _Str) -> ReadReplica:
        return cls(
            dsn=env.str(f"{prefix}_PG_READ_DSN", ""),
            max_lag_s=env.float(f"{prefix}_PG_READ_MAX_LAG_S", 1.0, min=0.0, max=3600),
        )


@dataclass(frozen=True)
class ServiceSettings:
    """What every service reads the same way. `prefix` is e.g. "SCAN"."""

    grpc_listen: str
    metrics_listen: str
    tokens: Tokens
    tls: TlsSettings
    otlp_endpoint: str
    shutdown_grace_s: float
    startup_timeout_s: float
    max_message_bytes: int
    log_level: str
    #: OTEL_TRACES_SAMPLER as set ("" when unset); the OTel SDK reads its value.
    traces_sampler: str = ""
    #: How long the warm-up before SERVING may take (libs.server); 0: none.
    warmup_timeout_s: float = 20.0
    #: `<SVC>_GRPC_MAX_PENDING`: calls gRPC's core holds for the process
    #: before a handler takes them (libs.server); past it, and surely past
    #: twice it, core drops new calls unread (CANCELLED); 0: gRPC's default.
    grpc_max_pending: int = 0
    #: `GRPC_ACCEPTORS`: requests for new calls kept outstanding in gRPC's
    #: core per method besides grpc.aio's own one (libs.acceptors); 0: its alone.
    grpc_acceptors: int = 8

    @classmethod
    def read(cls, env: Env, prefix: str, grpc_port: int, metrics_port: int) -> ServiceSettings:
        tls = TlsSettings(
            cert_file=env.str("TLS_CERT_FILE", ""),
            key_file=env.str("TLS_KEY_FILE", ""),
            client_ca_file=env.str("TLS_CLIENT_CA_FILE", ""),
            ca_file=env.str("TLS_CA_FILE", ""),
        )
        if bool(tls.cert_file) != bool(tls.key_file):
            env.problem("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
        if tls.client_ca_file and not tls.server_enabled:
            env.problem("TLS_CLIENT_CA_FILE (mTLS) needs TLS_CERT_FILE and TLS_KEY_FILE")
        return cls(
            grpc_listen=env.str(f"{prefix}_GRPC_LISTEN", f"127.0.0.1:{grpc_port}"),
            metrics_listen=env.str(f"{prefix}_METRICS_LISTEN", f"127.0.0.1:{metrics_port}"),
            tokens=Tokens(
                client=env.list("AUTH_CLIENT_TOKENS"),
                service=env.list("AUTH_SERVICE_TOKENS"),
                admin=env.list("AUTH_ADMIN_TOKENS"),
                peer=env.str("AUTH_PEER_TOKEN", ""),
            ),
            tls=tls,
            otlp_endpoint=env.str("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            shutdown_grace_s=env.float("SHUTDOWN_GRACE_S", 10.0, min=0, max=600),
            startup_timeout_s=env.float("STARTUP_TIMEOUT_S", 60.0, min=0, max=3600),
            max_message_bytes=env.int("GRPC_MAX_MESSAGE_BYTES", 1 << 20, min=4096, max=64 << 20),
            log_level=env.str("LOG_LEVEL", "INFO").upper(),
            traces_sampler=env.str("OTEL_TRACES_SAMPLER", ""),
            warmup_timeout_s=env.float("WARMUP_TIMEOUT_S", 20.0, min=0, max=3600),
            grpc_max_pending=env.int(f"{prefix}_GRPC_MAX_PENDING", 0, min=0, max=100_000),
            grpc_acceptors=env.int("GRPC_ACCEPTORS", 8, min=0, max=256),
        )

    def require_peer_token(self, env: Env) -> None:
        """For services that call others: the token they present must be set."""
        if not self.tokens.peer:
            env.problem(
                "AUTH_PEER_TOKEN is required but not set (the token this service presents to its peers)"
            )
