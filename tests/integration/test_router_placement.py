"""Placement and eviction by memory through a real daemon, the router and fake llama-servers.

The models are GGUF headers in the shape of a dense Qwen2.5-14B layer stack (gguf-py's
GGUFWriter, sparse data: no data block is written), with as many layers and as much
context as make their projections the sizes each test needs (the fake llama-server only
checks the magic). The devices are simulated (``CORRAL_FIT_DEVICES``) or detected through
a fake ``nvidia-smi`` on PATH replaying a recorded output, whose free figures never move
as instances start: only the projections the daemon commits keep two models off one card.

What is asserted, from ``placement`` in ``GET /api/v1/instances``: on no device do the
live instances' plans add up past its free memory minus the margin; a start that does not
fit evicts the least recently used router instance holding memory where it is short, never
a pinned, busy or user-launched one; and when nothing can be evicted the answer is 503
with Retry-After naming the short devices.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, running_daemon
from tests.integration.conftest import api, launch

gguf_shapes = pytest.importorskip("tests.fakes.gguf_shapes")

GiB = 1024**3
MARGIN = GiB  # the default fit_margin_mib
RECORDED = Path(__file__).parent.parent / "fakes" / "gpu_outputs"


def dense(path: Path, n_layer: int, ctx: int = 4096, **fake) -> Path:
    """A Qwen2.5-14B-shaped header with ``n_layer`` layers (~0.19 GiB each at Q4_K_M)
    and a training context of ``ctx`` (what the planner gives it when it fits)."""
    n_embd, n_ff, vocab = 5120, 13824, 152064
    tensors = [("token_embd.weight", (n_embd, vocab), gguf_shapes.Q4_K)]
    for i in range(n_layer):
        tensors += gguf_shapes._attn(i, n_embd, 40 * 128, 8 * 128, bias=True)
        tensors += gguf_shapes._ffn(i, n_embd, n_ff)
    tensors += [
        ("output_norm.weight", (n_embd,), gguf_shapes.F32),
        ("output.weight", (n_embd, vocab), gguf_shapes.Q6_K),
    ]
    kv = {
        ".context_length": ctx,
        ".block_count": n_layer,
        ".embedding_length": n_embd,
        ".feed_forward_length": n_ff,
        ".attention.head_count": 40,
        ".attention.head_count_kv": 8,
        ".rope.freq_base": 1000000.0,
        ".attention.layer_norm_rms_epsilon": 1e-6,
        "general.file_type": 15,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    gguf_shapes.write_shape(path, "qwen2", kv, tensors, vocab)
    if fake:
        Path(str(path) + ".fake.json").write_text(json.dumps(fake))
    return path


@pytest.fixture
def start_daemon(daemon_env):
    """A daemon with extra env; every one started is stopped after the test."""
    with contextlib.ExitStack() as stack:

        def start(**env: str) -> DaemonProcess:
            return stack.enter_context(running_daemon({**daemon_env, **env}))

        yield start


def index(d: DaemonProcess, directory: Path) -> dict[str, str]:
    """Import every model of ``directory``; file stem -> index name."""
    out = d.cli("import", str(directory), "--json")
    assert out.returncode == 0, out.stderr
    return {
        Path(m["path"]).name.removesuffix(".gguf"): m["name"]
        for m in json.loads(d.cli("ls", "--json").stdout)
    }


def chat(d: DaemonProcess, model: str) -> tuple[int, object, dict]:
    """(status, body, headers) of one chat completion through the router."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", d.settings.port, timeout=60)
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            headers={"Content-Type": "application/json"},
            body=json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        )
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, json.loads(body or b"null"), dict(resp.getheaders())
    finally:
        conn.close()


def ok(d: DaemonProcess, model: str) -> None:
    status, body, _ = chat(d, model)
    assert status == 200, (model, status, body)


def live(d: DaemonProcess) -> dict[str, dict]:
    """Instances that hold memory now, by model file stem."""
    status, items = api(d, "GET", "/api/v1/instances")
    assert status == 200, items
    return {
        Path(i["model"]).name.removesuffix(".gguf"): i
        for i in items
        if i["desired"] == "running" and i["state"] in ("starting", "ready", "unhealthy")
    }


def on(inst: dict) -> dict[str, int]:
    """device id -> bytes the instance's plan puts there."""
    assert inst["placement"] and inst["placement"]["fits"], inst
    return {
        dev["id"]: dev["used_bytes"] for dev in inst["placement"]["devices"] if dev["used_bytes"]
    }


def assert_nothing_past_free(instances: dict[str, dict]) -> dict[str, int]:
    """No device holds more than its free memory minus the margin; returns the sums."""
    free: dict[str, int] = {}
    total: dict[str, int] = {}
    for inst in instances.values():
        for dev in inst["placement"]["devices"]:
            free[dev["id"]] = min(free.get(dev["id"], dev["free_bytes"]), dev["free_bytes"])
            total[dev["id"]] = total.get(dev["id"], 0) + dev["used_bytes"]
    for dev, used in total.items():
        assert used <= free[dev] - MARGIN, (dev, used, free[dev], instances.keys())
    return total


SIMULATED = {"CORRAL_FIT_DEVICES": "12GiB,8GiB,host=3GiB", "CORRAL_ROUTER_MAX_INSTANCES": "0"}


def test_a_start_that_does_not_fit_evicts_the_least_recently_used(start_daemon, tmp_path):
    d = start_daemon(**SIMULATED)
    dense(tmp_path / "m" / "alpha.gguf", 40)  # 7.8 GiB: only the 12 GiB card takes it
    dense(tmp_path / "m" / "beta.gguf", 30, ctx=8192)  # 6.5 GiB
    dense(tmp_path / "m" / "gamma.gguf", 40)  # 7.8 GiB: room for it only if one goes
    names = index(d, tmp_path / "m")

    ok(d, names["alpha"])
    ok(d, names["beta"])
    now = live(d)
    assert on(now["alpha"]).keys() == {"gpu0", "host"}
    assert on(now["beta"]).keys() == {"gpu1", "host"}  # not on gpu0 past its free memory
    assert_nothing_past_free(now)

    ok(d, names["alpha"])  # beta is now the least recently used
    ok(d, names["gamma"])
    now = live(d)
    assert set(now) == {"alpha", "gamma"}, now.keys()
    assert {"gpu0", "gpu1"} <= on(now["gamma"]).keys()  # split into what beta left
    assert_nothing_past_free(now)
    assert "evicted (least recently used on" in d.log_text()


def test_pinned_busy_and_user_instances_are_kept_and_the_answer_is_503(start_daemon, tmp_path):
    import http.client

    d = start_daemon(**SIMULATED)
    keeper = dense(tmp_path / "m" / "keeper.gguf", 18)  # 3.9 GiB each
    dense(tmp_path / "m" / "busy.gguf", 18, tokens=200, token_delay=0.02)
    users = dense(tmp_path / "m" / "users.gguf", 18)
    dense(tmp_path / "m" / "big.gguf", 40)  # 7.8 GiB
    names = index(d, tmp_path / "m")
    status, body = api(d, "PUT", "/api/v1/presets/keeper", {"model": str(keeper), "pinned": True})
    assert status in (200, 201), body

    ok(d, "keeper")  # the least recently used of all, but pinned
    conn = http.client.HTTPConnection("127.0.0.1", d.settings.port, timeout=60)
    conn.request(
        "POST",
        "/v1/chat/completions",
        headers={"Content-Type": "application/json"},
        body=json.dumps(
            {
                "model": names["busy"],
                "stream": True,
                "messages": [{"role": "user", "content": "long"}],
            }
        ),
    )
    stream = conn.getresponse()
    assert stream.status == 200
    stream.read1(100)  # busy has a request in flight
    launch(d, users, name="users")  # origin user
    before = live(d)
    assert before["keeper"]["origin"] == "router" and before["keeper"]["pinned"]
    assert before["users"]["origin"] == "user"
    assert_nothing_past_free(before)

    status, body, headers = chat(d, names["big"])
    assert status == 503, body
    assert int(headers["retry-after"]) > 0
    msg = body["error"]["message"]
    assert "is short" in msg and "gpu" in msg, msg
    assert "keeper (pinned)" in msg and "busy (busy)" in msg and "users (launched by a user)" in msg
    assert set(live(d)) == set(before)  # nothing was stopped for nothing

    rest = stream.read()  # the busy one finishes: now it may go
    conn.close()
    assert b"[DONE]" in rest
    ok(d, names["big"])
    after = live(d)
    assert set(after) == {"keeper", "users", "big"}, after.keys()
    assert_nothing_past_free(after)


def test_a_model_larger_than_the_machine_is_409_no_room_and_evicts_nothing(start_daemon, tmp_path):
    d = start_daemon(CORRAL_FIT_DEVICES="8GiB,host=3GiB", CORRAL_ROUTER_MAX_INSTANCES="0")
    dense(tmp_path / "m" / "small.gguf", 12)
    dense(tmp_path / "m" / "huge.gguf", 60)  # 11 GiB: more than card and host together
    names = index(d, tmp_path / "m")
    ok(d, names["small"])
    status, body, _ = chat(d, names["huge"])  # not even with small gone: retrying won't help
    assert status == 409 and body["error"]["code"] == 409, body
    assert "does not fit" in body["error"]["message"]
    assert set(live(d)) == {"small"}


# ------------------------------------------------------------------- fake nvidia-smi


def fake_nvidia_smi(directory: Path, recorded: str) -> Path:
    """An ``nvidia-smi`` that answers the GPU query with a recorded output and reports
    no compute processes (a driver that has not seen any allocation yet)."""
    directory.mkdir(parents=True, exist_ok=True)
    tool = directory / "nvidia-smi"
    tool.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        "  *--query-compute-apps*) exit 0 ;;\n"
        f"  *) cat '{RECORDED / recorded}' ;;\n"
        "esac\n"
    )
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return directory


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no MemAvailable in /proc/meminfo")


def layers_that_fit_only_without(victim: dict, instances: dict[str, dict], scratch: Path) -> int:
    """A layer count for a model that does not fit beside ``instances`` on their devices
    (the host with this machine's free RAM now) but does once ``victim`` is gone: the
    middle of that window, so RAM moving a little meanwhile changes nothing."""
    from corral.fit import estimate, planner
    from corral.fit.devices import Device, Devices

    views = next(iter(instances.values()))["placement"]["devices"]
    gpus = [
        Device(
            id=v["id"],
            name=v["name"],
            kind="gpu",
            total_bytes=v["total_bytes"],
            free_bytes=v["free_bytes"],
        )
        for v in views
        if v["kind"] == "gpu"
    ]
    free = mem_available()
    devices = Devices(
        gpus=gpus,
        host=Device(id="host", name="host", kind="host", total_bytes=free, free_bytes=free),
    )

    def committed(insts) -> dict[str, int]:  # as the daemon counts loaded instances
        out: dict[str, int] = {}
        for inst in insts:
            for v in inst["placement"]["devices"]:
                held = v["weights_bytes"] if v["kind"] == "host" else v["used_bytes"]
                out[v["id"]] = out.get(v["id"], 0) + held
        return out

    with_all = committed(instances.values())
    without = committed(i for i in instances.values() if i["name"] != victim["name"])

    def fits(n: int, held: dict[str, int]) -> bool:
        shape = estimate.load_model(str(dense(scratch / f"l{n}.gguf", n)))
        return planner.plan(shape, [], devices, margin=MARGIN, committed=held).fits

    lo = next(n for n in range(40, 400, 4) if not fits(n, with_all))
    hi = next(n for n in range(lo, 400, 2) if not fits(n, without)) - 2
    assert hi > lo + 8, (lo, hi)  # a window wide enough to land in
    return (lo + hi) // 2


def test_detected_cards_take_two_models_apart_and_eviction_frees_the_lru(start_daemon, tmp_path):
    """RTX 3060 (11938 MiB free) + RTX 2080 (7967 MiB free) from a recorded nvidia-smi,
    and this machine's RAM as the host: the free figures stay where they are while
    instances start, so only the committed projections keep the cards from overfilling."""
    bin_dir = fake_nvidia_smi(tmp_path / "bin", "nvidia-smi-2gpu.csv")
    d = start_daemon(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", CORRAL_ROUTER_MAX_INSTANCES="0"
    )
    dense(tmp_path / "m" / "alpha.gguf", 40)  # 7.8 GiB: the 3060 only
    dense(tmp_path / "m" / "beta.gguf", 30)  # 6.1 GiB: what the 2080 takes
    names = index(d, tmp_path / "m")
    ok(d, names["alpha"])
    ok(d, names["beta"])
    now = live(d)
    assert on(now["alpha"]).keys() == {"gpu0", "host"}
    assert on(now["beta"]).keys() == {"gpu1", "host"}
    names_on = {dev["id"]: dev["name"] for dev in now["alpha"]["placement"]["devices"]}
    assert names_on["gpu0"] == "NVIDIA GeForce RTX 3060"
    assert names_on["gpu1"] == "NVIDIA GeForce RTX 2080"
    assert_nothing_past_free(now)

    # A model larger than the cards' leftovers and this machine's RAM together, which
    # fits once beta's card is free again: its layers fill the cards, the rest the RAM.
    n_layer = layers_that_fit_only_without(now["beta"], now, tmp_path / "probe")
    dense(tmp_path / "m2" / "gamma.gguf", n_layer)
    names = index(d, tmp_path / "m2")

    ok(d, names["alpha"])  # beta is the least recently used now
    ok(d, names["gamma"])
    now = live(d)
    assert set(now) == {"alpha", "gamma"}, now.keys()
    assert on(now["gamma"]).get("gpu1"), now["gamma"]["placement"]  # where beta was
    assert_nothing_past_free(now)
