"""corral's memory estimate against llama.cpp's own numbers, on the real gemma model.

Each case starts the real llama-server with ``-lv 4``, waits for ``/health``, stops it
with SIGINT and parses what it printed (:mod:`corral.fit.breakdown`): the buffer lines
(``model``/``KV``/``compute``/``output buffer size``, two decimals) and the real memory
breakdown at exit (whole MiB). The estimate for the same flags must be within ±2 % on
weights (CPU_Mapped + CPU_REPACK) and ±10 % on the context (KV + compute + output) and
the total. ``bench/fit.py --accuracy --write`` prints the same cases into
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.errors import FlagValueError
from corral.fit.breakdown import MemoryReport, parse_log
from corral.fit.estimate import Options, load_model, project
from tests.conftest import free_port

pytestmark = pytest.mark.real

MiB = 1024 * 1024

#: The matrix of issue 11: context 2k-32k, f16/q8_0/q4_0 KV, -fa on/off, -np 1/4, --swa-full.
CASES: list[list[str]] = [
    ["-c", "2048", "-np", "1", "-fa", "on"],
    ["-c", "2048", "-np", "1", "-fa", "off"],
    ["-c", "2048", "-np", "4", "-fa", "on"],
    ["-c", "4096"],
    ["-c", "4096", "-fa", "off"],
    ["-c", "4096", "-ub", "256"],
    ["-c", "4096", "-b", "1024", "-ub", "1024"],
    ["-c", "8192", "-np", "1", "-fa", "on"],
    ["-c", "8192", "-np", "4", "-fa", "off"],
    ["-c", "8192", "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on"],
    ["-c", "8192", "-ctk", "q4_0", "-ctv", "q4_0", "-fa", "on"],
    ["-c", "8192", "-ctk", "q8_0", "-fa", "off"],
    ["-c", "8192", "--swa-full"],
    ["-c", "8192", "--swa-full", "-np", "1", "-fa", "off"],
    ["-c", "16384", "-np", "4", "--kv-unified"],
    ["-c", "16384", "-np", "4", "-ctk", "q4_0", "-ctv", "q4_0", "-fa", "on"],
    ["-c", "16384", "-np", "1", "-fa", "off"],
    ["-c", "32768", "-np", "1", "-fa", "on"],
    ["-c", "32768", "-np", "4", "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on"],
    ["-c", "32768", "-np", "1", "-fa", "off", "-ctk", "q8_0"],
    ["-c", "32768", "--swa-full", "-np", "1", "-fa", "on"],
]
REFUSED = ["-c", "8192", "-ctk", "q4_0", "-ctv", "q4_0", "-fa", "off"]


@dataclass
class Measured:
    """llama.cpp's numbers and corral's for one case (bytes)."""

    flags: list[str]
    real_weights: int
    real_context: int
    est_weights: int
    est_context: int
    report: MemoryReport

    @property
    def real_total(self) -> int:
        return self.real_weights + self.real_context

    @property
    def est_total(self) -> int:
        return self.est_weights + self.est_context

    @staticmethod
    def error(est: int, real: int) -> float:
        return (est - real) / real


def options_for(flags: list[str]) -> Options:
    """The estimator's options for these flags (the catalog's spelling table)."""
    pairs: list[tuple[str, str | None]] = []
    i = 0
    while i < len(flags):
        name = flags[i]
        if i + 1 < len(flags) and not flags[i + 1].startswith("-"):
            pairs.append((name, flags[i + 1]))
            i += 2
        else:
            pairs.append((name, None))
            i += 1
    return Options.from_pairs(pairs)


def run_server(binary: Path, model: Path, flags: list[str], timeout: float = 60) -> str:
    """Start llama-server, wait for /health, SIGINT it; its whole log."""
    port = free_port()
    argv = [
        str(binary),
        "-m",
        str(model),
        "-lv",
        "4",
        "-t",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *flags,
    ]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return out.decode("utf-8", errors="replace")


def measure(binary: Path, model: Path, flags: list[str]) -> Measured:
    log = run_server(binary, model, flags)
    report = parse_log(log)
    assert report.buffer_bytes("model"), f"no buffer lines for {flags}:\n{log[-3000:]}"
    proj = project(load_model(str(model)), options_for(flags), 0)
    host = proj.host
    real_context = (
        report.buffer_bytes("kv")
        + report.buffer_bytes("rs")
        + report.buffer_bytes("compute")
        + report.buffer_bytes("output")
    )
    return Measured(
        flags,
        report.buffer_bytes("model"),
        real_context,
        host.weights_bytes,
        host.context_bytes,
        report,
    )


@pytest.fixture(scope="module")
def server(real_binary: Path, real_model: Path):
    return real_binary, real_model


@pytest.mark.parametrize("flags", CASES, ids=[" ".join(c) for c in CASES])
def test_estimate_within_tolerance_of_llama_cpp(server, flags):
    m = measure(*server, flags)
    # the breakdown llama.cpp prints at exit agrees with its buffer lines (whole MiB:
    # one MiB of rounding per row); the output buffer is in none of its columns
    real_self = m.report.real_self_bytes("host")
    assert real_self is not None, "no memory breakdown at exit"
    output = m.report.buffer_bytes("output")
    assert abs(real_self + output - m.real_total) < 3 * MiB
    assert abs(m.error(m.est_weights, m.real_weights)) <= 0.02, m
    assert abs(m.error(m.est_context, m.real_context)) <= 0.10, m
    assert abs(m.error(m.est_total, m.real_total)) <= 0.10, m


def test_quantized_v_without_flash_attention_is_refused_by_both(server):
    log = run_server(*server, REFUSED)
    assert "requires flash_attn" in log or "requires Flash Attention" in log
    assert not parse_log(log).buffer_bytes("kv")
    with pytest.raises(FlagValueError, match="flash attention"):
        project(load_model(str(server[1])), options_for(REFUSED), 0)


def test_cases_cover_the_matrix():
    joined = [" ".join(c) for c in CASES]
    for needle in (
        "-c 2048",
        "-c 32768",
        "q8_0",
        "q4_0",
        "-fa on",
        "-fa off",
        "-np 1",
        "-np 4",
        "--swa-full",
    ):
        assert any(needle in j for j in joined), needle
    assert os.environ.get("CORRAL_HOME")  # the autouse fixture isolates every test
