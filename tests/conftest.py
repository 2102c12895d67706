"""Test isolation and shared fixtures.

Every test runs with CORRAL_HOME in its own temp dir (autouse), never the user's home,
and with no CORRAL_* variable leaking in from the environment.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from corral.client import Client
from corral.settings import load_settings
from tests.fakes import make_fake_binary

REPO = Path(__file__).resolve().parent.parent

#: Fast supervision knobs for tests (production defaults are seconds to minutes).
FAST = {
    "CORRAL_PROBE_INTERVAL": "0.2",
    "CORRAL_PROBE_TIMEOUT": "0.3",
    "CORRAL_PROBE_FAILURES": "3",
    "CORRAL_BACKOFF_INITIAL": "0.1",
    "CORRAL_BACKOFF_MAX": "0.4",
    "CORRAL_STOP_TIMEOUT": "1.0",
    "CORRAL_LOAD_TIMEOUT": "20",
}


# Ports handed out by bind(0) come from the kernel's ephemeral range, which is also where
# every outgoing connection (the daemon's health probes, ~100/s) takes its source port:
# a port found free there can be gone a moment later. Tests pick below that range.
_PORT_LOW, _PORT_HIGH = 20000, 32000


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_range(size: int = 20) -> str:
    """A range of ``size`` ports, free right now, below the ephemeral range."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        base = rng.randrange(_PORT_LOW, _PORT_HIGH - size)
        if all(_bindable(p) for p in range(base, base + size)):
            return f"{base}-{base + size - 1}"
    raise RuntimeError("no free port range")


def free_port() -> int:
    low, _ = free_port_range(1).split("-")
    return int(low)


@pytest.fixture(autouse=True)
def corral_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith(("CORRAL_", "FAKE_LLAMA_")) and not key.startswith("CORRAL_TEST_"):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("CORRAL_HOME", str(home))
    return home


@pytest.fixture
def fake_binary(tmp_path: Path) -> Path:
    return make_fake_binary(tmp_path / "fakebin")


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """A file with the GGUF magic (enough for the fake server)."""
    path = tmp_path / "models" / "tiny-model-Q4_K_M.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    return path


class DaemonProcess:
    """A real ``corral serve`` subprocess on a free port, with a client for it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.settings = load_settings()
        self.settings.home = Path(env["CORRAL_HOME"])
        self.settings.port = int(env["CORRAL_PORT"])
        self.settings.url = f"http://127.0.0.1:{env['CORRAL_PORT']}"
        self.client = Client(self.settings)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "DaemonProcess":
        with open(self.settings.home / "daemon-test.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "corral", "serve"],
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client.alive(0.3):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("daemon did not start: " + self.log_text()[-2000:])

    def log_text(self) -> str:
        path = self.settings.home / "daemon-test.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def cli(
        self, *args: str, timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run the real ``corral`` CLI against this daemon (``stdin``: what it reads)."""
        return subprocess.run(
            [sys.executable, "-m", "corral", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def daemon_env(corral_home: Path, fake_binary: Path) -> dict[str, str]:
    # 0700 as corral makes it: a looser home gets a "made CORRAL_HOME private" line once
    # (tested on its own in test_hardening_store), which would be noise in every test here.
    corral_home.mkdir(mode=0o700, parents=True, exist_ok=True)
    corral_home.chmod(0o700)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "FAKE_LLAMA_"))}
    env.update(FAST)
    env.update(
        {
            "CORRAL_HOME": str(corral_home),
            "CORRAL_PORT": str(port),
            "CORRAL_URL": f"http://127.0.0.1:{port}",
            "CORRAL_PORT_RANGE": free_port_range(),
            "CORRAL_LLAMA_SERVER": str(fake_binary),
            "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        }
    )
    return env


@contextmanager
def running_daemon(env: dict[str, str]) -> Iterator[DaemonProcess]:
    """A started daemon; on exit it is stopped, and every instance it left too."""
    d = DaemonProcess(env).start()
    try:
        yield d
    finally:
        d.stop()
        from corral.supervisor.offline import stop_all_offline

        stop_all_offline(d.settings, timeout=1.0)


@pytest.fixture
def daemon(daemon_env: dict[str, str]):
    """A running daemon (subprocess) using the fake llama-server; everything killed after."""
    with running_daemon(daemon_env) as d:
        yield d


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, message: str = ""):
    """Poll ``predicate`` until it returns a truthy value; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {message or predicate}; last={last!r}")
