"""deploy/k8s checked against the Kubernetes schemas and against the code.

The base and the local overlay are rendered with `kubectl kustomize` (Debian's
kubernetes-client, which `make deps` installs; it works offline), and every
object is validated strictly (unknown fields are errors) with
kubernetes-validate's bundled schemas. Then each service's manifests are held
to what its code says, each fact derived from the code rather than restated:

- the settings it reads, and which it cannot start without: its config loader
  run on a recording Mapping (libs.config.Env reads only through it);
- its ports: the listen addresses its loader makes of the Deployment's env,
  and its defaults (the ports README's table gives);
- the health names it serves: "" and its proto service's full name
  (libs.server.Runtime sets both), from its `binding`;
- who calls it: the services whose loader reads its `<NAME>_SERVICE_ADDR`,
  the mobile backend when one of its RPCs accepts the client role, operators
  when huntctl calls it, and Prometheus on its metrics port.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import ipaddress
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import asyncpg
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from libs.auth import Role
from libs.config import ConfigError
from services.geo import server as geo_server
from services.geo.config import GeoConfig
from services.leaderboard import server as leaderboard_server
from services.leaderboard.config import LeaderboardConfig
from services.scan import server as scan_server
from services.scan.config import ScanConfig
from services.score import server as score_server
from services.score.config import ScoreConfig
from tests.support.infra import REPO, SERVICES
from tools import huntctl, stack
from tools.localinfra import throwaway_database

K8S = REPO / "deploy" / "k8s"
OVERLAYS = {"base": K8S / "base", "local": K8S / "overlays" / "local"}
#: Schemas to validate against: the oldest and the newest minor release that
#: upstream Kubernetes supports as this is written, both in kubernetes-validate.
KUBERNETES_VERSIONS = ("1.35.0", "1.37.0")
#: The image name the base uses and an overlay replaces (`images:`).
PLACEHOLDER_IMAGE = "treasure-hunt-engine"
NAMESPACE = "treasure"

LOADERS: dict[str, Callable[[Mapping[str, str]], Any]] = {
    "scan": ScanConfig.from_env,
    "score": ScoreConfig.from_env,
    "leaderboard": LeaderboardConfig.from_env,
    "geo": GeoConfig.from_env,
}
SERVERS: dict[str, ModuleType] = {
    "scan": scan_server,
    "score": score_server,
    "leaderboard": leaderboard_server,
    "geo": geo_server,
}
#: Settings a Deployment may set that no config loader reads, with who does.
READ_ELSEWHERE = {
    "GRPC_EXPERIMENTS": "libs/__init__.py, before grpc is imported",
    "OTEL_TRACES_SAMPLER_ARG": "the OpenTelemetry SDK",
}
#: What stands for a secret the base only references (the base has no Secrets).
PLACEHOLDER = "placeholder:1"
#: How Env names a missing setting (libs.config).
_REQUIRED = re.compile(r"^\s*- ([A-Z0-9_]+) is required but not set", re.MULTILINE)


# -- what the code says ---------------------------------------------------------


class Recording(Mapping[str, str]):
    """An environment that remembers every name read from it."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("a config loader listed the environment instead of reading names")

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True)
class Code:
    """What one service's code says about how it runs."""

    name: str
    reads: frozenset[str]
    required: frozenset[str]
    grpc_port: int
    metrics_port: int
    health_names: frozenset[str]
    roles: frozenset[Role]
    #: The services it calls: each one whose `<NAME>_SERVICE_ADDR` it reads.
    peers: frozenset[str]

    def load(self, environ: Mapping[str, str]) -> Any:
        return LOADERS[self.name](environ)


@cache
def code(name: str) -> Code:
    empty = Recording({})
    with pytest.raises(ConfigError) as missing:
        LOADERS[name](empty)
    required = frozenset(_REQUIRED.findall(str(missing.value)))
    given = Recording(dict.fromkeys(required, PLACEHOLDER))
    defaults = LOADERS[name](given).common  # enough to start with
    for setting in required:  # and each of them needed
        with pytest.raises(ConfigError, match=setting):
            LOADERS[name](dict.fromkeys(required - {setting}, PLACEHOLDER))
    reads = frozenset(empty.read | given.read)
    binding = SERVERS[name].binding(mock.Mock())  # the servicer is not needed for its names
    return Code(
        name=name,
        reads=reads,
        required=required,
        grpc_port=_port(defaults.grpc_listen),
        metrics_port=_port(defaults.metrics_listen),
        health_names=frozenset({"", binding.descriptor.full_name}),
        roles=frozenset(role for roles in binding.roles.values() for role in roles),
        peers=frozenset(
            peer for peer in SERVICES if peer != name and f"{peer.upper()}_SERVICE_ADDR" in reads
        ),
    )


def _port(listen: str) -> int:
    return int(listen.rpartition(":")[2])


def _host(listen: str) -> str:
    return listen.rpartition(":")[0]


def migrate_script() -> ModuleType:
    """deploy/k8s/base/migrate.py, the migrations Job's script, as a module."""
    spec = importlib.util.spec_from_file_location("k8s_migrate", K8S / "base" / "migrate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the rendered manifests -----------------------------------------------------


def kubectl() -> str:
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not found:
        pytest.fail(
            "kubectl is not installed: `make deps` installs it (Debian's kubernetes-client, "
            "scripts/ensure_system_deps.sh), or: apt-get install -y kubernetes-client"
        )
    return found


@cache
def render(overlay: str) -> Manifests:
    done = subprocess.run(
        [kubectl(), "kustomize", str(OVERLAYS[overlay])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize {OVERLAYS[overlay]} failed:\n{done.stderr}")
    return Manifests(tuple(obj for obj in yaml.safe_load_all(done.stdout) if obj))


@dataclass(frozen=True)
class Manifests:
    objects: tuple[dict[str, Any], ...]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [obj for obj in self.of(kind) if obj["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
        return found[0]

    def secret(self, name: str, key: str) -> str | None:
        """A Secret's value, None when the Secret or its key is not rendered."""
        for obj in self.of("Secret"):
            if obj["metadata"]["name"] != name:
                continue
            if key in (obj.get("stringData") or {}):
                return str(obj["stringData"][key])
            if key in (obj.get("data") or {}):
                return base64.b64decode(obj["data"][key]).decode()
        return None

    def container(self, kind: str, name: str, container: str | None = None) -> dict[str, Any]:
        containers = self.get(kind, name)["spec"]["template"]["spec"]["containers"]
        found = [c for c in containers if c["name"] == (container or name)]
        assert len(found) == 1, f"{kind} {name} has no container {container or name}"
        return found[0]

    def workloads(self) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] in ("Deployment", "StatefulSet", "Job")]

    def env(self, container: dict[str, Any]) -> dict[str, str]:
        """The container's environment, Secrets resolved (PLACEHOLDER where not rendered)."""
        assert "envFrom" not in container, "envFrom is not understood by this test"
        env: dict[str, str] = {}
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            assert ref is not None, f"{item['name']}: only value and secretKeyRef are understood"
            value = self.secret(ref["name"], ref["key"])
            env[item["name"]] = PLACEHOLDER if value is None else value
        return env


def ports_of(container: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Named container ports: name -> (protocol, number)."""
    return {
        p.get("name", str(p["containerPort"])): (p.get("protocol", "TCP"), p["containerPort"])
        for p in container.get("ports") or []
    }


@pytest.fixture(params=sorted(OVERLAYS))
def manifests(request: pytest.FixtureRequest) -> Manifests:
    return render(request.param)


@pytest.fixture
def local() -> Manifests:
    return render("local")


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector; {} selects everything."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and key in labels and labels[key] in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"].get("labels") or {})


# -- schemas ----------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_against_the_schemas_strictly(
    manifests: Manifests, version: str
) -> None:
    problems = []
    for obj in manifests.objects:
        what = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = "/".join(str(p) for p in err.path)
            problems.append(f"{what}: {where}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError as err:
            problems.append(f"{what}: no schema: {err.message}")
    assert not problems, f"invalid against Kubernetes {version}:\n" + "\n".join(problems)


def test_every_object_lives_in_the_namespace(manifests: Manifests) -> None:
    for obj in manifests.objects:
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == NAMESPACE
        else:
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


# -- each service's objects ----------------------------------------------------------


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_runs_replicated_behind_a_headless_service(
    manifests: Manifests, name: str
) -> None:
    deployment = manifests.get("Deployment", name)
    labels = pod_labels(deployment)
    assert deployment["spec"]["replicas"] >= 2
    assert selects(deployment["spec"]["selector"], labels)

    service = manifests.get("Service", name)
    assert service["spec"].get("clusterIP") == "None", "headless, for client-side balancing"
    assert selects({"matchLabels": service["spec"]["selector"]}, labels)

    budget = manifests.get("PodDisruptionBudget", name)["spec"]
    assert selects(budget["selector"], labels)
    replicas = deployment["spec"]["replicas"]
    kept = (
        replicas - budget["maxUnavailable"]
        if "maxUnavailable" in budget
        else budget["minAvailable"]
    )
    assert 1 <= kept < replicas, "a drain keeps a replica serving, and can go on"

    autoscaler = manifests.get("HorizontalPodAutoscaler", name)
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
    }
    assert autoscaler["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    assert autoscaler["spec"]["maxReplicas"] > autoscaler["spec"]["minReplicas"]
    assert [m["resource"]["name"] for m in autoscaler["spec"]["metrics"]] == ["cpu"]

    resources = manifests.container("Deployment", name)["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(
        resources["limits"]
    ), "the HPA's CPU utilization is a share of the request"


@pytest.mark.parametrize("name", SERVICES)
def test_the_deployment_sets_only_settings_the_service_reads(
    manifests: Manifests, name: str
) -> None:
    service = code(name)
    env = manifests.env(manifests.container("Deployment", name))
    unread = set(env) - service.reads - set(READ_ELSEWHERE)
    assert not unread, f"{name} does not read {sorted(unread)}"
    missing = service.required - set(env)
    assert not missing, f"{name} cannot start without {sorted(missing)}"
    service.load(env)  # every value valid, every cross-setting check passes


@pytest.mark.parametrize("name", SERVICES)
def test_ports_match_what_the_service_listens_on(manifests: Manifests, name: str) -> None:
    service = code(name)
    deployment = manifests.get("Deployment", name)
    container = manifests.container("Deployment", name)
    config = service.load(manifests.env(container)).common
    grpc, metrics = _port(config.grpc_listen), _port(config.metrics_listen)

    for listen in (config.grpc_listen, config.metrics_listen):
        assert _host(listen) not in ("127.0.0.1", "localhost", "::1", "[::1]"), (
            f"{name} listens on {listen}: unreachable from other pods"
        )
    assert (grpc, metrics) == (service.grpc_port, service.metrics_port), (
        "the documented ports (the code's defaults, README's table)"
    )
    assert ports_of(container) == {"grpc": ("TCP", grpc), "metrics": ("TCP", metrics)}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == grpc, probe

    ports = {p["name"]: p for p in manifests.get("Service", name)["spec"]["ports"]}
    assert set(ports) == {"grpc", "metrics"}
    for port_name, number in (("grpc", grpc), ("metrics", metrics)):
        assert ports[port_name]["port"] == number
        assert ports[port_name].get("targetPort", number) in (port_name, number)

    annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
    assert annotations.get("prometheus.io/port") == str(metrics)


@pytest.mark.parametrize("name", SERVICES)
def test_probes_ask_for_health_names_the_service_serves(manifests: Manifests, name: str) -> None:
    container = manifests.container("Deployment", name)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        asked = container[probe]["grpc"].get("service", "")
        assert asked in code(name).health_names, f"{probe} asks for {asked!r}"
    # Readiness asks for the API itself, not only the process.
    assert container["readinessProbe"]["grpc"]["service"] != ""


@pytest.mark.parametrize("name", SERVICES)
def test_peer_addresses_name_each_peers_headless_service(manifests: Manifests, name: str) -> None:
    env = manifests.env(manifests.container("Deployment", name))
    for peer in code(name).peers:
        value = env[f"{peer.upper()}_SERVICE_ADDR"]
        match = re.fullmatch(r"dns:///([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", value)
        assert match, f"{name}: {peer.upper()}_SERVICE_ADDR={value} is not dns:///<svc>.<ns>..."
        service_name, namespace, port = match.group(1), match.group(2), int(match.group(3))
        service = manifests.get("Service", service_name)
        assert service["metadata"]["namespace"] == namespace
        assert service["spec"].get("clusterIP") == "None"
        assert selects(
            {"matchLabels": service["spec"]["selector"]},
            pod_labels(manifests.get("Deployment", peer)),
        ), f"{value} does not lead to {peer}"
        assert port == code(peer).grpc_port


@pytest.mark.parametrize("name", SERVICES)
def test_tokens_and_dsns_come_from_secrets(manifests: Manifests, name: str) -> None:
    container = manifests.container("Deployment", name)
    service = code(name)
    sources = {item["name"]: item for item in container.get("env") or []}
    for setting, item in sources.items():
        if setting.startswith("AUTH_") or setting.endswith(("_PG_DSN", "_PG_READ_DSN")):
            assert "secretKeyRef" in (item.get("valueFrom") or {}), f"{setting} is inlined"
    # A role's tokens are given exactly to the services with RPCs that accept it.
    for role in Role:
        setting = f"AUTH_{role.name}_TOKENS"
        assert (setting in sources) == (role in service.roles), setting
    assert ("AUTH_PEER_TOKEN" in sources) == bool(service.peers)


def test_the_base_holds_no_secret() -> None:
    assert render("base").of("Secret") == []


def test_the_local_overlay_gives_every_secret_referenced(local: Manifests) -> None:
    for workload in local.workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for item in container.get("env") or []:
                ref = (item.get("valueFrom") or {}).get("secretKeyRef")
                if ref is not None:
                    assert local.secret(ref["name"], ref["key"]) is not None, (
                        f"{workload['metadata']['name']}: {item['name']} -> {ref}"
                    )
    # Each service's peer token is one its peers accept for the service role.
    for name in SERVICES:
        token = local.env(local.container("Deployment", name)).get("AUTH_PEER_TOKEN")
        for peer in code(name).peers:
            accepted = local.env(local.container("Deployment", peer))["AUTH_SERVICE_TOKENS"]
            assert token in [t.strip() for t in accepted.split(",")], f"{name} -> {peer}"


def test_the_overlay_sets_the_image() -> None:
    base, local = render("base"), render("local")
    replaced = []
    for workload in base.workloads():
        kind, name = workload["kind"], workload["metadata"]["name"]
        for container in workload["spec"]["template"]["spec"]["containers"]:
            if container["image"] == PLACEHOLDER_IMAGE:
                image = local.container(kind, name, container["name"])["image"]
                assert image != PLACEHOLDER_IMAGE and ":" in image, f"{kind} {name}: {image}"
                replaced.append(name)
    assert set(SERVICES) | {"treasure-migrate"} <= set(replaced), "the services run the image"


# -- Redis ---------------------------------------------------------------------------


def _conf(text: str, directive: str) -> str:
    found = re.search(rf"^{directive}\s+(\S+)", text, re.MULTILINE)
    assert found, f"no {directive} in the config"
    return found.group(1)


def _redis_bytes(value: str) -> int:
    """A redis.conf memory size (`1kb` is 1024 bytes, `1k` 1000)."""
    units = {"": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
    match = re.fullmatch(r"(\d+)([a-z]*)", value.lower())
    assert match and match.group(2) in units, value
    return int(match.group(1)) * units[match.group(2)]


def _quantity_bytes(value: str) -> int:
    """A Kubernetes memory quantity (`1Mi` is 1024**2 bytes, `1M` 1000**2)."""
    units = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    match = re.fullmatch(r"(\d+)([a-zA-Z]*)", value)
    assert match and match.group(2) in units, value
    return int(match.group(1)) * units[match.group(2)]


@pytest.mark.parametrize("name", SERVICES)
def test_the_redis_copies_are_the_pinned_configs(name: str) -> None:
    copy = K8S / "base" / "redis" / f"{name}.conf"
    assert copy.read_text() == (REPO / "services" / name / "redis.conf").read_text(), (
        f"refresh the copy: cp services/{name}/redis.conf {copy.relative_to(REPO)}"
    )


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_has_its_own_redis_from_its_pinned_config(
    manifests: Manifests, name: str
) -> None:
    redis = manifests.get("StatefulSet", f"redis-{name}")
    pod = redis["spec"]["template"]["spec"]
    config_maps = [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v]
    assert len(config_maps) == 1
    pinned = (REPO / "services" / name / "redis.conf").read_text()
    assert manifests.get("ConfigMap", config_maps[0])["data"]["redis.conf"] == pinned
    port = int(_conf(pinned, "port"))

    container = manifests.container("StatefulSet", f"redis-{name}", "redis")
    assert container["command"][:2] == ["redis-server", "/etc/redis/redis.conf"]
    assert ports_of(container) == {"redis": ("TCP", port)}
    assert container["readinessProbe"]["exec"]["command"] == ["redis-cli", "-p", str(port), "ping"]

    service = manifests.get("Service", f"redis-{name}")
    assert service["spec"].get("clusterIP") == "None"
    assert redis["spec"]["serviceName"] == service["metadata"]["name"]
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(redis))
    assert [p["port"] for p in service["spec"]["ports"]] == [port]

    url = manifests.env(manifests.container("Deployment", name))[f"{name.upper()}_REDIS_URL"]
    host = f"redis-{name}.{service['metadata']['namespace']}.svc.cluster.local"
    assert url == f"redis://{host}:{port}/0"

    resources = container["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    limit = _quantity_bytes(resources["limits"]["memory"])
    assert limit >= 1.5 * _redis_bytes(_conf(pinned, "maxmemory")), (
        "the container must hold maxmemory plus fragmentation and buffers (docs/DEPLOY.md)"
    )


# -- NetworkPolicies -----------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A pod (labels, in a namespace with labels) or an address outside the cluster."""

    #: Who it is, for what the code expects: a workload's name, or a caller's.
    caller: str
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Named ports it listens on: name -> (protocol, number).
    ports: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    ip: str = ""

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace}

    def __str__(self) -> str:
        return self.ip or f"{self.caller} ({self.namespace})"


#: The callers from outside, with the labels docs/DEPLOY.md tells them to carry.
MOBILE_BACKEND = Endpoint(
    "mobile-backend", "studio", {"treasure-hunt-engine/role": "mobile-backend"}
)
OPERATOR = Endpoint("huntctl", "ops", {"treasure-hunt-engine/role": "operator"})
OPERATOR_HERE = Endpoint("huntctl", NAMESPACE, {"treasure-hunt-engine/role": "operator"})
PROMETHEUS = Endpoint("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
STRANGERS = (
    Endpoint("stranger", NAMESPACE, {"app": "other"}),
    Endpoint("stranger", "elsewhere", {"app": "other"}),
)
KUBE_DNS = Endpoint("kube-dns", "kube-system", {"k8s-app": "kube-dns"},
                    {"dns": ("UDP", 53), "dns-tcp": ("TCP", 53)})  # fmt: skip
#: Postgres outside the cluster, at an address of TEST-NET-3.
POSTGRES_OUTSIDE = Endpoint("postgres", ports={"postgres": ("TCP", 5432)}, ip="203.0.113.5")

Port = tuple[str, int]


def _peer_matches(peer: Mapping[str, Any], other: Endpoint, namespace: str) -> bool:
    if "ipBlock" in peer:
        if not other.ip:
            return False  # pods are matched by labels here, not by address
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except") or []
        )
    if other.ip:
        return False
    namespaces = peer.get("namespaceSelector")
    in_namespace = (
        other.namespace == namespace
        if namespaces is None
        else selects(namespaces, other.namespace_labels)
    )
    pods = peer.get("podSelector")
    return in_namespace and (pods is None or selects(pods, other.labels))


def _rule_ports(rule: Mapping[str, Any], destination: Endpoint) -> set[Port] | None:
    """The ports of `destination` a rule opens; None: every port."""
    if not rule.get("ports"):
        return None
    opened: set[Port] = set()
    for entry in rule["ports"]:
        protocol, port = entry.get("protocol", "TCP"), entry.get("port")
        if port is None:
            return None
        if isinstance(port, str):
            if port not in destination.ports:
                continue  # a named port this destination does not have
            port = destination.ports[port][1]
        opened |= {(protocol, p) for p in range(port, entry.get("endPort", port) + 1)}
    return opened


def reachable(
    policies: list[dict[str, Any]], direction: str, source: Endpoint, destination: Endpoint
) -> set[Port]:
    """The ports `destination` listens on that one side's policies let
    `source` reach: "Ingress" reads the policies selecting the destination,
    "Egress" those selecting the source (a side no policy selects lets all
    through, as Kubernetes does)."""
    subject, other = (destination, source) if direction == "Ingress" else (source, destination)
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    listening = set(destination.ports.values())
    isolated, opened = False, set()
    for policy in policies:
        namespace, spec = policy["metadata"]["namespace"], policy["spec"]
        if subject.ip or namespace != subject.namespace:
            continue
        if not selects(spec["podSelector"], subject.labels):
            continue
        types = spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]
        if direction not in types:
            continue
        isolated = True
        for rule in spec.get(rules_key) or []:
            peers = rule.get(peers_key)
            if peers and not any(_peer_matches(peer, other, namespace) for peer in peers):
                continue
            ports = _rule_ports(rule, destination)
            if ports is None:
                return listening
            opened |= ports
    return opened & listening if isolated else listening


def pods(manifests: Manifests) -> dict[str, Endpoint]:
    """Every workload's pods, by workload name."""
    found = {}
    for workload in manifests.workloads():
        containers = workload["spec"]["template"]["spec"]["containers"]
        ports = {name: port for c in containers for name, port in ports_of(c).items()}
        name = workload["metadata"]["name"]
        found[name] = Endpoint(name, workload["metadata"]["namespace"], pod_labels(workload), ports)
    return found


def sources(manifests: Manifests) -> list[Endpoint]:
    return [*pods(manifests).values(), MOBILE_BACKEND, OPERATOR, OPERATOR_HERE, PROMETHEUS,
            *STRANGERS]  # fmt: skip


def expected_callers(name: str) -> dict[str, set[str]]:
    """Who the code says calls service `name`, and on which of its ports."""
    callers = {peer: {"grpc"} for peer in SERVICES if name in code(peer).peers}
    if Role.CLIENT in code(name).roles:
        callers["mobile-backend"] = {"grpc"}
    if name in huntctl.DEFAULT_ADDRS:
        callers["huntctl"] = {"grpc"}
    callers["prometheus"] = {"metrics"}
    return callers


def _named(endpoint: Endpoint, names: set[str]) -> set[Port]:
    return {endpoint.ports[name] for name in names}


def test_ingress_names_callers_by_labels_not_addresses(manifests: Manifests) -> None:
    for policy in manifests.of("NetworkPolicy"):
        for rule in policy["spec"].get("ingress") or []:
            for peer in rule.get("from") or []:
                assert "ipBlock" not in peer, policy["metadata"]["name"]


def test_every_pod_is_isolated_both_ways(manifests: Manifests) -> None:
    """What no policy lets in or out is denied: a policy of each type selects each pod."""
    policies = manifests.of("NetworkPolicy")
    for pod in pods(manifests).values():
        for direction in ("Ingress", "Egress"):
            assert any(
                selects(p["spec"]["podSelector"], pod.labels)
                and direction in p["spec"].get("policyTypes", [])
                for p in policies
            ), f"no policy isolates {pod} for {direction}"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_admits_exactly_its_real_callers(manifests: Manifests, name: str) -> None:
    policies = manifests.of("NetworkPolicy")
    target = pods(manifests)[name]
    callers = expected_callers(name)
    wrong = []
    for source in sources(manifests):
        want = _named(target, callers.get(source.caller, set()))
        got = reachable(policies, "Ingress", source, target)
        if got != want:
            wrong.append(f"{source} -> {name}: admits {sorted(got)}, the code says {sorted(want)}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_reaches_what_it_calls_and_nothing_else(
    manifests: Manifests, name: str
) -> None:
    policies = manifests.of("NetworkPolicy")
    everyone = pods(manifests)
    source = everyone[name]
    service = code(name)
    wrong = []

    def expect(destination: Endpoint, want: set[Port]) -> None:
        got = reachable(policies, "Egress", source, destination)
        if got != want:
            wrong.append(f"{name} -> {destination}: reaches {sorted(got)}, needs {sorted(want)}")

    for other in SERVICES:
        if other != name:
            calls = {"grpc"} if other in service.peers else set()
            expect(everyone[other], _named(everyone[other], calls))
    for other in SERVICES:
        redis = everyone[f"redis-{other}"]
        expect(redis, set(redis.ports.values()) if other == name else set())
    expect(KUBE_DNS, set(KUBE_DNS.ports.values()))
    uses_postgres = f"{name.upper()}_PG_DSN" in service.reads
    expect(POSTGRES_OUTSIDE, {("TCP", 5432)} if uses_postgres else set())
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", SERVICES)
def test_each_redis_admits_only_its_service(manifests: Manifests, name: str) -> None:
    policies = manifests.of("NetworkPolicy")
    target = pods(manifests)[f"redis-{name}"]
    for source in sources(manifests):
        want = set(target.ports.values()) if source.caller == name else set()
        assert reachable(policies, "Ingress", source, target) == want, f"{source} -> {target}"


def test_the_migrations_job_and_operators_reach_postgres(manifests: Manifests) -> None:
    policies = manifests.of("NetworkPolicy")
    job = pods(manifests)["treasure-migrate"]
    assert reachable(policies, "Egress", job, POSTGRES_OUTSIDE) == {("TCP", 5432)}
    assert reachable(policies, "Egress", job, KUBE_DNS) == set(KUBE_DNS.ports.values())
    assert reachable(policies, "Egress", OPERATOR_HERE, POSTGRES_OUTSIDE) == {("TCP", 5432)}
    everyone = pods(manifests)
    for name in SERVICES:
        want = {everyone[name].ports["grpc"]} if name in huntctl.DEFAULT_ADDRS else set()
        assert reachable(policies, "Egress", OPERATOR_HERE, everyone[name]) == want, name


def test_the_local_postgres_admits_those_that_use_postgres(local: Manifests) -> None:
    policies = local.of("NetworkPolicy")
    postgres = pods(local)["postgres"]
    users = {name for name in SERVICES if f"{name.upper()}_PG_DSN" in code(name).reads}
    users |= {"treasure-migrate", "huntctl"}
    for source in sources(local):
        want = set(postgres.ports.values()) if source.caller in users else set()
        assert reachable(policies, "Ingress", source, postgres) == want, str(source)


# -- migrations ----------------------------------------------------------------------


def test_the_migrations_job_migrates_each_services_database(manifests: Manifests) -> None:
    script = migrate_script()
    assert set(script.schemas()) == set(stack.WITH_PG), "the services with a schema"
    job = manifests.get("Job", "treasure-migrate")
    container = manifests.container("Job", "treasure-migrate", "migrate")
    env = {item["name"]: item for item in container["env"]}
    assert set(env) == {f"{name.upper()}_PG_DSN" for name in script.schemas()}
    for setting, item in env.items():
        service = setting.removesuffix("_PG_DSN").lower()
        theirs = {i["name"]: i for i in manifests.container("Deployment", service).get("env") or []}
        assert item == theirs[setting], f"the Job migrates the database {service} uses"

    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    command = container["command"]
    assert command[0] == "python" and Path(command[1]).name == "migrate.py"
    config_map = volumes[mounts[str(Path(command[1]).parent)]]["configMap"]["name"]
    shipped = manifests.get("ConfigMap", config_map)["data"]["migrate.py"]
    assert shipped == (K8S / "base" / "migrate.py").read_text()


async def test_the_migrations_script_applies_every_migration_once(pg_admin_dsn: str) -> None:
    script = migrate_script()
    name = f"thtest_k8s_migrate_{os.getpid()}"
    async with throwaway_database(pg_admin_dsn, name) as dsn:
        env = {**os.environ, **{f"{s.upper()}_PG_DSN": dsn for s in script.schemas()}}
        for _ in range(2):  # twice: the second run finds nothing to apply
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(K8S / "base" / "migrate.py"),
                env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode == 0, err.decode()
        assert out.decode().count("nothing (up to date)") == len(script.schemas())
        connection = await asyncpg.connect(dsn)
        try:
            for schema, folder in script.schemas().items():
                applied = await connection.fetch(
                    f"SELECT version FROM {schema}.schema_migrations ORDER BY version"
                )
                files = sorted(int(path.name[:4]) for path in folder.glob("*.sql"))
                assert [row["version"] for row in applied] == files, schema
        finally:
            await connection.close()


def test_the_migrations_script_names_each_missing_setting() -> None:
    with pytest.raises(ConfigError) as missing:
        migrate_script().dsns({})
    for name in stack.WITH_PG:
        assert f"{name.upper()}_PG_DSN is required" in str(missing.value)


# -- docs ----------------------------------------------------------------------------


def test_the_deploy_doc_names_the_labels_callers_carry() -> None:
    doc = (REPO / "docs" / "DEPLOY.md").read_text()
    for caller in (MOBILE_BACKEND, OPERATOR, PROMETHEUS):
        for key, value in caller.labels.items():
            assert f"{key}: {value}" in doc or f"{key}={value}" in doc, (key, value)
