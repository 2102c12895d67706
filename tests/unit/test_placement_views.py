"""How an instance's placement is shown: the CLI's DEVICES cell and ``placed:`` line, and
the per-device gauges of /metrics (projected from the plans, used from the driver)."""

from __future__ import annotations

import math
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from corral.cli.instances import devices_cell, placement_line
from corral.metrics import Metrics
from tests.unit.test_gpu import NO_SYSFS, FakeProbe, smi

GiB = 2**30


def device(id_, used, *, kind="gpu", layers=0, weights=0):
    return {
        "id": id_,
        "name": f"simulated {id_}",
        "kind": kind,
        "total_bytes": 12 * GiB,
        "free_bytes": 12 * GiB,
        "layers": layers,
        "weights_bytes": weights,
        "kv_bytes": 0,
        "compute_bytes": 0,
        "used_bytes": used,
    }


def placement(*devices, real=None):
    return {
        "fits": True,
        "devices": list(devices),
        "added": [["--gpu-layers", "49"]],
        "env": {},
        "context": 32768,
        "cache_type_k": "f16",
        "cache_type_v": "f16",
        "notes": [],
        "real": real,
    }


PLACED = placement(
    device("gpu0", int(2.1 * GiB), layers=18),
    device("gpu1", 0),
    device("host", int(0.3 * GiB), kind="host"),
)


# --------------------------------------------------------------------------- CLI


def test_devices_cell_lists_the_devices_a_plan_uses_and_skips_empty_ones():
    assert devices_cell(PLACED) == "gpu0:2.1G,host:0.3G"


def test_devices_cell_is_a_dash_when_not_planned():
    assert devices_cell(None) == "-"
    assert devices_cell(placement(device("gpu0", 0))) == "-"


def test_devices_cell_escapes_a_device_id_with_control_characters():
    cell = devices_cell(placement(device("gpu0\x1b[31m", GiB)))
    assert "\x1b" not in cell and cell.endswith(":1.0G")


def test_placement_line_names_layers_bytes_context_and_kv():
    line = placement_line({"placement": PLACED})
    assert line.startswith("placed: gpu0 18 layers 2.1 GiB, host ")
    assert "gpu1" not in line
    assert line.endswith("(ctx 32768, KV f16/f16)")


def test_placement_line_is_none_when_not_planned():
    assert placement_line({"placement": None}) is None
    assert placement_line({}) is None  # a daemon from before placements


# --------------------------------------------------------------------------- /metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def records(*recs):
    return SimpleNamespace(list=lambda: list(recs))


def rec(name, state, placement_):
    return SimpleNamespace(
        name=name,
        model=f"/m/{name}.gguf",
        state=state,
        restarts=0,
        ready_at=None,
        started_at=None,
        placement=placement_,
    )


def test_metrics_projected_bytes_per_live_instance_and_their_sum_per_device():
    m = Metrics()
    m.attach(
        records(
            rec("a", "ready", placement(device("gpu0", 3 * GiB), device("host", GiB, kind="host"))),
            rec("b", "starting", placement(device("gpu0", 2 * GiB), device("gpu1", 0))),
            rec("gone", "stopped", placement(device("gpu0", 5 * GiB))),  # holds nothing now
            rec("typed", "ready", None),
        )
    )  # --no-fit: unknown, not zero
    got = samples(m)
    projected = {k[1]: v for k, v in got.items() if k[0] == "corral_instance_projected_bytes"}
    assert projected == {
        (("device", "gpu0"), ("instance", "a")): 3 * GiB,
        (("device", "host"), ("instance", "a")): GiB,
        (("device", "gpu0"), ("instance", "b")): 2 * GiB,
    }
    per_device = {k[1]: v for k, v in got.items() if k[0] == "corral_device_projected_bytes"}
    assert per_device == {(("device", "gpu0"),): 5 * GiB, (("device", "host"),): GiB}


def test_metrics_real_bytes_once_llama_server_reported_them():
    m = Metrics()
    m.attach(
        records(
            rec(
                "a",
                "ready",
                placement(device("gpu0", 3 * GiB), real={"gpu0": 2 * GiB, "host": 123}),
            )
        )
    )
    got = samples(m)
    assert got[("corral_instance_real_bytes", (("device", "gpu0"), ("instance", "a")))] == 2 * GiB
    assert got[("corral_instance_real_bytes", (("device", "host"), ("instance", "a")))] == 123


def test_metrics_device_used_bytes_from_the_driver_numbered_as_the_planner_does():
    m = Metrics()
    m.attach(records(), gpu_probe=FakeProbe(smi("nvidia-smi-2gpu.csv"), **NO_SYSFS))
    m.refresh_gpus()
    got = samples(m)
    MiB = 2**20
    assert got[("corral_device_used_bytes", (("device", "gpu0"),))] == (12288 - 11938) * MiB
    assert got[("corral_device_used_bytes", (("device", "gpu1"),))] == (8192 - 7967) * MiB
    assert got[("corral_device_total_bytes", (("device", "gpu1"),))] == 8192 * MiB


def test_metrics_device_used_bytes_absent_without_gpus():
    m = Metrics()
    m.attach(records(), gpu_probe=FakeProbe(**NO_SYSFS))
    m.refresh_gpus()
    assert not [k for k in samples(m) if k[0] == "corral_device_used_bytes"]


def test_metrics_gpu_without_memory_figures_does_not_shift_the_numbering():
    m = Metrics()
    m.attach(records())
    gpus = [
        SimpleNamespace(index=0, name="Intel Arc", vram_total=None, vram_free=None),
        SimpleNamespace(index=0, name="RTX", vram_total=8 * GiB, vram_free=6 * GiB),
    ]
    m._live._gpus = (math.inf, gpus)  # as refresh_gpus leaves them
    got = samples(m)
    assert got[("corral_device_used_bytes", (("device", "gpu0"),))] == 2 * GiB
    assert ("corral_device_used_bytes", (("device", "gpu1"),)) not in got
