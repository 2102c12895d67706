"""The CLI's client over TLS: a real HTTPS server (uvicorn, a self-signed certificate made
by the test with the openssl CLI) on 127.0.0.1, trusted through SSL_CERT_FILE."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from corral import errors
from corral.api.errors import install
from corral.client import Client
from corral.settings import load_settings
from tests.serve_thread import serve_in_thread

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    where = tmp_path_factory.mktemp("tls")
    key, crt = where / "key.pem", where / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return key, crt


def _app() -> FastAPI:
    app = FastAPI()
    install(app)

    @app.get("/healthz")
    async def healthz():
        return {"ok": True}

    @app.get("/api/v1/busy")
    async def busy():
        raise errors.Busy("no instance can be evicted")

    @app.get("/api/v1/events")
    async def events():
        lines = (f"data: {json.dumps({'n': n})}\n\n" for n in range(3))
        return StreamingResponse(lines, media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def https_port(cert):
    key, crt = cert
    with serve_in_thread(_app(), ssl_keyfile=str(key), ssl_certfile=str(crt)) as port:
        yield port


def _client(url: str) -> Client:
    return Client(load_settings(url=url))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_request_over_https_with_ssl_cert_file(https_port, cert, monkeypatch, host):
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[1]))
    client = _client(f"https://{host}:{https_port}")
    assert client.request("GET", "/healthz") == {"ok": True}
    assert client.alive()
    with pytest.raises(errors.Busy) as busy:  # an error answer keeps its class over TLS
        client.request("GET", "/api/v1/busy")
    assert busy.value.exit_code == 13


def test_an_sse_stream_over_https(https_port, cert, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[1]))
    client = _client(f"https://127.0.0.1:{https_port}")
    assert list(client.stream_lines("/api/v1/events")) == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_an_untrusted_certificate_is_one_clear_error(https_port, monkeypatch, tmp_path):
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))  # trust nothing (not even the system)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    client = _client(f"https://127.0.0.1:{https_port}")
    with pytest.raises(errors.TLSError) as bad:
        client.request("GET", "/healthz")
    message = bad.value.message
    assert "\n" not in message and f"127.0.0.1:{https_port}" in message
    assert "not trusted" in message and "SSL_CERT_FILE" in message
    assert bad.value.exit_code == errors.DaemonUnavailable.exit_code
    with pytest.raises(errors.TLSError):
        list(client.stream_lines("/api/v1/events"))
    assert not client.alive()


def test_the_cli_prints_the_certificate_failure_and_exits_7(https_port, tmp_path):
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "corral", "stop", "nothing"],
        env={
            "CORRAL_HOME": str(tmp_path / "home"),
            "CORRAL_URL": f"https://127.0.0.1:{https_port}",
            "SSL_CERT_FILE": str(empty),
            "SSL_CERT_DIR": str(tmp_path),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 7, proc.stderr
    assert proc.stderr.startswith("error: the TLS certificate of 127.0.0.1:")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "home" / "logs" / "daemon.log").exists()  # no daemon started


def test_the_local_token_goes_to_loopback_over_https_and_nowhere_else(tmp_path):
    settings = load_settings(url="https://127.0.0.1:9443")
    settings.ensure_dirs()
    (settings.home / "daemon.token").write_text("local-secret")
    assert _client("https://127.0.0.1:9443")._headers(False)["Authorization"] == (
        "Bearer local-secret"
    )
    assert "Authorization" not in _client("https://corral.example.org")._headers(False)


@pytest.mark.parametrize(
    ("url", "tls", "authority"),
    [
        ("https://corral.example.org", True, "corral.example.org:443"),
        ("https://corral.example.org:8443", True, "corral.example.org:8443"),
        ("http://corral.example.org", False, "corral.example.org:80"),
        ("http://[::1]:9380", False, "[::1]:9380"),
        ("https://[::1]", True, "[::1]:443"),
    ],
)
def test_the_address_of_a_url(url, tls, authority):
    client = _client(url)
    assert (client.tls, client.authority) == (tls, authority)


def test_ssl_is_imported_only_for_https():
    code = (
        "import sys, corral.client as c, corral.settings as s\n"
        "c.Client(s.load_settings(url='http://127.0.0.1:1')).alive(0.2)\n"
        "print('ssl' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_refused_https_connection_stays_refused_for_the_cli_to_say_so():
    from tests.conftest import free_port

    with pytest.raises(ConnectionRefusedError):
        _client(f"https://127.0.0.1:{free_port()}").request("GET", "/healthz")
