"""The memory plan across RPC devices, for real: two real rpc-servers on 127.0.0.1.

A real corral daemon (local devices simulated as none: CPU only, ``fit_devices``) runs
the real gemma with ``--rpc A,B`` and no placement of its own, so the planner asks both
servers their memory over llama.cpp's protocol, plans over them and adds
``--gpu-layers`` and ``--tensor-split`` in llama.cpp's device order. llama.cpp's own
buffer lines (``-lv 4``, which ``fit_learn`` adds) must put on each RPC device the
weights the plan put there, within the ±2 % of the fit accuracy tests (their ±10 % on
the context: KV cache and compute, pipeline parallelism's copies included), and the
greedy answer must equal a local instance's. A server in use by that instance is not asked
(``POST /api/v1/fit`` says so), and a launch naming a server that cannot be asked is not
planned and says why in the daemon log. The servers are started here and killed in a
``finally``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from corral.builds.tools import tools_beside
from corral.errors import CorralError
from corral.fit.breakdown import parse_log
from corral.fit.rpc_devices import ask
from tests.conftest import DaemonProcess, free_port

pytestmark = pytest.mark.real

#: The fit accuracy tests' tolerances (tests/real/test_fit_accuracy.py).
WEIGHTS_TOLERANCE = 0.02
CONTEXT_TOLERANCE = 0.10
PROMPT = "The three primary colours are"


def start_rpc_server(binary: str, port: int, log: Path) -> subprocess.Popen:
    """A real rpc-server on 127.0.0.1:port, once it answers the protocol."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ask(f"127.0.0.1:{port}", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"rpc-server on {port} did not come up: {log.read_text()[-2000:]}")


def complete(port: int) -> dict:
    body = b'{"prompt": "%s", "n_predict": 16, "temperature": 0, "seed": 42, "cache_prompt": false}'
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/completion",
        data=body % PROMPT.encode(),
        headers={"Content-Type": "application/json"},
    )
    import json

    with urllib.request.urlopen(req, timeout=300) as resp:
        return json.load(resp)


def launch(d: DaemonProcess, model: Path, name: str, flags: list[str], fit: bool = True) -> dict:
    body = {"model": str(model), "flags": flags, "name": name, "wait": True, "fit": fit}
    return d.client.request("POST", "/api/v1/instances", body, timeout=None)


def added(inst: dict, flag: str) -> str | None:
    values = [v for n, v in inst["placement"]["added"] if n == flag]
    return values[-1] if values else None


def test_gemma_planned_across_two_real_rpc_servers(
    real_daemon_env, real_binary, real_model, tmp_path
):
    rpc_binary = tools_beside(real_binary).get("rpc-server")
    if rpc_binary is None:
        pytest.skip(f"the build at {real_binary.parent} has no rpc-server (GGML_RPC)")
    env = {**real_daemon_env, "CORRAL_FIT_DEVICES": "none"}  # CPU only here: simulated
    servers: list[subprocess.Popen] = []
    d = None
    try:
        endpoints = []
        for i in range(2):
            port = free_port()
            servers.append(start_rpc_server(rpc_binary, port, tmp_path / f"rpc{i}.log"))
            endpoints.append(f"127.0.0.1:{port}")
        d = DaemonProcess(env).start()
        split = launch(
            d, real_model, "split", ["-c", "4096", "-t", "1", "--rpc", ",".join(endpoints)]
        )
        assert split["state"] == "ready", split
        placement = split["placement"]
        assert placement is not None, "a launch with --rpc and no -ngl/-ts is planned"
        plan = {dev["id"]: dev for dev in placement["devices"]}
        ids = [f"RPC0[{e}]" for e in endpoints]
        assert [dev["id"] for dev in placement["devices"]] == [*ids, "host"]  # llama.cpp's order
        assert added(split, "--gpu-layers") == "19"  # gemma 3 270M: 18 layers + output
        split_ts = [float(x) for x in added(split, "--tensor-split").split(",")]
        assert len(split_ts) == 2 and all(x > 0 for x in split_ts)
        assert all(plan[i]["layers"] > 0 and plan[i]["kind"] == "rpc" for i in ids)

        # llama.cpp put on each RPC device the weights the plan put there
        log = d.cli("logs", "split", "-n", "100000").stdout
        real = parse_log(log).per_device()
        for dev_id in [*ids, "host"]:  # shown with -s: the figures of docs/DESIGN.md
            print(f"{dev_id}: plan {plan[dev_id]}, llama.cpp {real[dev_id]}")
        for dev_id in ids:
            got, want = real[dev_id]["model"], plan[dev_id]["weights_bytes"]
            assert abs(got - want) <= WEIGHTS_TOLERANCE * want, (dev_id, got, want)
            assert real[dev_id]["kv"] == plan[dev_id]["kv_bytes"], dev_id
            # the context (KV + compute, pipeline parallelism's copies included)
            got = real[dev_id]["kv"] + real[dev_id]["compute"]
            want = plan[dev_id]["kv_bytes"] + plan[dev_id]["compute_bytes"]
            assert abs(got - want) <= CONTEXT_TOLERANCE * got, (dev_id, got, want)
        host_real = sum(real["host"].values())
        assert abs(host_real - plan["host"]["used_bytes"]) <= CONTEXT_TOLERANCE * host_real
        lines = [x for x in log.splitlines() if "buffer size" in x]
        assert sum("model buffer size" in x and "RPC" in x for x in lines) == 2, lines
        # fit_learn read the same lines back into the placement, per device id
        learnt = d.client.request("GET", "/api/v1/instances/split")["placement"]
        assert set(ids) <= set(learnt["real"]), learnt
        assert learnt["mismatch"] == [], learnt  # no device 15 % off the plan

        # the same greedy text as a local instance
        local = launch(d, real_model, "local", ["-c", "4096", "-t", "1", "-ngl", "0"], fit=False)
        via_rpc, here = complete(split["port"]), complete(local["port"])
        assert here["content"].strip() and here["tokens_predicted"] == 16
        assert via_rpc["content"] == here["content"], (via_rpc["content"], here["content"])

        # a server busy with "split" is not asked (it serves one client at a time)
        body = {"model": str(real_model), "flags": ["--rpc", endpoints[0]]}
        with pytest.raises(CorralError, match="in use by instance split"):
            d.client.request("POST", "/api/v1/fit", body, timeout=60)
        d.client.request("DELETE", "/api/v1/instances/split", timeout=60)

        # free again: a dry run is planned over them; servers named only by llama.cpp's
        # env var are devices the planner cannot know, so that launch is not planned
        dry = {"model": str(real_model), "flags": ["-c", "4096", "--rpc", ",".join(endpoints)]}
        planned = d.client.request("POST", "/api/v1/instances/plan", dry, timeout=60)
        assert [x["id"] for x in planned["placement"]["devices"]] == [*ids, "host"]
        by_env = {**dry, "flags": ["-c", "4096"], "env": {"LLAMA_ARG_RPC": endpoints[0]}}
        unplanned = d.client.request("POST", "/api/v1/instances/plan", by_env, timeout=60)
        assert unplanned["placement"] is None

        # a server that cannot be asked: launched unplanned, one warning in the daemon log
        nobody = f"127.0.0.1:{free_port()}"
        with pytest.raises(CorralError):  # llama-server cannot reach it either
            launch(d, real_model, "gone", ["-c", "4096", "--rpc", nobody])
        warned = [x for x in d.log_text().splitlines() if "without a memory plan" in x]
        assert len(warned) == 1 and nobody in warned[0], warned
        assert re.search(r"refused", warned[0], re.I), warned
        gone = d.client.request("GET", "/api/v1/instances")
        assert all(i.get("placement") is None for i in gone if i["name"] == "gone")
    finally:
        if d is not None:
            d.cli("down", timeout=60)
            d.stop()
        for proc in servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
