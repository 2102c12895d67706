"""GPU and host detection: which llama.cpp backend this machine should run.

Everything touching the machine goes through one seam, :class:`Probe`
(``run``, ``read``, ``glob``, ``find_library``, ``nvml``, ``cpu_count``, ``platform``,
``machine``). :class:`RealProbe` uses subprocess (argv lists, 5 s timeout), files and
ctypes; tests pass a fake that replays recorded outputs (``tests/fakes/gpu_outputs/``).

Detectors, in order:

* NVIDIA: NVML (``pynvml`` from ``nvidia-ml-py``, optional) and, when NVML is absent or
  fails, ``nvidia-smi --query-gpu=... --format=csv,noheader,nounits`` (MiB values).
* AMD: ``rocm-smi --showproductname --showmeminfo vram --showdriverversion --json`` and,
  when that finds nothing, sysfs (``/sys/class/drm/cardN/device`` with vendor 0x1002,
  ``mem_info_vram_total`` / ``mem_info_vram_used``). The gfx target comes from the
  rocm-smi JSON ("GFX Version") or from the KFD topology (``gfx_target_version``).
  Other (non-virtual) DRM GPUs, e.g. Intel, are listed without VRAM figures.
* Vulkan: the loader (``libvulkan``) is findable, or ``vulkaninfo --summary`` runs.
* Metal: macOS.
* CPU: ``/proc/cpuinfo`` and ``/proc/meminfo`` (``sysctl`` on macOS), ``cpu_count`` as
  the last resort.

Decisions:

* A missing tool is silent (that vendor is simply absent). A tool that is installed but
  fails, times out or prints something unparsable yields *no* GPUs from that detector
  and one string in ``HostInfo.warnings`` -- detection never raises.
* ``nvidia-smi`` exit status 6 ("No devices were found") means zero GPUs, not a warning.
* ``GPU.index`` is the index within its vendor (what ``CUDA_VISIBLE_DEVICES`` /
  ``HIP_VISIBLE_DEVICES`` count), so an NVIDIA and an AMD card may both be index 0.
* Nothing is cached: every :func:`detect` call re-reads free VRAM and free RAM.
* :func:`best_backend` prefers CUDA > ROCm > Metal > Vulkan (only with a real GPU
  present; a Vulkan loader with no GPU means software rendering) > CPU.
"""

from __future__ import annotations

import io
import json
import os
import platform as _platform
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

# csv, ctypes, glob and subprocess are imported where they are used: a simulated
# `corral fit --devices 12GiB,8GiB` reads /proc/meminfo only.

TIMEOUT = 5.0
#: Return codes RealProbe.run uses for failures that have no process status.
RC_NOT_INSTALLED = 127
RC_TIMEOUT = 124

NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,name,memory.total,memory.free,compute_cap,driver_version,uuid",
    "--format=csv,noheader,nounits",
]
ROCM_SMI_QUERY = [
    "rocm-smi",
    "--showproductname",
    "--showmeminfo",
    "vram",
    "--showdriverversion",
    "--json",
]
VULKANINFO = ["vulkaninfo", "--summary"]

VENDOR_IDS = {"0x10de": "nvidia", "0x1002": "amd", "0x8086": "intel"}
MiB = 1024 * 1024
GiB = 1024 * MiB

#: /proc/cpuinfo flags that matter for llama.cpp builds (x86 and ARM spellings).
INTERESTING_FLAGS = (
    "sse3",
    "ssse3",
    "sse4_1",
    "sse4_2",
    "fma",
    "f16c",
    "avx",
    "avx2",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512cd",
    "avx512dq",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512vbmi",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "neon",
    "asimd",
    "asimddp",
    "asimdhp",
    "i8mm",
    "sve",
    "sve2",
    "bf16",
)


# --------------------------------------------------------------------------- probe


class Probe(Protocol):
    platform: str  # sys.platform: "linux", "darwin", "win32"
    machine: str  # platform.machine(): "x86_64", "arm64", ...

    def run(self, argv: list[str], timeout: float = TIMEOUT) -> tuple[int, str]: ...
    def read(self, path: str) -> str | None: ...
    def glob(self, pattern: str) -> list[str]: ...
    def find_library(self, name: str) -> str | None: ...
    def nvml(self) -> Any | None: ...
    def cpu_count(self) -> int | None: ...


class RealProbe:
    """The machine itself."""

    def __init__(self) -> None:
        self.platform = sys.platform
        self.machine = _platform.machine()

    def run(self, argv: list[str], timeout: float = TIMEOUT) -> tuple[int, str]:
        """(returncode, stdout); 127 when not installed, 124 on timeout."""
        import subprocess

        env = dict(os.environ, LC_ALL="C")
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError):
            return RC_NOT_INSTALLED, ""
        except subprocess.TimeoutExpired:
            return RC_TIMEOUT, ""
        except OSError as exc:
            return 126, str(exc)
        return proc.returncode, proc.stdout

    def read(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return None

    def glob(self, pattern: str) -> list[str]:
        import glob

        return sorted(glob.glob(pattern))

    def find_library(self, name: str) -> str | None:
        try:
            import ctypes.util

            return ctypes.util.find_library(name)
        except Exception:  # noqa: BLE001 - find_library shells out; never fail detection
            return None

    def nvml(self) -> Any | None:
        try:
            import pynvml  # type: ignore[import-not-found]
        except Exception:  # noqa: BLE001 - optional dependency
            return None
        return pynvml

    def cpu_count(self) -> int | None:
        return os.cpu_count()


# --------------------------------------------------------------------------- model


@dataclass
class GPU:
    index: int
    vendor: str  # "nvidia" | "amd" | "intel" | ...
    name: str
    vram_total: int | None = None  # bytes
    vram_free: int | None = None  # bytes
    compute_capability: str | None = None  # NVIDIA, e.g. "8.6"
    gfx_target: str | None = None  # AMD, e.g. "gfx1100"
    driver_version: str | None = None
    uuid: str | None = None
    source: str = ""  # "nvml", "nvidia-smi", "rocm-smi", "sysfs"

    def to_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        if self.compute_capability:
            return f"{self.name} (compute {self.compute_capability})"
        if self.gfx_target:
            return f"{self.name} ({self.gfx_target})"
        return self.name


@dataclass
class HostInfo:
    os: str
    arch: str
    cpu_model: str
    cores: int
    threads: int
    ram_total: int  # bytes
    ram_free: int  # bytes (available)
    cpu_flags: list[str] = field(default_factory=list)
    gpus: list[GPU] = field(default_factory=list)
    vulkan: bool = False
    metal: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HostInfo:
        """The host :meth:`to_dict` described (another daemon's ``/api/v1/system``); keys
        it does not know are left out."""
        known = {f.name for f in fields(cls)}
        gpu_keys = {f.name for f in fields(GPU)}
        values = {k: v for k, v in data.items() if k in known}
        values["gpus"] = [
            GPU(**{k: v for k, v in g.items() if k in gpu_keys}) for g in data.get("gpus") or []
        ]
        return cls(**values)

    def simd(self) -> str:
        """The best SIMD level, for one-line summaries."""
        flags = set(self.cpu_flags)
        for flag, label in (
            ("avx512f", "AVX512"),
            ("avx2", "AVX2"),
            ("avx", "AVX"),
            ("sve", "SVE"),
            ("asimd", "NEON"),
            ("neon", "NEON"),
        ):
            if flag in flags:
                return label
        return "no AVX"


# --------------------------------------------------------------------------- helpers


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    try:
        return int(text, 0) if text.lower().startswith("0x") else int(float(text))
    except ValueError:
        return None


def _na(value: str) -> str | None:
    value = value.strip()
    return None if not value or value.startswith("[") or value in ("N/A", "Unknown") else value


def _tool_failed(tool: str, rc: int, out: str) -> str:
    if rc == RC_TIMEOUT:
        return f"{tool} timed out after {TIMEOUT:g}s"
    first = next((line.strip() for line in out.splitlines() if line.strip()), "")
    return f"{tool} failed (exit {rc})" + (f": {first[:200]}" if first else "")


def gfx_from_version(version: int) -> str | None:
    """KFD ``gfx_target_version`` (e.g. 110000, 90010) -> "gfx1100", "gfx90a"."""
    if not version:
        return None
    major, minor, step = version // 10000, (version // 100) % 100, version % 100
    return f"gfx{major}{minor:x}{step:x}"


# --------------------------------------------------------------------------- NVIDIA


def parse_nvidia_smi(rc: int, out: str) -> tuple[list[GPU], list[str]]:
    """Parse ``nvidia-smi --query-gpu=... csv,noheader,nounits`` (MiB) output."""
    if rc == RC_NOT_INSTALLED:
        return [], []
    if rc == 6 or (rc != 0 and "no devices were found" in out.lower()):
        return [], []
    if rc != 0:
        return [], [_tool_failed("nvidia-smi", rc, out)]
    import csv

    gpus: list[GPU] = []
    try:
        for row in csv.reader(io.StringIO(out), skipinitialspace=True):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 7:
                raise ValueError(f"expected 7 fields, got {len(row)}: {','.join(row)[:120]!r}")
            idx, name, total, free, cap, driver, uuid = (c.strip() for c in row)
            index = int(idx)
            total_mib = _int(_na(total) or "")
            free_mib = _int(_na(free) or "")
            if _na(total) and total_mib is None:
                raise ValueError(f"bad memory.total {total!r}")
            gpus.append(
                GPU(
                    index=index,
                    vendor="nvidia",
                    name=name,
                    vram_total=total_mib * MiB if total_mib is not None else None,
                    vram_free=free_mib * MiB if free_mib is not None else None,
                    compute_capability=_na(cap),
                    driver_version=_na(driver),
                    uuid=_na(uuid),
                    source="nvidia-smi",
                )
            )
    except (ValueError, csv.Error) as exc:
        return [], [f"nvidia-smi output not understood: {exc}"]
    if not gpus and out.strip():
        return [], [f"nvidia-smi output not understood: {out.strip()[:120]!r}"]
    return gpus, []


def _nvml_gpus(nvml: Any) -> list[GPU]:
    def text(v: Any) -> str:
        return v.decode() if isinstance(v, bytes) else str(v)

    nvml.nvmlInit()
    try:
        driver = text(nvml.nvmlSystemGetDriverVersion())
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = nvml.nvmlDeviceGetMemoryInfo(h)
            try:
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(h)
                cap: str | None = f"{major}.{minor}"
            except Exception:  # noqa: BLE001
                cap = None
            try:
                uuid: str | None = text(nvml.nvmlDeviceGetUUID(h))
            except Exception:  # noqa: BLE001
                uuid = None
            gpus.append(
                GPU(
                    index=i,
                    vendor="nvidia",
                    name=text(nvml.nvmlDeviceGetName(h)),
                    vram_total=int(mem.total),
                    vram_free=int(mem.free),
                    compute_capability=cap,
                    driver_version=driver,
                    uuid=uuid,
                    source="nvml",
                )
            )
        return gpus
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


NVIDIA_SMI_APPS = [
    "nvidia-smi",
    "--query-compute-apps=gpu_uuid,pid,used_memory",
    "--format=csv,noheader,nounits",
]


def parse_nvidia_apps(rc: int, out: str) -> dict[tuple[str, int], int]:
    """``{(gpu uuid, pid): bytes}`` from ``nvidia-smi --query-compute-apps`` (MiB)."""
    if rc != 0:
        return {}
    import csv

    found: dict[tuple[str, int], int] = {}
    for row in csv.reader(io.StringIO(out), skipinitialspace=True):
        if len(row) != 3:
            continue
        uuid, pid, used = (c.strip() for c in row)
        mib = _int(_na(used) or "")
        if pid.isdigit() and mib is not None:
            found[(uuid, int(pid))] = found.get((uuid, int(pid)), 0) + mib * MiB
    return found


def nvidia_process_memory(probe: Probe | None = None) -> dict[tuple[str, int], int]:
    """GPU memory each process holds, per GPU uuid (empty without NVIDIA tools)."""
    probe = probe or RealProbe()
    rc, out = probe.run(NVIDIA_SMI_APPS, TIMEOUT)
    return parse_nvidia_apps(rc, out)


def detect_nvidia(probe: Probe) -> tuple[list[GPU], list[str]]:
    nvml = probe.nvml()
    if nvml is not None:
        try:
            return _nvml_gpus(nvml), []
        except Exception:  # noqa: BLE001 - no driver / no device: ask nvidia-smi instead
            pass
    rc, out = probe.run(NVIDIA_SMI_QUERY, TIMEOUT)
    return parse_nvidia_smi(rc, out)


# --------------------------------------------------------------------------- AMD


def _get(d: dict, *names: str) -> Any:
    lower = {k.lower(): v for k, v in d.items()}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def parse_rocm_smi(rc: int, out: str) -> tuple[list[GPU], list[str]]:
    """Parse ``rocm-smi --showproductname --showmeminfo vram --showdriverversion --json``."""
    if rc == RC_NOT_INSTALLED:
        return [], []
    if rc != 0:
        return [], [_tool_failed("rocm-smi", rc, out)]
    # rocm-smi may print banner/warning lines around the JSON object.
    start, end = out.find("{"), out.rfind("}")
    try:
        if start < 0 or end < start:
            raise ValueError("no JSON object")
        data = json.loads(out[start : end + 1])
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        system = data.get("system") if isinstance(data.get("system"), dict) else {}
        driver = _get(system, "Driver version")
        gpus = []
        for key in sorted(
            (k for k in data if re.fullmatch(r"card\d+", k)), key=lambda k: int(k[4:])
        ):
            card = data[key]
            if not isinstance(card, dict):
                raise ValueError(f"{key} is not an object")
            total = _int(_get(card, "VRAM Total Memory (B)"))
            used = _int(_get(card, "VRAM Total Used Memory (B)"))
            name = (
                _get(card, "Card Series", "Card SKU", "Marketing Name")
                or f"AMD GPU {_get(card, 'Card Model') or key}"
            )
            gfx = _get(card, "GFX Version")
            gpus.append(
                GPU(
                    index=len(gpus),
                    vendor="amd",
                    name=str(name).strip(),
                    vram_total=total,
                    vram_free=total - used if total is not None and used is not None else None,
                    gfx_target=str(gfx).strip() if gfx and str(gfx).startswith("gfx") else None,
                    driver_version=str(driver) if driver else None,
                    uuid=_get(card, "Unique ID", "GUID"),
                    source="rocm-smi",
                )
            )
    except (ValueError, TypeError, AttributeError) as exc:
        return [], [f"rocm-smi output not understood: {exc}"]
    return gpus, []


def _kfd_gfx_targets(probe: Probe) -> list[str]:
    """gfx targets of the GPU nodes of the KFD topology, in node order."""
    nodes = probe.glob("/sys/class/kfd/kfd/topology/nodes/*/properties")
    nodes.sort(
        key=lambda p: (
            int(re.search(r"/nodes/(\d+)/", p).group(1))  # type: ignore[union-attr]
            if re.search(r"/nodes/(\d+)/", p)
            else 0
        )
    )
    targets = []
    for path in nodes:
        props = dict(
            line.split(None, 1)
            for line in (probe.read(path) or "").splitlines()
            if len(line.split(None, 1)) == 2
        )
        gfx = gfx_from_version(_int(props.get("gfx_target_version")) or 0)
        if gfx:
            targets.append(gfx)
    return targets


def detect_sysfs(probe: Probe) -> tuple[list[GPU], list[GPU], list[str]]:
    """(AMD GPUs, other GPUs) from /sys/class/drm. Virtual display adapters are skipped."""
    amd: list[GPU] = []
    other: list[GPU] = []
    warnings: list[str] = []
    cards = [c for c in probe.glob("/sys/class/drm/card*") if re.search(r"/card\d+$", c)]
    cards.sort(key=lambda c: int(re.search(r"(\d+)$", c).group(1)))  # type: ignore[union-attr]
    driver = (probe.read("/sys/module/amdgpu/version") or "").strip() or None
    for card in cards:
        dev = f"{card}/device"
        vendor = VENDOR_IDS.get((probe.read(f"{dev}/vendor") or "").strip().lower())
        if vendor is None or vendor == "nvidia":  # NVIDIA is nvidia-smi's; others virtual
            continue
        device_id = (probe.read(f"{dev}/device") or "").strip()
        name = (probe.read(f"{dev}/product_name") or "").strip()
        if vendor == "amd":
            total_s, used_s = (
                probe.read(f"{dev}/mem_info_vram_total"),
                probe.read(f"{dev}/mem_info_vram_used"),
            )
            total, used = _int(total_s), _int(used_s)
            if total_s is not None and total is None or used_s is not None and used is None:
                warnings.append(f"{dev}: unreadable VRAM figures")
                continue
            amd.append(
                GPU(
                    index=len(amd),
                    vendor="amd",
                    name=name or f"AMD GPU {device_id}".strip(),
                    vram_total=total,
                    vram_free=total - used if total is not None and used is not None else None,
                    driver_version=driver,
                    source="sysfs",
                )
            )
        else:
            other.append(
                GPU(
                    index=len(other),
                    vendor=vendor,
                    name=name or f"{vendor.capitalize()} GPU {device_id}".strip(),
                    source="sysfs",
                )
            )
    return amd, other, warnings


def detect_amd(probe: Probe) -> tuple[list[GPU], list[GPU], list[str]]:
    """(AMD GPUs, other DRM GPUs, warnings)."""
    if probe.platform != "linux":
        return [], [], []
    amd, warnings = parse_rocm_smi(*probe.run(ROCM_SMI_QUERY, TIMEOUT))
    sys_amd, other, sys_warnings = detect_sysfs(probe)
    if not amd:
        amd = sys_amd
        warnings += sys_warnings
    if any(g.gfx_target is None for g in amd):
        targets = _kfd_gfx_targets(probe)
        for gpu, gfx in zip(amd, targets, strict=False):
            gpu.gfx_target = gpu.gfx_target or gfx
    return amd, other, warnings


# --------------------------------------------------------------------------- Vulkan


def detect_vulkan(probe: Probe) -> bool:
    if probe.find_library("vulkan") or probe.find_library("vulkan-1"):
        return True
    rc, _ = probe.run(VULKANINFO, TIMEOUT)
    return rc == 0


# --------------------------------------------------------------------------- CPU


def _meminfo(text: str) -> tuple[int, int]:
    values = {}
    for line in text.splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if m:
            values[m.group(1)] = int(m.group(2)) * 1024
    total = values.get("MemTotal", 0)
    free = values.get("MemAvailable", values.get("MemFree", 0))
    return total, free


def parse_cpuinfo(text: str) -> tuple[str, int, int, list[str]]:
    """(model, physical cores, threads, interesting flags) from /proc/cpuinfo."""
    model = ""
    threads = 0
    cores_ids: set[tuple[str, str]] = set()
    cpu_cores: dict[str, int] = {}
    flags: set[str] = set()
    phys = core = "0"
    for block in re.split(r"\n\s*\n", text):
        info: dict[str, str] = {}
        for line in block.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                info[k.strip()] = v.strip()
        if "processor" not in info:
            model = model or info.get("Hardware", "") or info.get("Model", "")
            continue
        threads += 1
        model = model or info.get("model name", "") or info.get("Model", "")
        phys = info.get("physical id", "0")
        core = info.get("core id")
        if core is not None:
            cores_ids.add((phys, core))
        if "cpu cores" in info:
            cpu_cores[phys] = _int(info["cpu cores"]) or 0
        flags.update((info.get("flags") or info.get("Features") or "").split())
    if "pni" in flags:  # the kernel's name for SSE3
        flags.add("sse3")
    if cores_ids:
        cores = len(cores_ids)
    elif cpu_cores:
        cores = sum(cpu_cores.values())
    else:
        cores = threads
    return model, cores, threads, [f for f in INTERESTING_FLAGS if f in flags]


def _darwin_cpu(probe: Probe) -> tuple[str, int, int, int, list[str]]:
    def sysctl(name: str) -> str:
        rc, out = probe.run(["sysctl", "-n", name], TIMEOUT)
        return out.strip() if rc == 0 else ""

    model = sysctl("machdep.cpu.brand_string")
    cores = _int(sysctl("hw.physicalcpu")) or 0
    threads = _int(sysctl("hw.logicalcpu")) or 0
    ram = _int(sysctl("hw.memsize")) or 0
    feats = (sysctl("machdep.cpu.features") + " " + sysctl("machdep.cpu.leaf7_features")).lower()
    flags = {f.replace(".", "_") for f in feats.split()}
    if probe.machine == "arm64":
        flags.update({"neon", "asimd"})
        if sysctl("hw.optional.arm.FEAT_DotProd") == "1":
            flags.add("asimddp")
        if sysctl("hw.optional.arm.FEAT_I8MM") == "1":
            flags.add("i8mm")
    return model, cores, threads, ram, [f for f in INTERESTING_FLAGS if f in flags]


def _ram_free_fallback() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001
        return 0


# --------------------------------------------------------------------------- API


def detect(probe: Probe | None = None) -> HostInfo:
    """Describe this host. Never raises because of a missing or broken tool."""
    probe = probe or RealProbe()
    warnings: list[str] = []
    os_name = {"linux": "linux", "darwin": "macos", "win32": "windows"}.get(
        probe.platform, probe.platform
    )

    model, cores, threads, ram_total, ram_free, flags = "", 0, 0, 0, 0, []
    try:
        if probe.platform == "darwin":
            model, cores, threads, ram_total, flags = _darwin_cpu(probe)
            ram_free = _ram_free_fallback() if isinstance(probe, RealProbe) else 0
        else:
            model, cores, threads, flags = parse_cpuinfo(probe.read("/proc/cpuinfo") or "")
            ram_total, ram_free = _meminfo(probe.read("/proc/meminfo") or "")
    except Exception as exc:  # noqa: BLE001 - a strange cpuinfo must not stop detection
        warnings.append(f"CPU detection failed: {exc}")
    if not threads:
        threads = probe.cpu_count() or 0
    cores = cores or threads
    if not ram_total and isinstance(probe, RealProbe):
        try:
            import psutil

            vm = psutil.virtual_memory()
            ram_total, ram_free = int(vm.total), int(vm.available)
        except Exception:  # noqa: BLE001
            pass

    gpus: list[GPU] = []
    for detector in (detect_nvidia, detect_amd):
        try:
            result = detector(probe)
        except Exception as exc:  # noqa: BLE001 - belt and braces: detection never raises
            warnings.append(f"{detector.__name__} failed: {exc}")
            continue
        *found, warn = result
        for group in found:
            gpus.extend(group)
        warnings.extend(warn)
    try:
        vulkan = detect_vulkan(probe)
    except Exception:  # noqa: BLE001
        vulkan = False

    return HostInfo(
        os=os_name,
        arch=probe.machine,
        cpu_model=model or "unknown CPU",
        cores=cores,
        threads=threads,
        ram_total=ram_total,
        ram_free=ram_free,
        cpu_flags=flags,
        gpus=gpus,
        vulkan=vulkan,
        metal=probe.platform == "darwin",
        warnings=warnings,
    )


def _labels(gpus: list[GPU]) -> str:
    return ", ".join(g.label() for g in gpus)


def best_backend(host: HostInfo) -> tuple[str, str]:
    """(backend, why): "cuda", "rocm", "metal", "vulkan" or "cpu"."""
    nvidia = [g for g in host.gpus if g.vendor == "nvidia"]
    amd = [g for g in host.gpus if g.vendor == "amd"]
    if nvidia:
        return "cuda", f"{_labels(nvidia)} found"
    if amd:
        return "rocm", f"{_labels(amd)} found"
    if host.metal:
        return "metal", f"macOS ({host.arch}): Apple Metal"
    if host.vulkan and host.gpus:
        return "vulkan", f"Vulkan loader and {_labels(host.gpus)} found"
    return "cpu", "no GPU found"


def cuda_architectures(host: HostInfo) -> str:
    """CMAKE_CUDA_ARCHITECTURES for the NVIDIA GPUs present: "86;75" (unique, descending)."""
    archs = {
        g.compute_capability.replace(".", "")
        for g in host.gpus
        if g.vendor == "nvidia" and g.compute_capability
    }
    return ";".join(sorted(archs, key=lambda a: int(a) if a.isdigit() else 0, reverse=True))


def amdgpu_targets(host: HostInfo) -> str:
    """AMDGPU_TARGETS / GPU_TARGETS for the AMD GPUs present: "gfx1100;gfx1030"."""
    targets = {g.gfx_target for g in host.gpus if g.vendor == "amd" and g.gfx_target}
    return ";".join(sorted(targets, reverse=True))


def summary(host: HostInfo) -> str:
    """ "CPU-only host (AVX2, 2 cores, 23.4 GiB RAM)"-style description of the CPU side."""
    return f"{host.simd()}, {host.cores} cores, {host.ram_total / GiB:.1f} GiB RAM"
