"""GPU/host detection against recorded tool outputs (tests/fakes/gpu_outputs/)."""

from __future__ import annotations

import glob
import json
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral import gpu
from corral.gpu import (
    GPU,
    HostInfo,
    MiB,
    amdgpu_targets,
    best_backend,
    cuda_architectures,
    detect,
    gfx_from_version,
    parse_cpuinfo,
    parse_nvidia_smi,
    parse_rocm_smi,
)

OUT = Path(__file__).resolve().parents[1] / "fakes" / "gpu_outputs"
ROOT = OUT / "sysfs"


def rec(name: str) -> str:
    return (OUT / name).read_text()


class FakeProbe:
    """Replays recorded outputs; files come from a fake root (default: the recorded sysfs)."""

    def __init__(
        self,
        commands: dict[str, tuple[int, str]] | None = None,
        root: Path | None = ROOT,
        platform: str = "linux",
        machine: str = "x86_64",
        libs: tuple[str, ...] = (),
        nvml: object | None = None,
    ) -> None:
        self.commands = commands or {}
        self.root = root
        self.platform = platform
        self.machine = machine
        self.libs = libs
        self._nvml = nvml
        self.calls: list[list[str]] = []

    def run(self, argv, timeout=5.0):
        self.calls.append(argv)
        assert timeout == 5.0
        return self.commands.get(argv[0], (gpu.RC_NOT_INSTALLED, ""))

    def read(self, path):
        if self.root is None:
            return None
        p = self.root / path.lstrip("/")
        return p.read_text() if p.is_file() else None

    def glob(self, pattern):
        if self.root is None:
            return []
        prefix = str(self.root)
        return sorted(p[len(prefix) :] for p in glob.glob(prefix + pattern))

    def find_library(self, name):
        return f"lib{name}.so.1" if name in self.libs else None

    def nvml(self):
        return self._nvml

    def cpu_count(self):
        return 4


def smi(name: str, rc: int = 0) -> dict:
    return {"nvidia-smi": (rc, rec(name))}


NO_SYSFS = {"root": None}


# ----------------------------------------------------------------- nvidia-smi parsing


def test_nvidia_smi_zero_gpus_is_not_an_error():
    assert parse_nvidia_smi(6, rec("nvidia-smi-0gpu.txt")) == ([], [])


def test_nvidia_smi_not_installed_is_silent():
    assert parse_nvidia_smi(gpu.RC_NOT_INSTALLED, "") == ([], [])


def test_nvidia_smi_one_gpu_exact_values():
    gpus, warnings = parse_nvidia_smi(0, rec("nvidia-smi-1gpu.csv"))
    assert warnings == []
    assert gpus == [
        GPU(
            index=0,
            vendor="nvidia",
            name="NVIDIA GeForce RTX 3060",
            vram_total=12288 * MiB,
            vram_free=11938 * MiB,
            compute_capability="8.6",
            driver_version="550.120",
            uuid="GPU-5a1c3e2b-8f0d-4c6e-9b7a-2d4f6e8a0c1e",
            source="nvidia-smi",
        )
    ]
    assert gpus[0].vram_total == 12884901888


def test_nvidia_smi_two_heterogeneous_gpus():
    gpus, warnings = parse_nvidia_smi(0, rec("nvidia-smi-2gpu.csv"))
    assert warnings == []
    assert [(g.index, g.name, g.vram_total, g.vram_free, g.compute_capability) for g in gpus] == [
        (0, "NVIDIA GeForce RTX 3060", 12288 * MiB, 11938 * MiB, "8.6"),
        (1, "NVIDIA GeForce RTX 2080", 8192 * MiB, 7967 * MiB, "7.5"),
    ]
    assert gpus[1].uuid == "GPU-0b7e9d41-3c2a-4f5e-8d6b-1a9c7e5f3b2d"


def test_nvidia_smi_broken_output_warns():
    gpus, warnings = parse_nvidia_smi(0, rec("nvidia-smi-broken.txt"))
    assert gpus == []
    assert len(warnings) == 1 and "nvidia-smi output not understood" in warnings[0]


def test_nvidia_smi_no_driver_warns():
    gpus, warnings = parse_nvidia_smi(9, rec("nvidia-smi-nodriver.txt"))
    assert gpus == []
    assert warnings == [
        "nvidia-smi failed (exit 9): NVIDIA-SMI has failed because it "
        "couldn't communicate with the NVIDIA driver. Make sure that the "
        "latest NVIDIA driver is installed and running."
    ]


@pytest.mark.parametrize(
    "out", ["", "\x00\xff garbage", "a, b, c, d, e, f, g\n", '0, "unterminated, 1, 2, 3, 4, 5\n']
)
def test_nvidia_smi_garbage_never_raises(out):
    gpus, warnings = parse_nvidia_smi(0, out)
    assert gpus == [] and (warnings or not out)


def test_nvidia_smi_na_fields():
    gpus, warnings = parse_nvidia_smi(
        0, "0, NVIDIA GeForce GTX 1080, 8192, [N/A], [N/A], 470.256.02, [N/A]\n"
    )
    assert warnings == []
    assert gpus[0].vram_free is None and gpus[0].compute_capability is None
    assert gpus[0].uuid is None and gpus[0].driver_version == "470.256.02"


def test_nvidia_smi_timeout_warns():
    assert parse_nvidia_smi(gpu.RC_TIMEOUT, "") == ([], ["nvidia-smi timed out after 5s"])


# ----------------------------------------------------------------- NVML


def fake_nvml(fail_init: bool = False):
    class Mem:
        total, free = 12288 * MiB, 10000 * MiB

    def init():
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    return types.SimpleNamespace(
        nvmlInit=init,
        nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: b"550.120",
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetMemoryInfo=lambda h: Mem(),
        nvmlDeviceGetCudaComputeCapability=lambda h: (8, 6),
        nvmlDeviceGetName=lambda h: "NVIDIA GeForce RTX 3060",
        nvmlDeviceGetUUID=lambda h: "GPU-abc",
    )


def test_nvml_preferred_over_nvidia_smi():
    probe = FakeProbe(smi("nvidia-smi-2gpu.csv"), nvml=fake_nvml(), **NO_SYSFS)
    host = detect(probe)
    assert [(g.name, g.vram_free, g.compute_capability, g.source) for g in host.gpus] == [
        ("NVIDIA GeForce RTX 3060", 10000 * MiB, "8.6", "nvml")
    ]
    assert ["nvidia-smi"] not in [c[:1] for c in probe.calls]


def test_nvml_failure_falls_back_to_nvidia_smi():
    host = detect(FakeProbe(smi("nvidia-smi-1gpu.csv"), nvml=fake_nvml(fail_init=True), **NO_SYSFS))
    assert [g.source for g in host.gpus] == ["nvidia-smi"]
    assert host.warnings == []


# ----------------------------------------------------------------- AMD


def test_rocm_smi_7900xtx_exact_values():
    gpus, warnings = parse_rocm_smi(0, rec("rocm-smi-7900xtx.json"))
    assert warnings == []
    assert gpus == [
        GPU(
            index=0,
            vendor="amd",
            name="Radeon RX 7900 XTX",
            vram_total=25753026560,
            vram_free=25753026560 - 1124073472,
            gfx_target="gfx1100",
            driver_version="6.8.0-45-generic",
            uuid="45118",
            source="rocm-smi",
        )
    ]


def test_rocm_smi_with_banner_lines():
    out = "WARNING: AMD GPU device(s) is/are in a low-power state\n" + rec("rocm-smi-7900xtx.json")
    gpus, warnings = parse_rocm_smi(0, out)
    assert warnings == [] and gpus[0].gfx_target == "gfx1100"


@pytest.mark.parametrize("out", ["", "{not json", '{"card0": 5}', "[1, 2]"])
def test_rocm_smi_garbage_warns(out):
    gpus, warnings = parse_rocm_smi(0, out)
    assert gpus == [] and len(warnings) == 1 and "rocm-smi" in warnings[0]


def test_sysfs_fallback_with_kfd_gfx_target():
    host = detect(FakeProbe())  # no rocm-smi, no nvidia-smi: only the recorded sysfs
    assert host.warnings == []
    assert [g.to_dict() for g in host.gpus] == [
        {
            "index": 0,
            "vendor": "amd",
            "name": "AMD GPU 0x744c",
            "vram_total": 25753026560,
            "vram_free": 25753026560 - 1124073472,
            "compute_capability": None,
            "gfx_target": "gfx1100",
            "driver_version": None,
            "uuid": None,
            "source": "sysfs",
        }
    ]
    assert best_backend(host) == ("rocm", "AMD GPU 0x744c (gfx1100) found")
    assert amdgpu_targets(host) == "gfx1100"


def test_rocm_smi_wins_over_sysfs():
    host = detect(FakeProbe({"rocm-smi": (0, rec("rocm-smi-7900xtx.json"))}))
    assert [(g.name, g.source) for g in host.gpus] == [("Radeon RX 7900 XTX", "rocm-smi")]


def test_broken_rocm_smi_falls_back_to_sysfs_with_warning():
    host = detect(FakeProbe({"rocm-smi": (0, "garbled")}))
    assert [g.source for g in host.gpus] == ["sysfs"]
    assert len(host.warnings) == 1 and "rocm-smi" in host.warnings[0]


@pytest.mark.parametrize(
    "version,gfx",
    [(110000, "gfx1100"), (90010, "gfx90a"), (100300, "gfx1030"), (90400, "gfx940"), (0, None)],
)
def test_gfx_from_version(version, gfx):
    assert gfx_from_version(version) == gfx


# ----------------------------------------------------------------- CPU / RAM


def test_cpuinfo_and_meminfo_exact():
    host = detect(FakeProbe())
    assert host.os == "linux" and host.arch == "x86_64"
    assert host.cpu_model == "AMD Ryzen 7 7700X 8-Core Processor"
    assert (host.cores, host.threads) == (8, 16)
    assert host.ram_total == 65763240 * 1024 and host.ram_free == 58420388 * 1024
    for flag in (
        "sse3",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
    ):
        assert flag in host.cpu_flags
    assert "amx_tile" not in host.cpu_flags and "pni" not in host.cpu_flags
    assert host.simd() == "AVX512"


def test_arm_cpuinfo():
    text = (
        "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes crc32 asimddp "
        "i8mm sve\nCPU implementer\t: 0x41\n\nprocessor\t: 1\nFeatures\t: fp asimd asimddp "
        "i8mm sve\n\nHardware\t: BCM2835\n"
    )
    model, cores, threads, flags = parse_cpuinfo(text)
    assert (model, cores, threads) == ("BCM2835", 2, 2)
    assert flags == ["asimd", "asimddp", "i8mm", "sve"]


def test_no_cpuinfo_uses_cpu_count():
    host = detect(FakeProbe(root=None))
    assert (host.cores, host.threads) == (4, 4)
    assert host.gpus == [] and host.warnings == []


# ----------------------------------------------------------------- whole host / backend


def test_zero_gpus_is_cpu_only_host():
    host = detect(FakeProbe(smi("nvidia-smi-0gpu.txt", rc=6), **NO_SYSFS))
    assert host.gpus == [] and host.warnings == []
    assert best_backend(host) == ("cpu", "no GPU found")
    assert cuda_architectures(host) == "" and amdgpu_targets(host) == ""


def test_one_nvidia_gpu_picks_cuda():
    host = detect(FakeProbe(smi("nvidia-smi-1gpu.csv"), **NO_SYSFS))
    assert best_backend(host) == ("cuda", "NVIDIA GeForce RTX 3060 (compute 8.6) found")
    assert cuda_architectures(host) == "86"


def test_two_nvidia_gpus():
    host = detect(FakeProbe(smi("nvidia-smi-2gpu.csv"), **NO_SYSFS))
    assert len(host.gpus) == 2
    assert cuda_architectures(host) == "86;75"
    assert best_backend(host) == (
        "cuda",
        "NVIDIA GeForce RTX 3060 (compute 8.6), NVIDIA GeForce RTX 2080 (compute 7.5) found",
    )


def test_cuda_architectures_unique_and_descending():
    host = HostInfo(
        os="linux",
        arch="x86_64",
        cpu_model="x",
        cores=1,
        threads=1,
        ram_total=1,
        ram_free=1,
        gpus=[
            GPU(i, "nvidia", "g", compute_capability=c)
            for i, c in enumerate(["7.5", "8.6", "7.5", "12.0"])
        ],
    )
    assert cuda_architectures(host) == "120;86;75"


def test_broken_nvidia_smi_reports_warning_not_exception():
    host = detect(FakeProbe(smi("nvidia-smi-broken.txt"), **NO_SYSFS))
    assert host.gpus == []
    assert len(host.warnings) == 1
    assert best_backend(host)[0] == "cpu"


def test_nvidia_and_amd_together_prefers_cuda():
    host = detect(
        FakeProbe({**smi("nvidia-smi-1gpu.csv"), "rocm-smi": (0, rec("rocm-smi-7900xtx.json"))})
    )
    assert [g.vendor for g in host.gpus] == ["nvidia", "amd"]
    assert best_backend(host)[0] == "cuda"


def test_vulkan_only_with_a_gpu():
    probe = FakeProbe(libs=("vulkan",), **NO_SYSFS)
    host = detect(probe)
    assert host.vulkan is True and best_backend(host)[0] == "cpu"
    host.gpus = [GPU(0, "intel", "Intel Arc A770")]
    assert best_backend(host) == ("vulkan", "Vulkan loader and Intel Arc A770 found")


def test_vulkaninfo_fallback():
    assert (
        detect(
            FakeProbe({"vulkaninfo": (0, "Vulkan Instance Version: 1.3.275\n")}, **NO_SYSFS)
        ).vulkan
        is True
    )
    assert detect(FakeProbe(**NO_SYSFS)).vulkan is False


def test_macos_metal():
    sysctl = {
        "machdep.cpu.brand_string": "Apple M2 Pro",
        "hw.physicalcpu": "12",
        "hw.logicalcpu": "12",
        "hw.memsize": "34359738368",
    }

    class MacProbe(FakeProbe):
        def run(self, argv, timeout=5.0):
            if argv[0] == "sysctl":
                return (0, sysctl[argv[-1]] + "\n") if argv[-1] in sysctl else (1, "")
            return super().run(argv, timeout)

    host = detect(MacProbe(platform="darwin", machine="arm64", root=None))
    assert (host.os, host.metal, host.cpu_model, host.cores) == ("macos", True, "Apple M2 Pro", 12)
    assert host.ram_total == 32 * 1024**3 and "neon" in host.cpu_flags
    assert best_backend(host) == ("metal", "macOS (arm64): Apple Metal")


def test_free_vram_is_reread_each_call():
    probe = FakeProbe(smi("nvidia-smi-1gpu.csv"), **NO_SYSFS)
    assert detect(probe).gpus[0].vram_free == 11938 * MiB
    probe.commands["nvidia-smi"] = (0, rec("nvidia-smi-1gpu.csv").replace("11938", "2048"))
    assert detect(probe).gpus[0].vram_free == 2048 * MiB


def test_detector_exception_becomes_warning(monkeypatch):
    def boom(probe):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(gpu, "detect_nvidia", boom)
    host = detect(FakeProbe(**NO_SYSFS))
    assert host.warnings == ["boom failed: kaboom"]


def test_to_dict_is_json():
    host = detect(FakeProbe(smi("nvidia-smi-2gpu.csv")))
    data = json.loads(json.dumps(host.to_dict()))
    assert data["gpus"][1]["compute_capability"] == "7.5"
    assert set(data) >= {
        "os",
        "arch",
        "cpu_model",
        "cores",
        "threads",
        "ram_total",
        "ram_free",
        "cpu_flags",
        "gpus",
        "vulkan",
        "metal",
        "warnings",
    }


# ----------------------------------------------------------------- the real machine


def test_real_machine_is_cpu_only_host():
    host = detect()
    assert host.cores > 0 and host.threads > 0 and host.ram_total > 0 and host.ram_free > 0
    if not host.gpus and not host.metal:  # this machine has no GPU
        assert best_backend(host) == ("cpu", "no GPU found")


def test_real_probe_missing_tool():
    assert gpu.RealProbe().run(["corral-no-such-tool-xyz"]) == (gpu.RC_NOT_INSTALLED, "")
    assert gpu.RealProbe().read("/nonexistent/file") is None


# ----------------------------------------------------------------- CLI


def test_cli_real_machine_exits_zero():
    from corral.cli.system import COMMANDS, doctor, gpus

    assert COMMANDS == [gpus, doctor]
    result = CliRunner().invoke(gpus, [])
    assert result.exit_code == 0, result.output
    assert "backend:" in result.output
    result = CliRunner().invoke(gpus, ["--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["cores"] > 0 and "backend" in data


def _patch_detect(monkeypatch, probe):
    real = gpu.detect
    monkeypatch.setattr(gpu, "detect", lambda probe_=None: real(probe))


def test_cli_cpu_only_exact_line(monkeypatch, tmp_path):
    from corral.cli.system import gpus

    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text(
        "processor\t: 0\nmodel name\t: Intel Xeon\ncpu cores\t: 2\nflags\t\t: avx avx2\n\n"
        "processor\t: 1\nmodel name\t: Intel Xeon\ncpu cores\t: 2\nflags\t\t: avx avx2\n"
    )
    (root / "proc" / "meminfo").write_text("MemTotal: 24536678 kB\nMemAvailable: 20000000 kB\n")
    _patch_detect(monkeypatch, FakeProbe(smi("nvidia-smi-0gpu.txt", rc=6), root=root))
    result = CliRunner().invoke(gpus, [])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == "no GPU found: CPU-only host (AVX2, 2 cores, 23.4 GiB RAM)"
    assert lines[-1] == "backend: cpu (no GPU found)"


def test_cli_table_two_gpus(monkeypatch):
    from corral.cli.system import gpus

    _patch_detect(monkeypatch, FakeProbe(smi("nvidia-smi-2gpu.csv"), **NO_SYSFS))
    result = CliRunner().invoke(gpus, [])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["IDX", "VENDOR", "NAME", "VRAM", "FREE", "ARCH", "DRIVER"]
    assert "NVIDIA GeForce RTX 3060" in lines[1] and "12.0 GiB" in lines[1] and "8.6" in lines[1]
    assert "NVIDIA GeForce RTX 2080" in lines[2] and "8.0 GiB" in lines[2] and "7.5" in lines[2]
    assert lines[-1].startswith("backend: cuda (NVIDIA GeForce RTX 3060 (compute 8.6), ")


def test_cli_json_two_gpus(monkeypatch):
    from corral.cli.system import gpus

    _patch_detect(monkeypatch, FakeProbe(smi("nvidia-smi-2gpu.csv"), **NO_SYSFS))
    result = CliRunner().invoke(gpus, ["--json"])
    data = json.loads(result.output)
    assert [g["compute_capability"] for g in data["gpus"]] == ["8.6", "7.5"]
    assert data["backend"]["name"] == "cuda" and data["cuda_architectures"] == "86;75"


def test_cli_broken_output_prints_warning(monkeypatch):
    from corral.cli.system import gpus

    _patch_detect(monkeypatch, FakeProbe(smi("nvidia-smi-broken.txt"), **NO_SYSFS))
    result = CliRunner().invoke(gpus, [])
    assert result.exit_code == 0
    assert "warning: nvidia-smi output not understood" in result.output


# ----------------------------------------------------------------- API


@pytest.fixture
def api(tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from corral.api.system import router
    from corral.settings import load_settings
    from corral.store import builds
    from corral.store.db import Store

    app = FastAPI()
    app.include_router(router)
    store = Store(tmp_path / "c.db")
    builds.add(store, "/opt/llama/llama-server", "b4567", backend="cuda")
    app.state.daemon = types.SimpleNamespace(store=store, settings=load_settings(home=tmp_path))
    with TestClient(app) as client:
        yield client
    store.close()


def test_api_system_real_machine(api):
    data = api.get("/api/v1/system").json()
    assert data["cores"] > 0 and data["ram_total"] > 0
    assert 0.0 <= data["cpu_percent"] <= 100.0 and len(data["load_average"]) == 3
    assert data["builds"][0]["path"] == "/opt/llama/llama-server"
    assert data["builds"][0]["backend"] == "cuda"
    assert "name" in data["backend"]


def test_api_system_two_gpus(api, monkeypatch):
    _patch_detect(monkeypatch, FakeProbe(smi("nvidia-smi-2gpu.csv"), **NO_SYSFS))
    data = api.get("/api/v1/system").json()
    assert [g["name"] for g in data["gpus"]] == [
        "NVIDIA GeForce RTX 3060",
        "NVIDIA GeForce RTX 2080",
    ]
    assert data["backend"]["name"] == "cuda" and data["cuda_architectures"] == "86;75"
