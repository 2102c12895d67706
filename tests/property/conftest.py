"""Strategies and an in-process daemon for the property-based bad-input tests.

The daemon is the FastAPI app of :func:`corral.api.app.create_app` (its lifespan runs:
store in the test's CORRAL_HOME, supervisor, pulls, build jobs), driven by Starlette's
TestClient with ``raise_server_exceptions=True``: an unhandled exception anywhere below
a route surfaces as that exception, traceback and all, with hypothesis' smallest
failing input. The fake llama-server is the binary; the Hub is a FakeHub on 127.0.0.1;
the releases URL is a closed local port. Nothing leaves 127.0.0.1.

Runs are deterministic (``derandomize=True``, no example database) and small: see
``PROFILE`` and the ``max_examples`` of each test.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings, strategies as st

from tests.conftest import FAST, free_port_range

#: Requests (or CLI runs) tried per operation, printed at the end of the session (-s).
TRIED: Counter = Counter()


def profile(n: int):
    """Hypothesis settings for ``n`` examples: deterministic, no deadline, no database."""
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
        ],
    )


@pytest.fixture(scope="session", autouse=True)
def _print_tried():
    yield
    if TRIED:
        width = max(len(k) for k in TRIED)
        print("\nbad inputs tried per operation:")
        for op, n in sorted(TRIED.items()):
            print(f"  {op.ljust(width)}  {n}")
        print(f"  {'total'.ljust(width)}  {sum(TRIED.values())}")


# -- strategies --------------------------------------------------------------------------

#: Inputs that found bugs here or elsewhere: trailing newlines (re.match + $), NUL
#: (execve, SQLite), lone surrogates (UTF-8 encoders), integers past SQLite's range,
#: traversal, terminal escapes, very long text.
NASTY_TEXT = [
    "",
    " ",
    "x\n",
    "x\r\n",
    "\n",
    "\x00",
    "a\x00b",
    "*",
    ".",
    "..",
    "../../etc/passwd",
    "%00",
    "%2e%2e",
    "a" * 5000,
    "\u202e",
    "\x1b[2J",
    "\ud800",
    "-1",
    "9" * 30,
    "--model",
    "-c",
    "😀",
    "CON",
    "x" * 65,
    "a b",
    "a,b",
    "name.",
    "_x",
]
NASTY_INTS = [0, -1, 1, 65535, 65536, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**40]

text = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=30))
ints = st.one_of(st.sampled_from(NASTY_INTS), st.integers())
floats = st.one_of(
    st.sampled_from([0.0, -0.0, -1.0, 1e308, 1e-308]),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, text)
any_json = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)

FLAG_WORDS = [
    "-c",
    "--ctx-size",
    "-ngl",
    "--n-gpu-layers",
    "--port",
    "--model",
    "-m",
    "--no-mmap",
    "--mmap",
    "--lora",
    "--alias",
    "-a",
    "--api-key",
    "--ctx-size=4096",
    "-fa",
    "--flash-attn",
    "on",
    "off",
    "auto",
    "4096",
    "-1",
    "abc",
    "",
    "-",
    "--",
    "--nope",
    "\x00",
    "40\x0096",
    "--ctx_size",
    "--temp",
    "nan",
    "inf",
    "1e999",
    "--threads",
    "99999999999999999999",
    "-t",
    "x\n",
    "--no-webui",
    "--rope-scaling",
    "--host",
    "192.0.2.1",
    "::1",
]  # not local, IPv6 loopback: no packet leaves
flag_tokens = st.lists(st.one_of(st.sampled_from(FLAG_WORDS), text), max_size=6)


def loose(fields: dict[str, st.SearchStrategy], base: dict | None = None) -> st.SearchStrategy:
    """JSON bodies for a request model with ``fields``.

    Most are a valid ``base`` body with one or two fields made hostile (so the value
    gets past the other checks to the code behind them); the rest are any subset of
    the fields with hostile or arbitrary JSON values, sometimes with an unknown key,
    and sometimes not an object at all.
    """
    base = base or {}
    keys = sorted(fields)

    def one_field(body: dict) -> st.SearchStrategy:
        return st.sampled_from(keys).flatmap(lambda k: fields[k].map(lambda v: {**body, k: v}))

    one = one_field(base)
    two = one.flatmap(one_field)
    subset = st.fixed_dictionaries(
        {}, optional={k: st.one_of(v, any_json) for k, v in fields.items()}
    )
    extra = st.builds(lambda a, b: {**b, **a}, subset, st.dictionaries(text, any_json, max_size=1))
    return st.one_of(one, one, two, subset, extra, any_json)


def send(client, method: str, url: str, body: Any = None, **kw):
    """A request with ``body`` as JSON encoded here: ``ensure_ascii`` carries lone
    surrogates as ``\\ud800`` escapes (httpx would refuse to encode them)."""
    if body is not None:
        kw["content"] = json.dumps(body).encode()
        kw["headers"] = {"Content-Type": "application/json"}
    return client.request(method, url, **kw)


def assert_clean(resp, op: str) -> None:
    """No 5xx; an error is ``{"error": {"code", "message"}}``."""
    TRIED[op] += 1
    assert resp.status_code < 500, f"{op}: {resp.status_code} {resp.text[:800]}"
    if resp.status_code >= 400:
        try:
            body = resp.json()
        except ValueError:
            pytest.fail(f"{op}: {resp.status_code} answer is not JSON: {resp.text[:300]!r}")
        assert isinstance(body, dict) and set(body) == {"error"}, (op, body)
        err = body["error"]
        assert isinstance(err.get("code"), str) and err["code"], (op, body)
        assert isinstance(err.get("message"), str) and err["message"], (op, body)


# -- the daemon ------------------------------------------------------------------------------


@dataclass
class InProcess:
    client: Any
    model: Path
    fake_binary: Path
    home: Path


@pytest.fixture
def daemon_in_process(
    corral_home: Path, fake_binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The daemon's app in this process (lifespan started), fake binary, FakeHub."""
    from fastapi.testclient import TestClient

    from corral.api.app import create_app
    from corral.settings import load_settings
    from corral.supervisor.offline import stop_all_offline
    from tests.fakes.fake_hub import FakeHub

    model = tmp_path / "models" / "tiny-Q4_K_M.gguf"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CORRAL_LLAMA_SERVER", str(fake_binary))
    monkeypatch.setenv("CORRAL_PORT_RANGE", free_port_range())
    monkeypatch.setenv("CORRAL_RELEASES_URL", "http://127.0.0.1:9/releases")  # nothing listens
    with FakeHub() as hub:
        hub.add_repo("org/tiny-GGUF", files={"tiny-Q4_K_M.gguf": model})
        monkeypatch.setenv("CORRAL_HF_ENDPOINT", hub.url)
        s = load_settings()
        try:
            with TestClient(create_app(s), raise_server_exceptions=True) as client:
                yield InProcess(client, model, fake_binary, corral_home)
                # stopped (and reaped) by the supervisor that started them
                client.post("/api/v1/shutdown", json={"stop_instances": True})
        finally:
            stop_all_offline(s, timeout=1.0)
