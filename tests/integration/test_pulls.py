"""Pulls end to end: a real daemon, the fake Hub (a real HTTP server), the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, running_daemon, wait_for
from tests.fakes.fake_hub import FakeHub, Fault

REPO = "acme/tiny-GGUF"


def gguf_bytes(tmp_path: Path, name: str, size: int, file_type: int = 15) -> bytes:
    """A valid GGUF header (written by gguf-py) padded to ``size`` bytes."""
    import gguf

    path = tmp_path / f"{name}.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_file_type(file_type)
    w.add_context_length(2048)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    data = path.read_bytes()
    return data + os.urandom(max(0, size - len(data)))


@pytest.fixture
def hub(tmp_path):
    with FakeHub(cdn=True, chunk_size=64 * 1024) as h:
        h.add_repo(
            REPO,
            files={
                "tiny-Q4_K_M.gguf": gguf_bytes(tmp_path, "tiny-q4", 600_000),
                "tiny-Q8_0.gguf": gguf_bytes(tmp_path, "tiny-q8", 900_000, file_type=7),
                "mmproj-tiny-F16.gguf": gguf_bytes(tmp_path, "mmproj", 100_000),
                "README.md": "# tiny",
            },
            downloads=42,
        )
        h.add_repo(
            "acme/split-GGUF",
            files={
                "Q2_K/big-Q2_K-00001-of-00003.gguf": gguf_bytes(tmp_path, "big", 300_000),
                "Q2_K/big-Q2_K-00002-of-00003.gguf": os.urandom(300_000),
                "Q2_K/big-Q2_K-00003-of-00003.gguf": os.urandom(200_000),
            },
        )
        h.add_repo(
            "acme/gated-GGUF", files={"g-Q4_K_M.gguf": gguf_bytes(tmp_path, "g", 1000)}, gated=True
        )
        yield h


@pytest.fixture
def hub_daemon(daemon_env, hub):
    env = dict(
        daemon_env,
        CORRAL_HF_ENDPOINT=hub.url,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(Path(daemon_env["CORRAL_HOME"]) / "hf"),
    )
    with running_daemon(env) as d:
        yield d


def partial_of(d, hub, name: str) -> Path:
    """The .part file a pull of ``name`` writes (keyed by the file's sha256)."""
    tag = hub.sha256(REPO, name)[:16]
    return Path(d.env["CORRAL_HOME"]) / "models" / REPO / ".partial" / f"{name}.{tag}.part"


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pull_quant_with_mmproj_then_run_it(hub_daemon, hub):
    out = ok(hub_daemon.cli("pull", f"{REPO}:q8_0"))  # quant names match case-insensitively
    assert "pulled acme/tiny-GGUF:Q8_0" in out.stdout
    models = json.loads(ok(hub_daemon.cli("ls", "--json")).stdout)
    assert len(models) == 1
    m = models[0]
    assert m["source"] == "hub" and m["quantization"] == "Q8_0" and m["mmproj"]
    assert sha(Path(m["path"])) == hub.sha256(REPO, "tiny-Q8_0.gguf")
    assert Path(m["mmproj"]).name == "mmproj-tiny-F16.gguf"
    # the model runs by its short name, and the projector is passed along
    run = json.loads(ok(hub_daemon.cli("run", m["name"], "--json", "-c", "512")).stdout)
    assert run["state"] == "ready"
    assert run["argv"][run["argv"].index("--mmproj") + 1] == m["mmproj"]
    assert run["argv"][run["argv"].index("--model") + 1] == m["path"]


def test_pull_split_model_brings_every_part(hub_daemon, hub):
    ok(hub_daemon.cli("pull", "hf.co/acme/split-GGUF:Q2_K"))
    m = json.loads(ok(hub_daemon.cli("show", "split", "--json")).stdout)
    assert [Path(f["path"]).name for f in m["files"]] == [
        "big-Q2_K-00001-of-00003.gguf",
        "big-Q2_K-00002-of-00003.gguf",
        "big-Q2_K-00003-of-00003.gguf",
    ]
    assert m["size"] == 800_000


def test_unknown_quant_lists_what_the_repo_has(hub_daemon):
    proc = hub_daemon.cli("pull", f"{REPO}:IQ2_XXS")
    assert proc.returncode == 3
    assert "has no IQ2_XXS quant; it has: Q4_K_M, Q8_0" in proc.stderr
    assert json.loads(ok(hub_daemon.cli("ls", "--json")).stdout) == []


@pytest.mark.parametrize(
    "ref,code,text",
    [
        ("acme/nope-GGUF", 3, "not found"),
        ("acme/gated-GGUF", 8, "gated"),
        (f"{REPO}@no-such-branch:Q4_K_M", 3, "revision"),
        ("not a ref", 2, "not a HuggingFace reference"),
    ],
)
def test_pull_errors_are_one_line(hub_daemon, ref, code, text):
    proc = hub_daemon.cli("pull", ref)
    assert proc.returncode == code, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and text in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_dropped_connection_and_5xx_and_429_are_retried_and_resumed(hub_daemon, hub):
    hub.faults["tiny-Q4_K_M.gguf"] = Fault(drop_after=200_000, times=1)
    ok(hub_daemon.cli("pull", REPO))
    ranges = [r for (_, path, r) in hub.requests if path.endswith("tiny-Q4_K_M.gguf") and r]
    assert ranges and ranges[0].startswith("bytes=") and not ranges[0].startswith("bytes=0-")
    m = json.loads(ok(hub_daemon.cli("show", "tiny", "--json")).stdout)
    assert sha(Path(m["path"])) == hub.sha256(REPO, "tiny-Q4_K_M.gguf")

    hub.faults["tiny-Q8_0.gguf"] = Fault(status=503, times=1, methods=("GET",))
    hub.faults["mmproj-tiny-F16.gguf"] = Fault(status=429, retry_after=0, times=1, methods=("GET",))
    ok(hub_daemon.cli("pull", f"{REPO}:Q8_0"))


def test_corrupt_download_is_refused_and_not_indexed(hub_daemon, hub):
    hub.faults["tiny-Q4_K_M.gguf"] = Fault(corrupt=True, times=None)
    proc = hub_daemon.cli("pull", REPO)
    assert proc.returncode == 8 and "sha256" in proc.stderr
    assert json.loads(ok(hub_daemon.cli("ls", "--json")).stdout) == []
    models_dir = Path(hub_daemon.env["CORRAL_HOME"]) / "models" / REPO
    assert not (models_dir / "tiny-Q4_K_M.gguf").exists()
    hub.faults.pop("tiny-Q4_K_M.gguf", None)
    ok(hub_daemon.cli("pull", REPO))  # a clean retry works


def test_daemon_killed_mid_pull_resumes_only_the_remainder(hub_daemon, daemon_env, hub):
    hub.faults["tiny-Q4_K_M.gguf"] = Fault(delay=0.05, chunk_size=16 * 1024, times=None)
    job = hub_daemon.client.request("POST", "/api/v1/pulls", {"ref": REPO})
    part = partial_of(hub_daemon, hub, "tiny-Q4_K_M.gguf")
    wait_for(
        lambda: part.exists() and part.stat().st_size >= 150_000,
        timeout=30,
        message="half the file on disk",
    )
    hub_daemon.kill9()
    have = part.stat().st_size
    assert 0 < have < 600_000
    hub.faults.pop("tiny-Q4_K_M.gguf", None)
    hub.clear_log()
    d2 = DaemonProcess(hub_daemon.env).start()
    try:
        stale = d2.client.request("GET", f"/api/v1/pulls/{job['id']}")
        assert stale["state"] == "interrupted"
        ok(d2.cli("pull", REPO))
        gets = [
            r for (m, path, r) in hub.requests if m == "GET" and path.endswith("tiny-Q4_K_M.gguf")
        ]
        assert gets and gets[0] is not None
        resumed_from = int(gets[0].split("=")[1].split("-")[0])
        assert resumed_from >= have - 1 and resumed_from > 0
        m = json.loads(ok(d2.cli("show", "tiny", "--json")).stdout)
        assert sha(Path(m["path"])) == hub.sha256(REPO, "tiny-Q4_K_M.gguf")
    finally:
        d2.stop()


def test_cancel_keeps_the_partial_file(hub_daemon, hub):
    hub.faults["tiny-Q4_K_M.gguf"] = Fault(delay=0.05, chunk_size=16 * 1024, times=None)
    job = hub_daemon.client.request("POST", "/api/v1/pulls", {"ref": REPO})
    part = partial_of(hub_daemon, hub, "tiny-Q4_K_M.gguf")
    wait_for(lambda: part.exists() and part.stat().st_size > 0, timeout=30)
    done = hub_daemon.client.request("DELETE", f"/api/v1/pulls/{job['id']}")
    assert done["state"] == "cancelled"
    assert part.exists() and part.stat().st_size > 0


def test_search_and_quants(hub_daemon, hub):
    found = json.loads(ok(hub_daemon.cli("search", "tiny", "--json")).stdout)
    assert [r["id"] for r in found] == [REPO]
    q = json.loads(ok(hub_daemon.cli("quants", "acme/split-GGUF", "--json")).stdout)
    assert q == [
        {
            "quant": "Q2_K",
            "size": 800_000,
            "parts": 3,
            "files": [
                "Q2_K/big-Q2_K-00001-of-00003.gguf",
                "Q2_K/big-Q2_K-00002-of-00003.gguf",
                "Q2_K/big-Q2_K-00003-of-00003.gguf",
            ],
        }
    ]
    api = hub_daemon.client.request("GET", "/api/v1/hub/quants", params={"repo": REPO})
    assert [g["quant"] for g in api] == ["Q4_K_M", "Q8_0"]


def test_gated_repo_with_a_token_and_progress_lines(daemon_env, hub, tmp_path):
    hub.valid_tokens = {"hf_good"}
    payload = gguf_bytes(tmp_path, "priv", 5000)
    hub.add_repo(
        "acme/private-GGUF",
        files={"p-Q4_K_M.gguf": payload},
        gated=True,
        authorized_tokens={"hf_good"},
    )
    env = dict(
        daemon_env,
        CORRAL_HF_ENDPOINT=hub.url,
        HF_HUB_DISABLE_XET="1",
        CORRAL_HF_TOKEN="hf_good",
        HF_HOME=str(Path(daemon_env["CORRAL_HOME"]) / "hf"),
    )
    d = DaemonProcess(env).start()
    try:
        proc = ok(d.cli("pull", "acme/private-GGUF", "--json"))
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        assert events[-1]["state"] == "done" and events[-1]["total"] == len(payload)
        assert events[-1]["model"] == "acme/private-GGUF:Q4_K_M"
        assert {"done", "total", "speed", "eta", "files", "state"} <= set(events[-1])
        # the token travelled to the Hub; without it the same repo is refused
        assert any(r.headers.get("Authorization") == "Bearer hf_good" for r in hub.log)
    finally:
        d.stop()


def test_offline_hub_is_one_line(daemon_env):
    from tests.conftest import free_port

    env = dict(
        daemon_env, CORRAL_HF_ENDPOINT=f"http://127.0.0.1:{free_port()}", HF_HUB_DISABLE_XET="1"
    )
    d = DaemonProcess(env).start()
    try:
        proc = d.cli("pull", "acme/anything-GGUF")
        assert proc.returncode == 8, proc.stderr
        errs = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(errs) == 1 and ("unreachable" in errs[0] or "network" in errs[0]), errs
    finally:
        d.stop()
