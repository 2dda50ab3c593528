import pytest

from libs.config import ConfigError, Env, peer_target, target_width
from services.geo.config import GeoConfig
from services.leaderboard.config import LeaderboardConfig
from services.scan.config import ScanConfig
from services.score.config import ScoreConfig


def test_every_missing_setting_is_named_at_once():
    with pytest.raises(ConfigError) as err:
        ScanConfig.from_env({})
    message = str(err.value)
    for name in (
        "SCAN_PG_DSN",
        "SCAN_REDIS_URL",
        "GEO_SERVICE_ADDR",
        "SCORE_SERVICE_ADDR",
        "AUTH_PEER_TOKEN",
    ):
        assert name in message


@pytest.mark.parametrize(
    ("config", "required"),
    [
        (
            ScoreConfig,
            ("SCORE_PG_DSN", "SCORE_REDIS_URL", "LEADERBOARD_SERVICE_ADDR", "GEO_SERVICE_ADDR"),
        ),
        (LeaderboardConfig, ("LEADERBOARD_REDIS_URL", "SCORE_SERVICE_ADDR", "GEO_SERVICE_ADDR")),
        (GeoConfig, ("GEO_PG_DSN", "GEO_REDIS_URL")),
    ],
)
def test_each_service_names_its_required_settings(config, required):
    with pytest.raises(ConfigError) as err:
        config.from_env({})
    for name in required:
        assert name in str(err.value)


def test_invalid_values_are_named():
    env = {
        "GEO_PG_DSN": "postgresql://x/y",
        "GEO_REDIS_URL": "redis://x",
        "SHUTDOWN_GRACE_S": "soon",
        "GRPC_MAX_MESSAGE_BYTES": "12",
        "TLS_CERT_FILE": "/tmp/cert.pem",
    }
    with pytest.raises(ConfigError) as err:
        GeoConfig.from_env(env)
    message = str(err.value)
    assert "SHUTDOWN_GRACE_S must be a number" in message
    assert "GRPC_MAX_MESSAGE_BYTES must be >= 4096" in message
    assert "TLS_CERT_FILE and TLS_KEY_FILE must be set together" in message


def test_defaults_follow_the_design_ports():
    config = GeoConfig.from_env({"GEO_PG_DSN": "postgresql://x/y", "GEO_REDIS_URL": "redis://x"})
    assert config.common.grpc_listen == "127.0.0.1:50054"
    assert config.common.metrics_listen == "127.0.0.1:9104"
    assert config.common.tokens.client == ()  # no default tokens outside the local stack


def test_tokens_never_show_in_repr():
    env = Env({"AUTH_CLIENT_TOKENS": "secret-a,secret-b"})
    from libs.config import ServiceSettings

    settings = ServiceSettings.read(env, "X", 1, 2)
    env.finish()
    assert settings.tokens.client == ("secret-a", "secret-b")
    assert "secret" not in repr(settings)


# -- peer addresses: one, a list of replicas, a gRPC target ----------------------


@pytest.mark.parametrize(
    ("given", "target"),
    [
        ("127.0.0.1:50054", "127.0.0.1:50054"),
        ("geo.hunt.svc:50054", "geo.hunt.svc:50054"),
        ("10.0.0.1:50054, 10.0.0.2:50054", "ipv4:10.0.0.1:50054,10.0.0.2:50054"),
        ("[::1]:50054,[::1]:50064", "ipv6:[::1]:50054,[::1]:50064"),
        ("dns:///geo.hunt.svc.cluster.local:50054", "dns:///geo.hunt.svc.cluster.local:50054"),
        ("ipv4:10.0.0.1:1,10.0.0.2:1", "ipv4:10.0.0.1:1,10.0.0.2:1"),
    ],
)
def test_a_peer_address_becomes_a_grpc_target(given: str, target: str):
    assert peer_target(given) == target


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("geo-1:50054,geo-2:50054", "dns:///name:port"),
        ("10.0.0.1:50054,[::1]:50054", "mixes IPv4 and IPv6"),
        ("10.0.0.1:50054,", "empty address"),
        ("10.0.0.1", "host:port"),
        ("10.0.0.1:x,10.0.0.2:1", "ip:port"),
    ],
)
def test_a_bad_peer_address_is_refused_at_start_naming_the_setting(given: str, says: str):
    env = Env({"GEO_SERVICE_ADDR": given})
    env.target("GEO_SERVICE_ADDR")
    with pytest.raises(ConfigError, match="GEO_SERVICE_ADDR") as refused:
        env.finish()
    assert says in str(refused.value)


def test_a_target_counts_the_replicas_it_lists():
    assert target_width(peer_target("10.0.0.1:1,10.0.0.2:1,10.0.0.3:1")) == 3
    assert target_width(peer_target("127.0.0.1:1")) == 1
    assert target_width("dns:///geo:1") == 1  # resolved by the channel as it opens streams
