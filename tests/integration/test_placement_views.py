"""Placements as the user sees them, end to end: ``corral run`` (its ``placed:`` line,
``--no-fit``, a refusal that says by how much), ``ps`` (DEVICES, ``--json``), the API's
``fit`` field and /metrics.

The daemon is a real ``corral serve`` with the fake llama-server, planning on simulated
devices (``CORRAL_FIT_DEVICES``: two GPUs of 12 and 8 GiB, 16 GiB of host RAM) so the
plan is the same on any machine. The model is a GGUF header in the shape of
Qwen2.5-14B Q4_K_M (``tests/fakes/gguf_shapes.py``: 48 layers, sparse data): the real
estimator reads it, the fake server only checks its magic.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import running_daemon
from tests.integration.conftest import api, assert_error, get

pytest.importorskip("gguf")

from tests.fakes.gguf_shapes import dense_14b  # noqa: E402

DEVICES = "12GiB,8GiB,host=16GiB"
#: context and KV types fixed by hand: 25 GiB of f16 KV cache does not fit 36 GiB minus margins
TOO_BIG = ["-c", "131072", "-ctk", "f16", "-ctv", "f16"]


@pytest.fixture
def model(tmp_path) -> Path:
    (tmp_path / "models").mkdir()
    return dense_14b(tmp_path / "models" / "qwen-14b-Q4_K_M.gguf")


@pytest.fixture
def daemon(daemon_env):
    with running_daemon({**daemon_env, "CORRAL_FIT_DEVICES": DEVICES}) as d:
        yield d


def ok(proc):
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def ps_json(daemon) -> dict[str, dict]:
    return {i["name"]: i for i in json.loads(ok(daemon.cli("ps", "--json")).stdout)}


def ps_rows(daemon) -> dict[str, dict[str, str]]:
    """``corral ps`` parsed by its header: name -> {column: cell} (no cell holds spaces)."""
    lines = ok(daemon.cli("ps")).stdout.splitlines()
    head = lines[0].split()
    return {
        cells[0]: dict(zip(head, cells, strict=False))
        for cells in (line.split() for line in lines[1:])
    }


def test_run_prints_the_placement_it_got_and_ps_shows_its_devices(daemon, model):
    proc = ok(daemon.cli("run", str(model), "--name", "big"))
    assert proc.stdout.strip().splitlines() == [proc.stdout.strip()]  # stdout: one line still
    placed = [line for line in proc.stderr.splitlines() if line.startswith("placed: ")]
    assert len(placed) == 1, proc.stderr
    inst = get(daemon, "big")
    p = inst["placement"]
    assert p["fits"] is True
    used = {d["id"]: d for d in p["devices"] if d["used_bytes"]}
    assert {"gpu0", "gpu1"} <= set(used)
    for dev in ("gpu0", "gpu1"):
        assert f"{dev} {used[dev]['layers']} layers" in placed[0]
    assert f"ctx {p['context']}" in placed[0]
    # what the plan added is what runs
    for flag, value in p["added"]:
        assert flag in inst["argv"] and (value is None or value in inst["argv"])
    assert "--gpu-layers" in [f for f, _ in p["added"]]

    row = ps_rows(daemon)["big"]
    cells = dict(c.split(":") for c in row["DEVICES"].split(","))
    assert set(cells) == set(used)
    assert cells["gpu0"] == f"{used['gpu0']['used_bytes'] / 2**30:.1f}G"
    assert ps_json(daemon)["big"]["placement"] == p


def test_run_no_fit_launches_exactly_the_flags_typed(daemon, model):
    proc = ok(daemon.cli("run", str(model), "--name", "typed", "--no-fit", "-c", "2048"))
    assert "placed:" not in proc.stderr
    inst = get(daemon, "typed")
    assert inst["placement"] is None
    assert inst["flags"] == ["--ctx-size 2048"]
    assert "--gpu-layers" not in inst["argv"] and "--tensor-split" not in inst["argv"]
    assert ps_rows(daemon)["typed"]["DEVICES"] == "-"
    assert ps_json(daemon)["typed"]["placement"] is None


def test_run_that_does_not_fit_is_refused_with_exit_4_and_by_how_much(daemon, model):
    proc = daemon.cli("run", str(model), "--name", "huge", *TOO_BIG)
    assert proc.returncode == 4, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    [line] = proc.stderr.strip().splitlines()
    assert "does not fit by" in line and "GiB" in line, line
    status, _ = api(daemon, "GET", "/api/v1/instances/huge")
    assert status == 404  # nothing was launched
    ok(daemon.cli("run", str(model), "--name", "huge", "--no-fit", *TOO_BIG))  # as typed


def test_api_fit_false_is_not_planned_and_the_default_is(daemon, model):
    body = {"model": str(model), "wait": True}
    status, planned = api(daemon, "POST", "/api/v1/instances", {**body, "name": "planned"})
    assert status == 201, planned
    status, typed = api(
        daemon, "POST", "/api/v1/instances", {**body, "name": "as-typed", "fit": False}
    )
    assert status == 201, typed
    assert planned["placement"] and planned["placement"]["devices"]
    assert typed["placement"] is None
    status, plan = api(
        daemon, "POST", "/api/v1/instances/plan", {"model": str(model), "fit": False}
    )
    assert status == 200 and plan["placement"] is None, plan
    status, payload = api(
        daemon, "POST", "/api/v1/instances", {**body, "name": "huge", "flags": TOO_BIG}
    )
    err = assert_error(status, payload, 409, "no_room")
    assert "does not fit" in err["message"]


def test_metrics_export_the_projected_bytes_of_each_instance_per_device(daemon, model):
    ok(daemon.cli("run", str(model), "--name", "metered"))
    ok(daemon.cli("run", str(model), "--name", "unplanned", "--no-fit"))
    used = {
        d["id"]: d["used_bytes"]
        for d in get(daemon, "metered")["placement"]["devices"]
        if d["used_bytes"]
    }
    got = scrape(daemon)
    assert got["corral_instance_projected_bytes"] == {
        (("device", dev), ("instance", "metered")): n for dev, n in used.items()
    }
    assert got["corral_device_projected_bytes"] == {(("device", d),): n for d, n in used.items()}
    ok(daemon.cli("stop", "metered"))
    got = scrape(daemon)
    assert got["corral_instance_projected_bytes"] == {}  # a stopped instance holds none
    assert got["corral_device_projected_bytes"] == {}


def test_ps_without_a_daemon_still_shows_the_devices(daemon, model):
    ok(daemon.cli("run", str(model), "--name", "survivor"))
    want = ps_rows(daemon)["survivor"]["DEVICES"]
    assert want != "-"
    daemon.kill9()  # the instance lives on; ps reads the store
    assert ps_rows(daemon)["survivor"]["DEVICES"] == want


def scrape(daemon) -> dict[str, dict[tuple, float]]:
    """/metrics as {metric: {sorted label pairs: value}}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(daemon.settings.daemon_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, {})
        for s in family.samples:
            out[family.name][tuple(sorted(s.labels.items()))] = s.value
    return out
