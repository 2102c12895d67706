"""Schemathesis against the management API of a real daemon (``corral serve``, fake llama-server).

What runs: the schemathesis CLI (``st run``, its documented interface) on the daemon's
``/openapi.json``, with its phases ``examples`` (the schema's own examples), ``coverage``
(deterministic boundary and type-violating values per parameter) and ``fuzzing``
(hypothesis, positive and negative data), 25 examples per operation, deterministic
(``--generation-deterministic``: no seed, no example database), one worker.

Why the CLI and not schemathesis' pytest plugin: the schema exists only once the
``daemon`` fixture runs, so it would need the lazy ``schemathesis.pytest.from_fixture``
loader, which fails under pytest 9.2 (``AttributeError: 'Function' object has no
attribute '_nodeid'``), and hand-made hypothesis tests over ``APIOperation.as_strategy``
would lose the coverage phase, the one that finds most 5xx here.

Checks: ``not_a_server_error`` (no 5xx, whatever the input) and the response checks the
schema supports: ``content_type_conformance``, ``response_headers_conformance``,
``response_schema_conformance``. Not run, on purpose:

* ``status_code_conformance``: FastAPI documents 422 for bad input, corral answers 400
  (``corral.api.errors``), and 404/409/424 answers are not in the schema at all;
* ``positive_data_acceptance``: schema-valid ids of things that do not exist are 404;
* ``negative_data_rejection``: pydantic's lax mode takes 0/1 for booleans, which
  schemathesis counts as accepting invalid data.

Scope: every operation except ``/v1/*`` (the OpenAI proxy, see test_router.py),
``POST /api/v1/shutdown`` (would end the run), ``GET /api/v1/events`` (an SSE stream that
never ends) and ``POST /api/v1/builds/update`` (pip/GitHub downloads and a multi-minute
source build; see test_update.py). Instance logs are fuzzed with ``follow=false`` only
(``follow=true`` never ends). Nothing leaves 127.0.0.1: the Hub is the tests' FakeHub
(holding the repo of the pull example of the schema), the releases URL a closed local
port. Every request carries the daemon's local admin token: a fuzzed ``POST
/api/v1/keys`` makes keys required on loopback too, and the CLI authenticates so.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.fake_hub import FakeHub

ST = Path(sys.executable).parent / "st"
#: shutdown ends the run; events never ends; builds/update starts downloads and builds;
#: settings would let fuzzed URLs (hf_endpoint, releases_url) point later calls off-host
#: (tests/integration/test_settings_api.py covers it).
EXCLUDED = ("/api/v1/shutdown", "/api/v1/events", "/api/v1/builds/update", "/api/v1/settings")
CHECKS = (
    "not_a_server_error",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
#: The pull example in the schema (corral.api.pulls.PullRequest), served by the FakeHub.
EXAMPLE_REPO, EXAMPLE_FILE = "unsloth/gemma-3-270m-it-GGUF", "gemma-3-270m-it-Q4_K_M.gguf"
CONFIG = """\
# schemathesis.toml for this test: the one thing the CLI flags cannot say.
[parameters]
"query.follow" = false
"""


@pytest.fixture
def hub(tmp_path: Path):
    import gguf

    path = tmp_path / "hub" / EXAMPLE_FILE
    path.parent.mkdir()
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_file_type(15)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    with FakeHub() as h:
        h.add_repo(EXAMPLE_REPO, files={EXAMPLE_FILE: path})
        yield h


@pytest.fixture
def daemon_env(daemon_env: dict[str, str], hub: FakeHub) -> dict[str, str]:
    """The conftest environment, with every outside service on 127.0.0.1."""
    daemon_env["CORRAL_HF_ENDPOINT"] = hub.url
    daemon_env["CORRAL_RELEASES_URL"] = "http://127.0.0.1:9/releases"  # nothing listens
    return daemon_env


def run_schemathesis(daemon, workdir: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """``st run`` against the daemon; returns the process and its JSON report."""
    if not ST.is_file():
        pytest.fail(f"schemathesis CLI not found at {ST} (pip install -e '.[dev]')")
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    report = workdir / "report.json"
    token = (daemon.settings.home / "daemon.token").read_text().strip()
    argv = [
        str(ST),
        "--config-file",
        str(config),
        "run",
        daemon.settings.daemon_url + "/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--exclude-path-regex",
        "^/v1/",
        *[arg for path in EXCLUDED for arg in ("--exclude-path", path)],
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "25",
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=workdir)
    if not report.is_file():
        pytest.fail(
            f"schemathesis did not run (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc, json.loads(report.read_text())


def daemon_tracebacks(log: str) -> list[str]:
    """Each unhandled error in the daemon log, as its corral frames and the exception line."""
    out = []
    for block in log.split("ERROR corral.api: unhandled error")[1:]:
        lines = block.splitlines()
        frames = list(dict.fromkeys(ln.strip() for ln in lines if "/src/corral/" in ln))
        last = next((ln for ln in lines if re.match(r"\w*(Error|Exception)\b", ln)), "?")
        out.append("\n".join(frames + [last[:300]]))
    return out


def failures_text(stdout: str, daemon_log: str) -> str:
    """The FAILURES section of the CLI output (lines shortened) and the daemon's tracebacks."""
    section = stdout.split("= FAILURES =", 1)[-1].split("= WARNINGS =", 1)[0]
    shown = "\n".join(ln[:300] for ln in section.splitlines())
    return (
        shown
        + "\n--- daemon tracebacks ---\n"
        + "\n\n".join(dict.fromkeys(daemon_tracebacks(daemon_log)))
    )[-12000:]


def test_management_api_has_no_server_errors_and_conforms(daemon, tmp_path):
    proc, report = run_schemathesis(daemon, tmp_path)
    ops = report["operations"]
    # A run that tested nothing (schema not served, filters wrong, every call refused by
    # auth) must not pass as a clean one.
    assert ops["selected"] >= 20 and ops["tested"] == ops["selected"], ops
    assert report["test_cases"]["generated"] >= 10 * ops["tested"], report["test_cases"]
    assert not report["warnings"].get("missing_auth"), report["warnings"]["missing_auth"]
    assert report["errors"] == [], report["errors"]
    assert report["failures"] == [] and proc.returncode == 0, (
        f"schemathesis found {report['failures']}\n" + failures_text(proc.stdout, daemon.log_text())
    )
