"""A small stdlib HTTP client the CLI uses to talk to the daemon.

Kept free of third-party imports so ``corral ps`` stays fast. When no daemon answers,
:func:`ensure_daemon` starts one in the background (``corral serve``, logging to
``CORRAL_HOME/logs/daemon.log``) and waits for ``/healthz``.

Credentials: CORRAL_API_KEY when set, else the running daemon's local admin token
(``CORRAL_HOME/daemon.token``, rewritten at each daemon start) -- so the CLI on the
daemon's machine keeps working once API keys exist. The token goes to loopback
addresses only (:func:`corral.net.is_loopback`): a CORRAL_URL naming another machine
never receives it.

TLS: an ``https://`` CORRAL_URL (a daemon behind a TLS proxy, or on another machine) is
spoken with the stdlib ``ssl`` module, imported only then: port 443 by default, the
system's trust store with host name checking and SNI (``ssl.create_default_context``),
so ``SSL_CERT_FILE`` points at another CA bundle. A certificate that does not verify is
one line, :class:`~corral.errors.TLSError` (exit 7), never a fall back to plain HTTP.
corral never starts a daemon for an ``https://`` URL: ``corral serve`` speaks plain HTTP, so
such a daemon is somebody else's to run.

Errors: the daemon's ``{"error": {"code", "message", "detail"}}`` becomes the class of
that code (:func:`corral.errors.by_code`, derived from the tree), so the CLI exits with
the code the daemon-side error has.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any, Iterator
from urllib.parse import urlencode, urlsplit

from corral import errors
from corral.net import is_loopback
from corral.settings import TOKEN_FILE, Settings

#: Each error code to its class (cli/hub.py reads it for a pull that failed).
_BY_CODE = errors.by_code()
#: The linked node the CLI's requests are for (``--node NAME``), or None: this daemon.
#: Its ``/api/...`` calls then go to ``/api/v1/nodes/NAME/api/...``, which the daemon
#: relays to that node with the node's key.
NODE: str | None = None


class Client:
    """JSON over HTTP to the daemon at ``settings.daemon_url``."""

    def __init__(self, settings: Settings, timeout: float = 30.0) -> None:
        self.settings = settings
        parts = urlsplit(settings.daemon_url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.tls else 80)
        self.timeout = timeout
        self._tls_context = None  # made on first use: ssl is imported only for https
        self.node = NODE

    def _route(self, path: str) -> str:
        """``path`` on the target node, through this daemon, when there is one."""
        if self.node and path.startswith("/api/"):
            return f"/api/v1/nodes/{self.node}{path}"
        return path

    @property
    def authority(self) -> str:
        """``host:port`` as the Host header writes it (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _headers(self, body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        secret = self.settings.api_key or (
            read_token(self.settings) if is_loopback(self.host) else ""
        )
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        return headers

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request; raise the matching CorralError for an error answer.

        ConnectionRefusedError (no daemon) propagates so callers can start one.
        """
        path = self._route(path)
        if params:
            path += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        status, raw = self._roundtrip(method, path, data, timeout or self.timeout)
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = {"error": {"code": "internal", "message": raw[:200].decode(errors="replace")}}
        if status >= 400:
            raise error_from_answer(status, payload)
        return payload

    def _roundtrip(
        self, method: str, path: str, data: bytes | None, timeout: float
    ) -> tuple[int, bytes]:
        """One HTTP/1.1 exchange over a raw socket (``Connection: close``).

        http.client would cost ~17 ms of imports (ssl, email) on every CLI call.
        """
        headers = self._headers(data is not None)
        headers["Host"] = self.authority
        headers["Connection"] = "close"
        headers["Content-Length"] = str(len(data or b""))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        with self._connect(timeout) as sock:
            sock.sendall(head.encode("latin-1") + b"\r\n" + (data or b""))
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return _parse_response(b"".join(chunks))

    def _connect(self, timeout: float) -> socket.socket:
        """A connected socket to the daemon, TLS-wrapped for an ``https://`` URL."""
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if not self.tls:
            return sock
        try:
            return self._ssl_context().wrap_socket(sock, server_hostname=self.host)
        except OSError as exc:
            sock.close()
            self._raise_tls_failure(exc)
            raise

    def _ssl_context(self):
        if self._tls_context is None:
            import ssl

            self._tls_context = ssl.create_default_context()
        return self._tls_context

    def _raise_tls_failure(self, exc: OSError) -> None:
        """A TLSError naming why for a certificate or handshake failure; other OSErrors
        (refused, reset, timed out) are left to the caller to re-raise, as over HTTP."""
        import ssl

        if isinstance(exc, ssl.SSLCertVerificationError):
            raise errors.TLSError(
                f"the TLS certificate of {self.authority} is not trusted "
                f"({exc.verify_message}); set SSL_CERT_FILE to the CA bundle that signed it"
            ) from exc
        if isinstance(exc, ssl.SSLError):
            raise errors.TLSError(
                f"TLS with {self.authority} failed ({exc.reason or exc})"
            ) from exc

    def stream_lines(self, path: str, params: dict | None = None) -> Iterator[str]:
        """Yield the ``data:`` payloads of an SSE stream, decoded from JSON."""
        import http.client

        path = self._route(path)
        if params:
            path += "?" + urlencode(params)
        if self.tls:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self._ssl_context())
        else:
            conn = http.client.HTTPConnection(self.host, self.port)
        try:
            conn.request("GET", path, headers=self._headers(False))
        except OSError as exc:
            conn.close()
            if self.tls:
                self._raise_tls_failure(exc)
            raise
        resp = conn.getresponse()
        if resp.status >= 400:
            raise error_from_answer(resp.status, json.loads(resp.read() or b"null"))
        try:
            for raw in resp:
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                if line.startswith("data: "):
                    yield json.loads(line[6:])
        finally:
            conn.close()

    def alive(self, timeout: float = 0.5) -> bool:
        try:
            self.request("GET", "/healthz", timeout=timeout)
            return True
        except (OSError, errors.CorralError):
            return False


def read_token(settings: Settings) -> str:
    """The local daemon's admin token, or "" when there is none we may read."""
    try:
        return (settings.home / TOKEN_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _parse_response(raw: bytes) -> tuple[int, bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2) if lines else []
    if not sep or len(parts) < 2 or not parts[1].isdigit():
        raise errors.DaemonUnavailable("the daemon sent a malformed HTTP response")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        headers[key.strip().lower()] = value.strip().lower()
    if headers.get(b"transfer-encoding") == b"chunked":
        body = _dechunk(body)
    return int(parts[1]), body


def _dechunk(body: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            break
        size = int(body[pos:end].split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(body[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2
    return b"".join(out)


def error_from_answer(status: int, payload: Any) -> errors.CorralError:
    """The CorralError an error answer stands for: the class of its code, else one by the
    HTTP status (a proxy's or Starlette's answer without a corral code)."""
    err = (payload or {}).get("error", {}) if isinstance(payload, dict) else {}
    cls = _BY_CODE.get(err.get("code", ""))
    if cls is None:
        cls = {
            404: errors.NotFound,
            409: errors.Conflict,
            400: errors.UsageError,
            401: errors.UsageError,
            403: errors.UsageError,
            415: errors.UsageError,
            422: errors.UsageError,
        }.get(status, errors.CorralError)
    message = err.get("message") or f"daemon answered HTTP {status}"
    if status == 401:
        message += "; set CORRAL_API_KEY (see `corral keys create`)"
    return cls(message, detail=err.get("detail"))


#: A daemon that refuses to start with one of these exit codes says the home itself is
#: unusable (corrupt or read-only store, full disk): the CLI reports that, not "daemon
#: unavailable". Any other refusal (its port taken...) stays exit 7.
_BY_EXIT = {cls.exit_code: cls for cls in (errors.StoreError, errors.DiskFull)}


def start_daemon(settings: Settings, wait: float = 20.0) -> None:
    """Start ``corral serve`` detached, logging to CORRAL_HOME/logs/daemon.log."""
    settings.ensure_dirs()
    log_path = settings.logs_dir / "daemon.log"
    env = dict(os.environ, CORRAL_HOME=str(settings.home))
    parts = urlsplit(settings.daemon_url)
    argv = [
        sys.executable,
        "-m",
        "corral",
        "serve",
        "--host",
        parts.hostname or "127.0.0.1",
        "--port",
        str(parts.port or 9380),
    ]
    import subprocess

    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    client = Client(settings)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if client.alive(0.5):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = (
        log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
    )
    refused = _BY_EXIT.get(proc.returncode) if proc.poll() is not None else None
    if refused is not None and tail and tail[0].startswith("error: "):
        # The daemon refused to start because the home is unusable: that error, with
        # its exit code, not "unreachable".
        raise refused(tail[0].removeprefix("error: "))
    raise errors.DaemonUnavailable(
        f"could not start the daemon ({tail[0] if tail else 'no output'}); see {log_path}"
    )


def ensure_daemon(settings: Settings) -> Client:
    """A client for a daemon that answers, starting one when none does."""
    client = Client(settings)
    if client.tls:
        # corral serve speaks plain HTTP: a daemon behind https:// is not ours to start, and
        # the first request says what is wrong (refused, or a TLSError naming the cause).
        return client
    if not client.alive():
        print(f"corral: starting the daemon ({settings.daemon_url})", file=sys.stderr)
        start_daemon(settings)
    return client
