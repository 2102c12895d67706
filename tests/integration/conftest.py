"""Helpers for the integration suite: raw HTTP to the daemon, fake-process accounting.

Everything here talks to real processes: the ``corral serve`` subprocess of the
``daemon`` fixture and the fake ``llama-server`` processes it spawns on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import DaemonProcess, wait_for

# --------------------------------------------------------------------------- HTTP


def api(
    daemon: DaemonProcess,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[int, Any]:
    """One request to the daemon: (status, decoded JSON or text). Never raises on 4xx/5xx."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.settings.port, timeout=timeout)
    try:
        hdrs = {"Accept": "application/json"}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        status = resp.status
    finally:
        conn.close()
    try:
        return status, json.loads(payload) if payload else None
    except ValueError:
        return status, payload.decode(errors="replace")


def assert_error(status: int, payload: Any, want_status: int, want_code: str | None = None) -> dict:
    """The error answer has ``want_status`` and the ``{"error": {"code", "message"}}`` shape."""
    assert status == want_status, (status, payload)
    assert isinstance(payload, dict) and set(payload) == {"error"}, payload
    err = payload["error"]
    assert isinstance(err.get("code"), str) and err["code"], payload
    assert isinstance(err.get("message"), str) and err["message"], payload
    if want_code is not None:
        assert err["code"] == want_code, payload
    return err


def api_ok(daemon: DaemonProcess, method: str, path: str, body: Any = None, want: int = 200):
    """:func:`api` expecting the status ``want``: the decoded answer."""
    status, payload = api(daemon, method, path, body)
    assert status == want, (status, payload)
    return payload


def launch(daemon: DaemonProcess, model: Path | str, *, wait: bool = True, **kw: Any) -> dict:
    """POST /api/v1/instances and expect success (201)."""
    body = {"model": str(model), "wait": wait, **kw}
    return api_ok(daemon, "POST", "/api/v1/instances", body, want=201)


def get(daemon: DaemonProcess, name: str) -> dict:
    return api_ok(daemon, "GET", f"/api/v1/instances/{name}")


def wait_state(
    daemon: DaemonProcess, name: str, *states: str, timeout: float = 20.0, **where: Any
) -> dict:
    """Poll the instance until its state is one of ``states`` (and fields match ``where``)."""

    def check():
        inst = get(daemon, name)
        if inst["state"] in states and all(inst.get(k) == v for k, v in where.items()):
            return inst
        return None

    return wait_for(check, timeout, interval=0.03, message=f"{name} in {states} {where or ''}")


def fake_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def fake_post(port: int, path: str, timeout: float = 5.0) -> tuple[int, Any]:
    """POST to a fake llama-server control endpoint (``/_fake/crash`` etc.)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=b"", headers={"Content-Length": "0"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


# --------------------------------------------------------------------------- processes


def fake_processes(
    binary: Path, *, port: int | None = None, model: Path | str | None = None
) -> list[psutil.Process]:
    """Live (non-zombie) fake llama-server processes, optionally for one port / model."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            cmd = proc.info["cmdline"] or []
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if str(binary) not in cmd or "--help" in cmd or "--version" in cmd:
            continue
        if port is not None and not _has_pair(cmd, "--port", str(port)):
            continue
        if model is not None and not _has_pair(cmd, "--model", str(model)):
            continue
        found.append(proc)
    return found


def _has_pair(cmd: list[str], flag: str, value: str) -> bool:
    return any(a == flag and b == value for a, b in zip(cmd, cmd[1:], strict=False))


def group_gone(pgid: int) -> bool:
    """True when no live (non-zombie) process belongs to process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return False
        except (OSError, psutil.Error):
            continue
    return True


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def listening_socket(port: int | None = None) -> socket.socket:
    """A socket listening on 127.0.0.1 (``port`` or any), to make a port taken."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are fine
    try:
        s.bind(("127.0.0.1", port or 0))
        s.listen(1)
    except OSError:
        s.close()
        raise
    return s


def sidecar(model: Path, **knobs: Any) -> None:
    """Write the fake's behaviour knobs next to ``model``."""
    Path(str(model) + ".fake.json").write_text(json.dumps(knobs))


@pytest.fixture
def make_model(tmp_path: Path):
    """Factory: a GGUF-looking model file with optional fake knobs (sidecar)."""

    def make(name: str = "tiny", **knobs: Any) -> Path:
        path = tmp_path / "models" / f"{name}-Q4_K_M.gguf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
        if knobs:
            sidecar(path, **knobs)
        return path

    return make


class Watch:
    """Record every (state, pid, restarts) the instance goes through, as seen by polling."""

    def __init__(self, daemon: DaemonProcess, name: str) -> None:
        self.daemon, self.name = daemon, name
        self.seen: list[tuple[float, str, int | None, int]] = []

    def poll(self) -> dict:
        inst = get(self.daemon, self.name)
        key = (inst["state"], inst["pid"], inst["restarts"])
        if not self.seen or self.seen[-1][1:] != key:
            self.seen.append((time.monotonic(), *key))
        return inst

    def until(self, pred, timeout: float = 30.0, message: str = "") -> dict:
        return wait_for(
            lambda: (lambda i: i if pred(i) else None)(self.poll()),
            timeout,
            interval=0.01,
            message=message or f"{self.name}: {self.seen[-3:]}",
        )

    def states(self) -> list[str]:
        out: list[str] = []
        for _, state, _, _ in self.seen:
            if not out or out[-1] != state:
                out.append(state)
        return out


@pytest.fixture
def spawn_daemon(daemon_env: dict[str, str]):
    """Factory for extra ``corral serve`` processes (custom env, or a second daemon on the
    same home after a ``kill -9``). Everything they run is stopped afterwards."""
    started: list[DaemonProcess] = []

    def spawn(**env: str) -> DaemonProcess:
        d = DaemonProcess({**daemon_env, **env})
        started.append(d)
        return d.start()

    yield spawn
    from corral.supervisor.offline import stop_all_offline

    for d in started:
        d.stop()
    if started:
        stop_all_offline(started[0].settings, timeout=1.0)
