"""The devices a plan sees: simulated specs, and detection through gpu.py's Probe seam
replaying recorded nvidia-smi / rocm-smi / sysfs outputs (tests/fakes/gpu_outputs)."""

from __future__ import annotations

import pytest

from corral import gpu
from corral.errors import UsageError
from corral.fit.devices import Device, GiB, MiB, detect_devices, human_bytes, parse_size, parse_spec
from tests.unit.test_gpu import FakeProbe, rec


class CountingProbe(FakeProbe):
    """FakeProbe whose nvidia-smi answer can change between calls (free memory moves)."""

    def __init__(self, answers: list[str], **kw) -> None:
        super().__init__(**kw)
        self.answers = answers
        self.smi_calls = 0

    def run(self, argv, timeout=5.0):
        if argv[0] == "nvidia-smi":
            self.smi_calls += 1
            return 0, self.answers[min(self.smi_calls, len(self.answers)) - 1]
        return super().run(argv, timeout)


@pytest.mark.parametrize(
    "text,want",
    [
        ("12GiB", 12 * GiB),
        ("12G", 12 * GiB),
        ("12gb", 12 * GiB),
        ("8192MiB", 8 * GiB),
        ("8192M", 8 * GiB),
        ("1.5GiB", 3 * GiB // 2),
        ("1TiB", 1024 * GiB),
        ("4096", 4096),
        (" 2 GiB ", 2 * GiB),
    ],
)
def test_sizes(text, want):
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["", "GiB", "12XB", "-1GiB", "1e3G", "12 G B", "NaN"])
def test_bad_sizes_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_size(text)


def test_spec_lists_gpus_in_order():
    gpus, host = parse_spec("12GiB,8GiB")
    assert [(g.id, g.kind, g.free_bytes, g.total_bytes) for g in gpus] == [
        ("gpu0", "gpu", 12 * GiB, 12 * GiB),
        ("gpu1", "gpu", 8 * GiB, 8 * GiB),
    ]
    assert host is None
    assert all(g.simulated for g in gpus)


def test_spec_repeats_and_host():
    gpus, host = parse_spec("4x8GiB,host=64GiB")
    assert [g.id for g in gpus] == ["gpu0", "gpu1", "gpu2", "gpu3"]
    assert {g.free_bytes for g in gpus} == {8 * GiB}
    assert host == 64 * GiB


@pytest.mark.parametrize("spec", ["none", "NONE", "none,host=16GiB"])
def test_none_is_no_gpu(spec):
    assert parse_spec(spec)[0] == []


@pytest.mark.parametrize(
    "spec", ["", "none,8GiB", "0GiB", "0x8GiB", "65x1GiB", "12GiB,,8GiB", "host=", "gpu"]
)
def test_bad_specs(spec):
    with pytest.raises(UsageError):
        parse_spec(spec)


def test_simulated_devices_take_the_host_ram_from_the_probe():
    probe = FakeProbe()  # recorded /proc/meminfo: 64 GB total, 58 GB available
    devs = detect_devices("12GiB", probe)
    assert [d.id for d in devs.all] == ["gpu0", "host"]
    assert devs.host.kind == "host"
    assert devs.host.total_bytes == 65763240 * 1024
    assert devs.host.free_bytes == 58420388 * 1024
    assert probe.calls == []  # no GPU tool runs for a simulated spec


def test_simulated_host_ram_overrides():
    devs = detect_devices("none,host=16GiB", FakeProbe())
    assert devs.gpus == [] and devs.host.free_bytes == devs.host.total_bytes == 16 * GiB


def test_detected_nvidia_gpus_with_free_memory():
    devs = detect_devices(
        None, FakeProbe({"nvidia-smi": (0, rec("nvidia-smi-2gpu.csv"))}, root=None)
    )
    assert [(d.id, d.name, d.vendor, d.index) for d in devs.gpus] == [
        ("gpu0", "NVIDIA GeForce RTX 3060", "nvidia", 0),
        ("gpu1", "NVIDIA GeForce RTX 2080", "nvidia", 1),
    ]
    assert devs.gpus[0].total_bytes == 12288 * MiB and devs.gpus[0].free_bytes == 11938 * MiB
    assert [d.backend_name(i) for i, d in enumerate(devs.gpus)] == ["CUDA0", "CUDA1"]
    assert devs.gpus[0].visible_env() == "CUDA_VISIBLE_DEVICES"
    assert devs.host.id == "host"


def test_free_memory_is_read_again_at_every_call():
    before = rec("nvidia-smi-1gpu.csv")
    after = before.replace(before.split(",")[3], " 1024", 1)
    probe = CountingProbe([before, after], root=None)
    first = detect_devices(None, probe).gpus[0].free_bytes
    second = detect_devices(None, probe).gpus[0].free_bytes
    assert second == 1024 * MiB != first
    assert probe.smi_calls == 2


def test_amd_from_rocm_smi_is_a_rocm_device():
    probe = FakeProbe({"rocm-smi": (0, rec("rocm-smi-7900xtx.json"))})
    devs = detect_devices(None, probe)
    (card,) = devs.gpus
    assert card.vendor == "amd" and card.name == "Radeon RX 7900 XTX"
    assert card.free_bytes == 25753026560 - 1124073472
    assert card.backend_name(0) == "ROCm0" and card.visible_env() == "HIP_VISIBLE_DEVICES"


def test_a_gpu_without_memory_figures_is_left_out_with_a_warning(monkeypatch):
    host = gpu.HostInfo(
        os="linux",
        arch="x86_64",
        cpu_model="cpu",
        cores=2,
        threads=2,
        ram_total=8 * GiB,
        ram_free=6 * GiB,
        gpus=[gpu.GPU(index=0, vendor="intel", name="Intel Arc")],
    )
    monkeypatch.setattr(gpu, "detect", lambda probe=None: host)
    devs = detect_devices(None)
    assert devs.gpus == []
    assert any("Intel Arc" in w and "left out" in w for w in devs.warnings)
    assert devs.host.free_bytes == 6 * GiB


def test_view_and_human_bytes():
    d = Device(id="gpu0", name="x", kind="gpu", total_bytes=GiB, free_bytes=GiB // 2)
    assert d.view() == {
        "id": "gpu0",
        "name": "x",
        "kind": "gpu",
        "total_bytes": GiB,
        "free_bytes": GiB // 2,
    }
    assert human_bytes(3 * GiB // 2) == "1.5 GiB" and human_bytes(512) == "512 B"
