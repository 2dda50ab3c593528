"""TLS and mutual TLS from certificate files (TLS_* settings), with
certificates this test makes: a CA, a server certificate for 127.0.0.1 and
localhost, and a client certificate. With mTLS on, a client without a valid
certificate is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from libs.channels import open_channel
from libs.config import Env, ServiceSettings
from libs.server import Binding, Runtime
from services.geo.server import MULTIPLEXED, ROLES
from tests.support.env import SERVICE_TOKEN, bearer
from tests.support.fakes import FakeGeo
from tools.inprocess import service_env
from treasure.geo.v1 import geo_pb2, geo_pb2_grpc


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(ca: str, name: str, cwd: Path, san: str, usage: str) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}", cwd=cwd)  # fmt: skip
    (cwd / f"{name}.ext").write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext", cwd=cwd)  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "rogue-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
                 "-days", "2", "-subj", f"/CN={ca}", cwd=folder)  # fmt: skip
    _issue("ca", "server", folder, "IP:127.0.0.1,DNS:localhost", "serverAuth")
    _issue("ca", "client", folder, "DNS:scan.internal", "clientAuth")
    _issue("rogue-ca", "rogue", folder, "DNS:rogue", "clientAuth")
    return folder


def _settings(**tls: str) -> ServiceSettings:
    env = Env(service_env("GEO", **tls))
    settings = ServiceSettings.read(env, "GEO", 0, 0)
    env.finish()
    return settings


async def _serve(settings: ServiceSettings) -> Runtime:
    runtime = Runtime("geo", settings)
    binding = Binding(
        geo_pb2.DESCRIPTOR.services_by_name["GeoService"],
        geo_pb2_grpc.add_GeoServiceServicer_to_server,
        FakeGeo(),
        ROLES,
        multiplexed=MULTIPLEXED,
    )
    await runtime.serve(binding)
    return runtime


async def _check_in(channel: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await geo_pb2_grpc.GeoServiceStub(channel).CheckIn(
            geo_pb2.CheckInRequest(), metadata=bearer(SERVICE_TOKEN), timeout=3
        )
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_tls_server_and_a_client_that_trusts_its_ca(certs: Path):
    runtime = await _serve(
        _settings(TLS_CERT_FILE=str(certs / "server.crt"), TLS_KEY_FILE=str(certs / "server.key"))
    )
    try:
        target = f"127.0.0.1:{runtime.port}"
        async with open_channel(target, _settings(TLS_CA_FILE=str(certs / "ca.crt"))) as channel:
            assert await _check_in(channel) == grpc.StatusCode.OK
        async with grpc.aio.insecure_channel(target) as plain:  # plaintext to a TLS port
            assert await _check_in(plain) == grpc.StatusCode.UNAVAILABLE
        async with open_channel(
            target, _settings(TLS_CA_FILE=str(certs / "rogue-ca.crt"))
        ) as wrong_ca:
            assert await _check_in(wrong_ca) == grpc.StatusCode.UNAVAILABLE
    finally:
        await runtime.close()


async def test_mutual_tls_refuses_a_client_without_a_valid_certificate(certs: Path):
    runtime = await _serve(
        _settings(
            TLS_CERT_FILE=str(certs / "server.crt"),
            TLS_KEY_FILE=str(certs / "server.key"),
            TLS_CLIENT_CA_FILE=str(certs / "ca.crt"),
        )
    )
    try:
        target = f"127.0.0.1:{runtime.port}"
        client = _settings(
            TLS_CA_FILE=str(certs / "ca.crt"),
            TLS_CERT_FILE=str(certs / "client.crt"),
            TLS_KEY_FILE=str(certs / "client.key"),
        )
        async with open_channel(target, client) as channel:
            assert await _check_in(channel) == grpc.StatusCode.OK
        async with open_channel(target, _settings(TLS_CA_FILE=str(certs / "ca.crt"))) as no_cert:
            assert await _check_in(no_cert) == grpc.StatusCode.UNAVAILABLE
        rogue = _settings(
            TLS_CA_FILE=str(certs / "ca.crt"),
            TLS_CERT_FILE=str(certs / "rogue.crt"),
            TLS_KEY_FILE=str(certs / "rogue.key"),
        )
        async with open_channel(target, rogue) as channel:
            assert await _check_in(channel) == grpc.StatusCode.UNAVAILABLE
    finally:
        await runtime.close()
