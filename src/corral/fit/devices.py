"""The devices a memory plan sees: GPUs with their free memory, then the host.

Detected through :mod:`corral.gpu` (NVML, ``nvidia-smi``, ``rocm-smi``, sysfs; free
memory re-read at every call, nothing cached) or simulated from a spec, so a plan can be
made for hardware that is not here::

    12GiB,8GiB          two GPUs with that much free memory, the real host RAM
    4x8GiB              four GPUs of 8 GiB
    24G,host=64GiB      one GPU, and 64 GiB of host RAM instead of this machine's
    none                no GPU: the host only (CPU inference)

Decisions:

* Device ids are ``gpu0``, ``gpu1``... in detection order (NVIDIA, then AMD), and
  ``host``; the host is always last, as in the estimator's :class:`Projection`. An
  rpc-server's device is named as llama.cpp names its buffers, ``RPC0[10.0.0.2:50052]``
  (kind ``rpc``); those come before the GPUs, as llama.cpp orders them.
* A GPU that reports no memory figures (an Intel card found in sysfs) cannot be planned
  for and is left out, with a warning.
* Sizes take binary units whatever the spelling (``8G`` = ``8GB`` = ``8GiB`` = 8 × 2³⁰):
  that is how cards are sold and how ``nvidia-smi`` counts.
* The margin (kept free on every device, default 1 GiB, like llama.cpp's
  ``--fit-target``) belongs to the planner, not to the device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from corral.errors import UsageError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

#: The margin kept free on each device, like llama.cpp's --fit-target (1024 MiB).
DEFAULT_MARGIN = 1 * GiB

_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kb": KiB,
    "kib": KiB,
    "m": MiB,
    "mb": MiB,
    "mib": MiB,
    "g": GiB,
    "gb": GiB,
    "gib": GiB,
    "t": TiB,
    "tb": TiB,
    "tib": TiB,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
#: llama.cpp's backend device names, per vendor (what ``--device`` takes).
_BACKEND = {"nvidia": "CUDA", "amd": "ROCm", "rpc": "RPC"}
_VISIBLE_ENV = {"nvidia": "CUDA_VISIBLE_DEVICES", "amd": "HIP_VISIBLE_DEVICES"}


@dataclass(frozen=True)
class Device:
    """One place memory can go: a GPU or the host's RAM."""

    id: str  # "gpu0", "gpu1", ..., "host", or an RPC device's "RPC0[10.0.0.2:50052]"
    name: str
    kind: str  # "gpu" | "rpc" | "host"
    total_bytes: int
    free_bytes: int
    vendor: str | None = None  # "nvidia", "amd", "rpc"; None when simulated
    index: int | None = None  # index within its vendor: what CUDA_VISIBLE_DEVICES counts
    uuid: str | None = None  # the driver's id (matches per-process memory figures)
    simulated: bool = False  # sizes from a --devices spec: the free figure never moves

    def backend_name(self, position: int) -> str:
        """The llama.cpp device name (``CUDA1``, ``ROCm0``, ``RPC2``) for ``--device``.

        A simulated GPU is named as a CUDA device at its position among the GPUs."""
        prefix = _BACKEND.get(self.vendor or "", "CUDA")
        return f"{prefix}{self.index if self.index is not None else position}"

    def visible_env(self) -> str | None:
        """The env var that selects this GPU's vendor's devices, or None."""
        return _VISIBLE_ENV.get(self.vendor or "")

    def view(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "total_bytes": self.total_bytes,
            "free_bytes": self.free_bytes,
        }


@dataclass
class Devices:
    """The GPUs (in order) and the host, plus what detection had to say; ``rpc`` the
    devices of the rpc-servers a launch's ``--rpc`` names (:mod:`corral.fit.rpc_devices`)."""

    gpus: list[Device]
    host: Device
    warnings: list[str] = field(default_factory=list)
    rpc: list[Device] = field(default_factory=list)

    @property
    def offload(self) -> list[Device]:
        """The devices layers can go to, in llama.cpp's order (``--tensor-split``'s):
        the RPC devices first, then the GPUs (``llama_model_load``, src/llama.cpp)."""
        return [*self.rpc, *self.gpus]

    @property
    def all(self) -> list[Device]:
        return [*self.offload, self.host]

    def llama_name(self, dev: Device) -> str:
        """llama.cpp's name of ``dev`` (what ``--device`` takes): ``RPC1``, ``CUDA0``."""
        if dev.kind == "rpc":
            return dev.backend_name(self.rpc.index(dev))
        return dev.backend_name(self.gpus.index(dev))


def parse_size(text: str) -> int:
    """``"12GiB"``, ``"8G"``, ``"8192MiB"``, ``"1.5 TB"`` -> bytes (binary units)."""
    m = _SIZE.fullmatch(text or "")
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise UsageError(f"not a size: {text!r} (e.g. 12GiB, 8192MiB)")
    return int(float(m.group(1)) * _UNITS[unit])


def human_bytes(n: int) -> str:
    """``11.5 GiB``-style (binary units, as the devices are counted)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def parse_spec(spec: str) -> tuple[list[Device], int | None]:
    """(simulated GPUs, host RAM or None) from a ``--devices`` spec (see module doc)."""
    text = (spec or "").strip()
    if not text:
        raise UsageError("--devices needs a list of sizes (12GiB,8GiB), or none")
    items = [p.strip() for p in text.split(",")]
    gpus: list[Device] = []
    host: int | None = None
    for item in items:
        if item.lower().startswith("host="):
            host = parse_size(item[5:])
        elif item.lower() == "none":
            if any(i.lower() != "none" and not i.lower().startswith("host=") for i in items):
                raise UsageError("--devices none cannot be combined with GPU sizes")
        else:
            m = re.fullmatch(r"(\d+)\s*[x×]\s*(.+)", item)
            count, size = (int(m.group(1)), m.group(2)) if m else (1, item)
            n = parse_size(size)
            if n <= 0 or count <= 0:
                raise UsageError(f"a device needs some memory, got {item!r}")
            if len(gpus) + count > 64:
                raise UsageError("--devices: at most 64 GPUs")
            for _ in range(count):
                gpus.append(
                    Device(
                        id=f"gpu{len(gpus)}",
                        name=f"simulated {human_bytes(n)}",
                        kind="gpu",
                        total_bytes=n,
                        free_bytes=n,
                        simulated=True,
                    )
                )
    return gpus, host


def _host(info, ram: int | None) -> Device:
    total = ram if ram is not None else info.ram_total
    free = ram if ram is not None else (info.ram_free or info.ram_total)
    name = "host RAM" + (" (simulated)" if ram is not None else f" ({info.cpu_model})")
    return Device(
        id="host",
        name=name,
        kind="host",
        total_bytes=total,
        free_bytes=free,
        simulated=ram is not None,
    )


def _host_info(probe):
    """The host's RAM without running the GPU tools (a simulated spec needs no GPU probe)."""
    from corral import gpu

    probe = probe or gpu.RealProbe()
    total, free = gpu._meminfo(probe.read("/proc/meminfo") or "")
    if not total:  # not Linux: the full detection knows the other ways
        return gpu.detect(probe)
    return gpu.HostInfo(
        os=probe.platform,
        arch=probe.machine,
        cpu_model="this machine",
        cores=0,
        threads=0,
        ram_total=total,
        ram_free=free,
    )


def detect_devices(spec: str | None = None, probe=None) -> Devices:
    """The devices to plan for: simulated from ``spec``, else detected now.

    ``probe`` is :mod:`corral.gpu`'s seam (tests pass a fake replaying tool outputs).
    """
    from corral import gpu

    if spec is not None:
        gpus, ram = parse_spec(spec)
        info = _host_info(probe) if ram is None else None
        return Devices(gpus=gpus, host=_host(info, ram))
    info = gpu.detect(probe)
    found: list[Device] = []
    warnings = list(info.warnings)
    for g in info.gpus:
        if g.vram_total is None:
            warnings.append(f"{g.name}: no memory figures, left out of the plan")
            continue
        free = g.vram_free if g.vram_free is not None else g.vram_total
        found.append(
            Device(
                id=f"gpu{len(found)}",
                name=g.name,
                kind="gpu",
                total_bytes=g.vram_total,
                free_bytes=free,
                vendor=g.vendor,
                index=g.index,
                uuid=g.uuid,
            )
        )
    return Devices(gpus=found, host=_host(info, None), warnings=warnings)


def process_bytes(devices: Devices, probe=None) -> dict[tuple[str, int], int]:
    """``{(device id, pid): bytes}`` the driver reports per process on the detected
    NVIDIA GPUs (``nvidia-smi --query-compute-apps``); empty when it cannot tell."""
    from corral import gpu

    nvidia = [d for d in devices.gpus if d.vendor == "nvidia" and d.uuid]
    if not nvidia:
        return {}
    by_uuid = {d.uuid: d.id for d in nvidia}
    return {
        (by_uuid[uuid], pid): used
        for (uuid, pid), used in gpu.nvidia_process_memory(probe).items()
        if uuid in by_uuid
    }
