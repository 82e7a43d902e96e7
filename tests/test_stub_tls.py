"""The backend over TLS (``--tls-cert``/``--tls-key``): https + wss, and its option checks."""

from __future__ import annotations

import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from agentws.protocol import WS_PATH, T
from server_stub.process import ROOT
from tests.conftest import FAST
from tests.stubclient import Clients, run


def tls_args(tls_cert) -> tuple[str, ...]:
    cert, key = tls_cert
    return ("--tls-cert", cert, "--tls-key", key)


def test_hello_welcome_and_a_turn_over_wss(stub_factory, tls_cert, user):
    stub = stub_factory(*FAST, *tls_args(tls_cert), cafile=tls_cert[0])
    assert stub.url.startswith("https://127.0.0.1:") and stub.port == int(stub.url.rsplit(":", 1)[1])
    assert stub.ws_url == stub.url.replace("https://", "wss://") + WS_PATH

    async def body():
        async with Clients(stub) as clients:
            client = await clients.session(user)
            assert client.welcome["resumed"] is False
            _, chunks, done = await client.reply("c1")
            assert len(chunks) == 5 and done["t"] == T.DONE
            again = await clients.resume(user, client)
            assert again.welcome["resumed"] is True and again.welcome["session"] == client.welcome["session"]

    run(body())
    assert stub.token(user)  # StubProcess's own https calls trust the given cafile
    assert stub.stats()["connections"] >= 0


def test_a_client_that_does_not_trust_the_cert_is_refused(stub_factory, tls_cert):
    stub = stub_factory(*tls_args(tls_cert), "--store", "memory")
    with pytest.raises(urllib.error.URLError) as caught:
        urllib.request.urlopen(f"{stub.url}/stats", timeout=5, context=ssl.create_default_context())
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)
    # and plain http to the TLS port gets no answer a client could mistake for the backend's
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{stub.port}/stats", timeout=5)


def _server_stub(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server_stub", "--store", "memory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )


@pytest.mark.parametrize(
    "which, message",
    [
        ("cert-only", "--tls-cert and --tls-key must be given together"),
        ("key-only", "--tls-cert and --tls-key must be given together"),
        ("missing-cert", "argument --tls-cert: cannot read"),
        ("missing-key", "argument --tls-key: cannot read"),
        ("key-is-not-a-key", "cannot load --tls-cert/--tls-key"),
    ],
)
def test_bad_tls_options_are_refused_naming_the_option(tmp_path, tls_cert, which, message):
    cert, key = tls_cert
    missing = str(tmp_path / "nope.pem")
    args = {
        "cert-only": ["--tls-cert", cert],
        "key-only": ["--tls-key", key],
        "missing-cert": ["--tls-cert", missing, "--tls-key", key],
        "missing-key": ["--tls-cert", cert, "--tls-key", missing],
        "key-is-not-a-key": ["--tls-cert", cert, "--tls-key", cert],  # readable, but no private key in it
    }[which]
    done = _server_stub(*args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and done.stdout == ""
