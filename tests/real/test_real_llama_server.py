"""The truth: corral driving the real llama-server with the real gemma-3-270m model."""

from __future__ import annotations

import json
import os
import urllib.request

import psutil
import pytest

from corral.builds.catalog import load_catalog
from tests.conftest import DaemonProcess, wait_for

pytestmark = pytest.mark.real


def chat(port: int, text: str, max_tokens: int = 8) -> dict:
    body = json.dumps(
        {
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
    ).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


def test_catalog_of_the_real_build_covers_every_flag_line(real_binary, tmp_path):
    import subprocess

    from corral.builds.resolve import binary_env

    out = subprocess.run(
        [str(real_binary), "--help"],
        capture_output=True,
        text=True,
        env=binary_env(real_binary),
        timeout=60,
    )
    text = out.stdout + out.stderr
    flag_lines = [
        line for line in text.splitlines() if line.startswith("-") and not line.startswith("-----")
    ]
    catalog = load_catalog(real_binary, tmp_path)
    assert len(catalog.flags) == len(flag_lines)
    assert set(catalog.sections) == {"common", "sampling", "speculative", "server"}
    assert catalog.lookup("-c").long == "--ctx-size" and catalog.lookup("-c").takes_value
    assert catalog.lookup("--flash-attn").choices


def test_run_chat_adopt_stop_with_the_real_server(real_daemon_env, real_model):
    d = DaemonProcess(real_daemon_env).start()
    try:
        res = d.cli("run", str(real_model), "--name", "gemma", "-c", "2048", "-t", "2", timeout=180)
        assert res.returncode == 0, res.stderr
        assert "gemma" in res.stdout and "ready" in res.stdout
        inst = d.client.request("GET", "/api/v1/instances/gemma")
        assert inst["state"] == "ready"
        assert "--ctx-size" in " ".join(inst["argv"]) and "--threads" in " ".join(inst["argv"])

        reply = chat(inst["port"], "Say hello.")
        assert reply["usage"]["completion_tokens"] > 0
        assert reply["choices"][0]["message"]["content"] is not None

        # The daemon dies hard; the instance keeps serving; a new daemon adopts it.
        d.kill9()
        assert psutil.pid_exists(inst["pid"])
        d2 = DaemonProcess(real_daemon_env).start()
        try:
            again = wait_for(
                lambda: (lambda i: i if i["state"] == "ready" else None)(
                    d2.client.request("GET", "/api/v1/instances/gemma")
                ),
                timeout=30,
            )
            assert again["pid"] == inst["pid"] and again["port"] == inst["port"]
            servers = [
                p
                for p in psutil.process_iter(["cmdline"])
                if p.info["cmdline"] and str(real_model) in p.info["cmdline"]
            ]
            assert len(servers) == 1, "no duplicate llama-server after re-adoption"
            assert chat(inst["port"], "Count to three.")["usage"]["completion_tokens"] > 0

            stopped = d2.client.request("POST", "/api/v1/instances/gemma/stop", timeout=60)
            assert stopped["state"] == "stopped"
            assert (
                not psutil.pid_exists(inst["pid"])
                or psutil.Process(inst["pid"]).status() == psutil.STATUS_ZOMBIE
            )
        finally:
            d2.stop()
    finally:
        d.stop()
        from corral.supervisor.offline import stop_all_offline

        stop_all_offline(d.settings, timeout=5)


def test_bad_flag_is_refused_before_spawn_by_the_real_catalog(real_daemon_env, real_model):
    d = DaemonProcess(real_daemon_env).start()
    try:
        before = {p.pid for p in psutil.process_iter()}
        res = d.cli("run", str(real_model), "--ctx-sise", "2048")
        assert res.returncode == 2
        assert "unknown flag '--ctx-sise'" in res.stderr and "--ctx-size" in res.stderr
        res = d.cli("run", str(real_model), "--ctx-size")
        assert res.returncode == 2 and "value" in res.stderr
        assert d.client.request("GET", "/api/v1/instances") == []
        spawned = [
            p
            for p in psutil.process_iter(["name"])
            if p.pid not in before and p.info["name"] == "llama-server"
        ]
        assert spawned == []
    finally:
        d.stop()


def test_corrupt_model_fails_fast_with_the_log_tail(real_daemon_env, tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    d = DaemonProcess(real_daemon_env).start()
    try:
        res = d.cli("run", str(bad), "--name", "broken", timeout=120)
        assert res.returncode == 6, res.stderr
        assert "broken" in res.stderr and "failed" in res.stderr
        inst = d.client.request("GET", "/api/v1/instances/broken")
        assert inst["state"] == "failed" and inst["restarts"] == 0
    finally:
        d.stop()


def test_import_the_real_model_and_run_it_by_name(real_daemon_env, real_model):
    d = DaemonProcess(real_daemon_env).start()
    try:
        imported = d.cli("import", str(real_model), "--json")
        assert imported.returncode == 0, imported.stderr
        models = json.loads(d.cli("ls", "--json").stdout)
        assert len(models) == 1
        m = models[0]
        assert m["quantization"] == "Q4_K_M" and m["architecture"] == "gemma3"
        assert m["source"] == "local" and not m["owned"]
        res = d.cli(
            "run",
            "gemma-3-270m",
            "--name",
            "byname",
            "-c",
            "1024",
            "-t",
            "2",
            "--json",
            timeout=180,
        )
        assert res.returncode == 0, res.stderr
        inst = json.loads(res.stdout)
        assert inst["state"] == "ready" and inst["model"] == str(real_model)
        assert chat(inst["port"], "Hi")["usage"]["completion_tokens"] > 0
        # rm of an imported model forgets it and never deletes the user's file
        d.client.request("POST", "/api/v1/instances/byname/stop", timeout=60)
        assert d.cli("rm", m["name"]).returncode == 0
        assert real_model.exists()
    finally:
        d.stop()
        from corral.supervisor.offline import stop_all_offline

        stop_all_offline(d.settings, timeout=5)


def test_doctor_passes_with_the_real_build(real_daemon_env):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "corral", "doctor", "--json"],
        env=real_daemon_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    assert checks["llama-server"]["status"] == "ok"
    assert checks["libraries"]["status"] == "ok"
    assert checks["devices"]["status"] == "ok"  # CPU-only build, CPU-only host


def test_planned_launch_reads_back_what_the_real_server_allocated(real_daemon_env, real_model):
    """Issue 11 (learning from reality): a planned launch runs at --verbosity 4, and the
    buffer sizes llama-server prints per device land in placement.real, within 15 % of
    the plan (else a mismatch is listed)."""
    d = DaemonProcess(real_daemon_env).start()
    try:
        res = d.cli(
            "run", str(real_model), "--name", "planned", "-c", "4096", "-t", "2", timeout=180
        )
        assert res.returncode == 0, res.stderr
        assert "placed:" in res.stderr
        inst = wait_for(
            lambda: (lambda i: i if (i["placement"] or {}).get("real") else None)(
                d.client.request("GET", "/api/v1/instances/planned")
            ),
            timeout=30,
        )
        placement = inst["placement"]
        assert "--verbosity" in inst["argv"]
        host = next(x for x in placement["devices"] if x["id"] == "host")
        real = placement["real"]["host"]
        assert abs(real - host["used_bytes"]) <= 0.15 * host["used_bytes"], (real, host)
        assert placement["mismatch"] == []
    finally:
        d.stop()
        from corral.supervisor.offline import stop_all_offline

        stop_all_offline(d.settings, timeout=5)
