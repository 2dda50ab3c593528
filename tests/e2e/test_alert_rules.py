"""The alert rules (deploy/prometheus/alerts.yml) against the services that
they watch: every metric and label a rule's expression names is one that a
running service exports, every rule is well formed and has its entry in
docs/RUNBOOK.md, and promtool accepts the file and its rules behave as they
say on a few made-up series.

What a rule names is read by a small PromQL tokenizer (`references`): the
metric of each selector with the labels of its `{...}` matchers, and the labels
of `by`/`without` (checked against the metrics inside that aggregation) and of
`on`/`ignoring`/`group_left`/`group_right` (against every metric of the rule).
Function names, keywords, numbers, durations in `[...]` and strings are
skipped; a function it does not know (and `label_replace`/`label_join`, whose
new labels it does not follow) is reported rather than guessed. The values of
`method` and `code` matchers are checked too (against the protos' methods and
gRPC's status codes): a typo there would make a rule match nothing.

A histogram is exported as its `_bucket` (with `le`), `_count` and `_sum`
series, and is checked as such. A counter with labels has no series until it
is first counted, so the traffic below makes each one a rule names (a scan, a
shed scan, a board rebuild) before the scrape. The one series no service
exports is `up`, which Prometheus writes itself for each target
(`PROMETHEUS_SERIES`).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.hunts import create_hunt, spots
from tests.support.polling import eventually
from tests.support.scans import request, unique
from tests.support.services import scrape_metrics
from tests.support.stack import CLIENT, Stack
from treasure.geo.v1 import geo_pb2
from treasure.leaderboard.v1 import leaderboard_pb2
from treasure.scan.v1 import scan_pb2
from treasure.score.v1 import score_pb2

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RUNBOOK = REPO / "docs" / "RUNBOOK.md"
RUNBOOK_URL = "docs/RUNBOOK.md#"

#: Series that Prometheus writes itself for each target, with their labels.
#: Nothing else is taken as exported without a service exporting it.
PROMETHEUS_SERIES = {"up": frozenset({"job", "instance"})}

SEVERITIES = {"critical", "warning"}
_RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
_DURATION = re.compile(r"^(?:\d+(?:ms|[smhdwy]))+$")

# -- PromQL, as far as the rules need it ---------------------------------------

AGGREGATIONS = frozenset(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile "
    "limitk limit_ratio".split()
)
FUNCTIONS = frozenset(
    "abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil "
    "changes clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week "
    "day_of_year days_in_month deg delta deriv double_exponential_smoothing end exp floor "
    "histogram_avg histogram_count histogram_fraction histogram_quantile histogram_stddev "
    "histogram_stdvar histogram_sum holt_winters hour idelta increase irate "
    "last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute month "
    "pi predict_linear present_over_time quantile_over_time rad rate resets round scalar "
    "sgn sin sinh sort sort_by_label sort_by_label_desc sort_desc sqrt start "
    "stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp vector year".split()
)
#: Functions that make labels of their own: the checker would have to follow them.
LABEL_MAKERS = frozenset({"label_replace", "label_join"})
KEYWORDS = frozenset(
    "by without on ignoring group_left group_right bool and or unless offset atan2".split()
)
_MATCH_OPS = frozenset({"=", "!=", "=~", "!~"})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
                (?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^=<>@,(){}\[\]])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str  # string, number, ident or op
    text: str


def tokenize(expr: str) -> list[Token]:
    tokens: list[Token] = []
    at = 0
    while at < len(expr):
        match = _TOKEN.match(expr, at)
        if match is None:
            raise ValueError(f"cannot read {expr[at : at + 20]!r} (offset {at})")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(Token(kind, match.group()))
        at = match.end()
    return tokens


@dataclass(frozen=True)
class Selector:
    metric: str
    #: (label, operator, value) of each matcher in its braces.
    matchers: tuple[tuple[str, str, str], ...]
    at: int  # token index


@dataclass(frozen=True)
class Grouping:
    clause: str
    labels: tuple[str, ...]
    #: Token indices of the aggregation's argument; None: the whole expression.
    scope: tuple[int, int] | None


@dataclass
class References:
    selectors: list[Selector] = field(default_factory=list)
    groupings: list[Grouping] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _pairs(tokens: list[Token]) -> dict[int, int]:
    """Index of each bracket's partner, both ways."""
    closing = {")": "(", "]": "[", "}": "{"}
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for i, token in enumerate(tokens):
        if token.kind != "op":
            continue
        if token.text in "([{":
            stack.append(i)
        elif token.text in closing:
            if not stack or tokens[stack[-1]].text != closing[token.text]:
                raise ValueError(f"unbalanced {token.text!r}")
            opened = stack.pop()
            pairs[opened], pairs[i] = i, opened
    if stack:
        raise ValueError(f"unclosed {tokens[stack[-1]].text!r}")
    return pairs


def _unquote(text: str) -> str:
    return text[1:-1]


def _label_list(tokens: list[Token], open_at: int, pairs: dict[int, int]) -> tuple[str, ...]:
    if open_at >= len(tokens) or tokens[open_at].text != "(":
        raise ValueError("a label list must follow in parentheses")
    inside = tokens[open_at + 1 : pairs[open_at]]
    names = [t.text if t.kind == "ident" else _unquote(t.text) for t in inside if t.text != ","]
    if any(t.kind not in ("ident", "string") for t in inside if t.text != ","):
        raise ValueError(f"not a label list: {' '.join(t.text for t in inside)}")
    return tuple(names)


def _matchers(tokens: list[Token], open_at: int, close_at: int) -> list[tuple[str, str, str]]:
    inside = tokens[open_at + 1 : close_at]
    found = []
    i = 0
    while i < len(inside):
        if i + 2 >= len(inside):
            raise ValueError(f"a matcher cut short: {' '.join(t.text for t in inside[i:])}")
        label, op, value = inside[i : i + 3]
        if label.kind not in ("ident", "string") or op.text not in _MATCH_OPS:
            raise ValueError(f"not a matcher: {label.text} {op.text} {value.text}")
        if value.kind != "string":
            raise ValueError(f"a matcher's value must be a string: {value.text}")
        name = label.text if label.kind == "ident" else _unquote(label.text)
        found.append((name, op.text, _unquote(value.text)))
        i += 3
        if i < len(inside):
            if inside[i].text != ",":
                raise ValueError(f"expected ',' between matchers, got {inside[i].text}")
            i += 1
    return found


def references(expr: str) -> References:
    """The metrics and labels `expr` names (module docstring)."""
    refs = References()
    try:
        tokens = tokenize(expr)
        pairs = _pairs(tokens)
    except ValueError as exc:
        refs.problems.append(f"cannot read the expression: {exc}")
        return refs
    i = 0
    while i < len(tokens):
        token = tokens[i]
        after = tokens[i + 1].text if i + 1 < len(tokens) else ""
        try:
            if token.text == "[":  # a range or subquery: durations only
                i = pairs[i] + 1
                continue
            if token.text == "{":  # a selector without a name before its braces
                matchers = _matchers(tokens, i, pairs[i])
                names = [v for label, op, v in matchers if label == "__name__" and op == "="]
                if not names:
                    refs.problems.append("a selector with no metric name cannot be checked")
                else:
                    rest = tuple(m for m in matchers if m[0] != "__name__")
                    refs.selectors.append(Selector(names[0], rest, i))
                i = pairs[i] + 1
                continue
            if token.kind != "ident":  # numbers, strings, operators
                i += 1
                continue
            word = token.text
            if word.lower() in ("inf", "nan"):
                i += 1
            elif word in ("by", "without"):
                labels = _label_list(tokens, i + 1, pairs)
                end = pairs[i + 1] + 1
                if i > 0 and tokens[i - 1].text in AGGREGATIONS:  # sum by (x) (...)
                    argument = end
                    if argument >= len(tokens) or tokens[argument].text != "(":
                        raise ValueError(f"no argument after '{word} (...)'")
                elif i > 1 and tokens[i - 1].text == ")":  # sum (...) by (x)
                    argument = pairs[i - 1]
                    if argument == 0 or tokens[argument - 1].text not in AGGREGATIONS:
                        raise ValueError(f"'{word}' follows no aggregation")
                else:
                    raise ValueError(f"'{word}' follows no aggregation")
                refs.groupings.append(Grouping(word, labels, (argument, pairs[argument])))
                i = end
            elif word in ("on", "ignoring") or (word.startswith("group_") and after == "("):
                refs.groupings.append(Grouping(word, _label_list(tokens, i + 1, pairs), None))
                i = pairs[i + 1] + 1
            elif word in KEYWORDS:
                i += 1
            elif word in AGGREGATIONS and after in ("(", "by", "without"):
                i += 1
            elif after == "(":
                if word in LABEL_MAKERS:
                    refs.problems.append(f"{word}() makes labels this check does not follow")
                elif word not in FUNCTIONS:
                    refs.problems.append(f"unknown function {word}()")
                i += 1
            elif after == "{":
                matchers = _matchers(tokens, i + 1, pairs[i + 1])
                refs.selectors.append(Selector(word, tuple(matchers), i))
                i = pairs[i + 1] + 1
            else:
                refs.selectors.append(Selector(word, (), i))
                i += 1
        except ValueError as exc:
            refs.problems.append(f"cannot read the expression near {token.text!r}: {exc}")
            return refs
    return refs


# -- what the services export --------------------------------------------------


@dataclass(frozen=True)
class Exported:
    #: Each series name (as Prometheus stores it: `_bucket`, `_total`, ...) and
    #: the label names seen on it, over every service.
    labels: Mapping[str, frozenset[str]]
    #: Families declared (HELP/TYPE) with no series yet.
    declared: frozenset[str] = frozenset()


def parse_exposition(texts: Iterable[str]) -> Exported:
    labels: dict[str, set[str]] = {}
    declared: set[str] = set()
    for text in texts:
        for family in text_string_to_metric_families(text):
            if not family.samples:
                declared.add(family.name + ("_total" if family.type == "counter" else ""))
            for sample in family.samples:
                labels.setdefault(sample.name, set()).update(sample.labels)
    return Exported({name: frozenset(names) for name, names in labels.items()}, frozenset(declared))


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return answer.read().decode()


def _method_names() -> frozenset[str]:
    """Every RPC of the four services, as `rpc_server_duration_seconds` labels it."""
    return frozenset(
        method.name
        for module in (scan_pb2, score_pb2, leaderboard_pb2, geo_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    )


#: The labels whose values a rule's matchers must get right, and those values.
KNOWN_VALUES = {"code": frozenset(c.name for c in grpc.StatusCode), "method": _method_names()}
_ALTERNATION = re.compile(r"^\w+(?:\|\w+)*$")


def _value_problems(metric: str, label: str, op: str, value: str) -> list[str]:
    known = KNOWN_VALUES.get(label)
    if known is None:
        return []
    if op in ("=~", "!~"):
        if not _ALTERNATION.match(value):
            return [f"{metric}{{{label}{op}{value!r}}}: only a|b|c alternations are checked"]
        values = value.split("|")
    else:
        values = [value]
    return [f"{metric}{{{label}{op}...}}: {v!r} is no {label}" for v in values if v not in known]


def check(alert: str, expr: str, exported: Exported) -> list[str]:
    """What `expr` of rule `alert` names that `exported` lacks, as messages."""
    refs = references(expr)
    problems = list(refs.problems)
    if not refs.selectors and not problems:
        problems.append("names no metric")
    known = {**exported.labels, **PROMETHEUS_SERIES}
    for selector in refs.selectors:
        have = known.get(selector.metric)
        if have is None:
            why = (
                "declared but has no series yet: the test's traffic must make one"
                if selector.metric in exported.declared
                else "no service exports it"
            )
            problems.append(f"metric {selector.metric}: {why}")
            continue
        for label, op, value in selector.matchers:
            if label not in have:
                problems.append(f"{selector.metric} has no label {label!r} (it has {sorted(have)})")
            problems += _value_problems(selector.metric, label, op, value)
    for grouping in refs.groupings:
        inside = [
            s.metric
            for s in refs.selectors
            if grouping.scope is None or grouping.scope[0] < s.at < grouping.scope[1]
        ]
        available = set().union(*(known.get(m, frozenset()) for m in inside))
        for label in grouping.labels:
            if label not in available:
                problems.append(
                    f"{grouping.clause} ({label}): no label {label!r} on {sorted(set(inside))}"
                )
    return [f"{alert}: {problem}" for problem in problems]


# -- the rule file and the runbook ----------------------------------------------


def _rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _runbook_entries() -> dict[str, str]:
    """Anchor -> heading of each entry (`## ` heading) of the runbook."""
    headings = re.findall(r"^## (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {_slug(h): h.strip() for h in headings}


def test_the_rule_file_is_well_formed_and_each_alert_has_its_runbook_entry():
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}, f"top-level keys: {sorted(document)}"
    group_names = [group["name"] for group in document["groups"]]
    assert len(group_names) == len(set(group_names)), f"repeated group names: {group_names}"
    entries = _runbook_entries()
    problems: list[str] = []
    names: list[str] = []
    for group in document["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"], group.get("name")
        for rule in group["rules"]:
            name = rule.get("alert", "")
            names.append(name)
            if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", name):
                problems.append(f"{name or rule}: not an alerting rule with a CamelCase name")
            if set(rule) - _RULE_KEYS:
                problems.append(f"{name}: unexpected keys {sorted(set(rule) - _RULE_KEYS)}")
            if not isinstance(rule.get("expr"), str) or not rule["expr"].strip():
                problems.append(f"{name}: no expr")
            if not _DURATION.match(str(rule.get("for", ""))):
                problems.append(f"{name}: 'for' must be a duration, not {rule.get('for')!r}")
            severity = (rule.get("labels") or {}).get("severity")
            if severity not in SEVERITIES:
                problems.append(f"{name}: labels.severity {severity!r} not in {SEVERITIES}")
            annotations = rule.get("annotations") or {}
            for key in ("summary", "description", "runbook_url"):
                if not str(annotations.get(key, "")).strip():
                    problems.append(f"{name}: no annotations.{key}")
            url = str(annotations.get("runbook_url", ""))
            anchor = url.removeprefix(RUNBOOK_URL)
            if not url.startswith(RUNBOOK_URL) or anchor not in entries:
                problems.append(f"{name}: runbook_url {url!r} is no entry of docs/RUNBOOK.md")
            elif entries[anchor] != name:
                problems.append(f"{name}: runbook_url points to the entry {entries[anchor]!r}")
    assert not problems, "\n".join(problems)
    assert len(names) == len(set(names)), f"repeated alert names: {sorted(names)}"
    orphans = set(entries.values()) - set(names)
    assert not orphans, f"runbook entries without an alert: {sorted(orphans)}"


def _promtool() -> str:
    """promtool on the PATH, or unpacked into the venv by scripts/ensure_system_deps.sh."""
    path = shutil.which("promtool") or shutil.which(
        "promtool", path=str(Path(sys.executable).parent)
    )
    if path is None:
        pytest.fail(
            "promtool is not installed: run scripts/ensure_system_deps.sh "
            "(it unpacks promtool from Debian's prometheus package into .venv/bin)"
        )
    return path


def test_promtool_accepts_the_rules():
    done = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout, done.stdout


# Made-up series over time (promtool's notation: start+step x count, one value
# every 15 s). Instances: `a` fails scans with UNAVAILABLE, `b` refuses them
# per player (RESOURCE_EXHAUSTED), `c` sheds; a Redis with maxmemory 0.
_SERIES = {
    'redis_used_memory_bytes{job="score", instance="a"}': "90x40",
    'redis_maxmemory_bytes{job="score", instance="a"}': "100x40",
    'redis_used_memory_bytes{job="geo", instance="b"}': "80x40",
    'redis_maxmemory_bytes{job="geo", instance="b"}': "100x40",
    'redis_used_memory_bytes{job="leaderboard", instance="c"}': "90x40",
    'redis_maxmemory_bytes{job="leaderboard", instance="c"}': "0x40",
    'rpc_server_duration_seconds_count{job="scan", instance="a", method="SubmitScan", code="OK"}': "0+15x80",
    'rpc_server_duration_seconds_count{job="scan", instance="a", method="SubmitScan", code="UNAVAILABLE"}': "0+3x80",
    'rpc_server_duration_seconds_count{job="scan", instance="b", method="SubmitScan", code="OK"}': "0+15x80",
    'rpc_server_duration_seconds_count{job="scan", instance="b", method="SubmitScan", code="RESOURCE_EXHAUSTED"}': "0+15x80",
    'rpc_server_duration_seconds_count{job="scan", instance="c", method="SubmitScan", code="OK"}': "0+15x80",
    'scans_shed_total{job="scan", instance="c", reason="limit"}': "0+30x80",
    'geo_tile_view_age_seconds{job="geo", instance="g"}': "0+15x80",
    'pg_read_replica_configured{job="scan", instance="r"}': "1x40",
    'pg_read_replica_in_use{job="scan", instance="r"}': "1x4 0x36",
    'pg_read_replica_configured{job="geo", instance="n"}': "0x40",
    'pg_read_replica_in_use{job="geo", instance="n"}': "0x40",
}  # fmt: skip
_EXPECTED = [  # (alert, evaluated at, the alerts firing then: their labels)
    ("RedisMemoryHigh", "30s", []),  # above 85%, but not yet for a minute
    ("RedisMemoryHigh", "2m", [{"severity": "critical", "job": "score", "instance": "a"}]),
    ("ScanSubmitErrorRatioHigh", "10m", [
        {"severity": "critical", "job": "scan", "instance": "a", "method": "SubmitScan"},
    ]),
    ("ScanShedding", "15m", [{"severity": "warning", "job": "scan", "instance": "c"}]),
    ("GeoTileViewStale", "12m", []),  # over 600 s since 10 m, not yet for 5 minutes
    ("GeoTileViewStale", "16m", [{"severity": "warning", "job": "geo", "instance": "g"}]),
    ("PgReadReplicaBypassed", "4m", []),  # bypassed since 1 m, not yet for 5 minutes
    # the one with no replica configured never fires
    ("PgReadReplicaBypassed", "7m", [{"severity": "warning", "job": "scan", "instance": "r"}]),
]  # fmt: skip


def test_the_rules_fire_on_what_they_say_and_not_on_the_rest(tmp_path: Path):
    """promtool's rule tests on `_SERIES`: maxmemory 0 never fires, the
    per-player rate limit is no error, a shed is no error but a shed alert.
    The annotations are left out of the copy promtool evaluates (it would
    compare their text; `promtool check rules` has parsed their templates)."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(document))
    unit = {
        "rule_files": [str(rules)],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [{"series": s, "values": v} for s, v in _SERIES.items()],
                "alert_rule_test": [
                    {
                        "alertname": alert,
                        "eval_time": at,
                        "exp_alerts": [{"exp_labels": labels} for labels in firing],
                    }
                    for alert, at, firing in _EXPECTED
                ],
            }
        ],
    }
    tests = tmp_path / "rules_test.yml"
    tests.write_text(yaml.safe_dump(unit))
    done = subprocess.run(
        [_promtool(), "test", "rules", str(tests)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_check_reports_what_no_service_exports():
    """The checker itself, on a made-up exposition: names right, then each
    kind of mistake it must catch."""
    exported = parse_exposition(
        [
            "# TYPE rpc_server_duration_seconds histogram\n"
            'rpc_server_duration_seconds_bucket{method="SubmitScan",code="OK",le="+Inf"} 1\n'
            'rpc_server_duration_seconds_count{method="SubmitScan",code="OK"} 1\n'
            'rpc_server_duration_seconds_sum{method="SubmitScan",code="OK"} 0.1\n'
            "# TYPE scans_shed_total counter\n",
            "# TYPE redis_used_memory_bytes gauge\nredis_used_memory_bytes 5\n",
        ]
    )
    good = (
        'histogram_quantile(0.99, sum without (code) (rate(rpc_server_duration_seconds_bucket{method="SubmitScan"}[5m]))) > 0.25\n'
        "and on (method) sum by (method) (rate(rpc_server_duration_seconds_count[5m] offset 1h)) > 0.5\n"
        "or up == 0 or redis_used_memory_bytes > Inf"
    )  # fmt: skip
    assert check("Good", good, exported) == []
    wrong = {
        "rate(rpc_server_duration_seconds_totl[5m]) > 1": "no service exports it",
        "rate(scans_shed_total[5m]) > 1": "declared but has no series yet",
        'rpc_server_duration_seconds_count{methd="SubmitScan"}': "no label 'methd'",
        'rpc_server_duration_seconds_count{method="SubmitScans"}': "'SubmitScans' is no method",
        'rpc_server_duration_seconds_count{code=~"OK|UNAVAILBLE"}': "'UNAVAILBLE' is no code",
        "sum by (le) (rpc_server_duration_seconds_count)": "no label 'le'",
        "sum(rpc_server_duration_seconds_bucket) by (job)": "no label 'job'",
        "redis_used_memory_bytes / on (method) up": "no label 'method'",
        "rat(redis_used_memory_bytes[5m])": "unknown function rat()",
        'label_replace(up, "x", "$1", "job", "(.*)")': "makes labels",
        "sum by (code (up)": "cannot read the expression",
        "0.85": "names no metric",
    }
    for expr, why in wrong.items():
        found = check("Wrong", expr, exported)
        assert any(why in problem for problem in found), (expr, found)


# -- against the running services -------------------------------------------------


async def _traffic(stack: Stack) -> None:
    """A scan end to end (SubmitScan, CheckIn, Unlock, SubmitScores and the
    board's first build), then scans with a deadline too short to take until
    one is shed, so that each labelled series a rule names exists."""
    hunt_id = unique("alerts")
    cps = spots(hunt_id, 2)
    await create_hunt(stack.geo(), hunt_id, cps)
    scan = stack.scan()
    at = datetime.now(UTC)
    reply = await scan.SubmitScan(request(unique("p"), hunt_id, cps[0], at=at), metadata=CLIENT)
    assert reply.outcome == scan_pb2.SCAN_OUTCOME_UNLOCKED
    board = stack.metrics_ports["leaderboard"]
    await eventually(
        lambda: asyncio.to_thread(scrape_metrics, board),
        until=lambda m: m.get('leaderboard_rebuilds_total{outcome="ok"}', 0) >= 1,
        what="the leaderboard to build the hunt's board from the outbox's first submit",
    )

    async def hurried() -> dict[str, float]:
        # The scan just made set the admission baseline (its latency); no scan
        # takes 1 ms (a Postgres write and two peer calls), and the 1 ms call
        # still reaches the gate in time (measured: at 0.5 ms too).
        try:
            await scan.SubmitScan(
                request(unique("hurried"), hunt_id, cps[1], at=at), metadata=CLIENT, timeout=0.001
            )
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
        return await asyncio.to_thread(scrape_metrics, stack.metrics_ports["scan"])

    await eventually(
        hurried,
        until=lambda m: m.get('scans_shed_total{reason="deadline"}', 0) >= 1,
        interval_s=0.1,
        what="a scan with a 1 ms deadline to be shed (reason deadline)",
    )


async def test_every_rule_names_only_metrics_and_labels_the_services_export(stack: Stack):
    await _traffic(stack)
    texts = [await asyncio.to_thread(_scrape, port) for port in stack.metrics_ports.values()]
    exported = parse_exposition(texts)
    assert "rpc_server_duration_seconds_bucket" in exported.labels, "the scrape found no RPCs"
    problems = [p for rule in _rules() for p in check(rule["alert"], rule["expr"], exported)]
    assert not problems, "rules naming what no service exports:\n" + "\n".join(problems)
