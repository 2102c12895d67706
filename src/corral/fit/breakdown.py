"""What ``llama-server -lv 4`` says about its memory: buffer lines and breakdown tables.

llama.cpp b11434 prints, while loading (the sources that print them in brackets):

* ``load_tensors:   CPU_Mapped model buffer size =   235.16 MiB`` (llama-model.cpp), one
  per weight buffer: ``CPU_Mapped``/``CPU`` (host), ``CPU_REPACK`` (host, repacked
  copies), ``CUDA0``, ``ROCm1``, ``Vulkan0``, ``Metal``, ``RPC0[10.0.0.2:50052]``...
* ``llama_context:        CPU  output buffer size =     4.00 MiB`` (llama-context.cpp)
* ``llama_kv_cache:        CPU KV buffer size =    12.00 MiB`` (llama-kv-cache.cpp), one per
  cache and buffer type: gemma 3 prints two (non-SWA and SWA layers)
* ``llama_memory_recurrent:        CPU RS buffer size = ...`` (recurrent state)
* ``sched_reserve:        CPU compute buffer size =    24.78 MiB`` (llama-context.cpp)
* ``... LoRA buffer size = ...`` (llama-adapter.cpp)
* ``common_memory_breakdown_print`` tables (common/fit.cpp): once projected, before the
  model loads (``--fit`` measures with a no-alloc pass), and once for real when the
  server exits after SIGINT/SIGTERM. Rows: a GPU as ``| - CUDA0 (desc) | total = free +
  (self = model + context + compute) + unaccounted |``, the host and extra buffer types
  (``CPU_REPACK``) as ``| - Host | self = model + context + compute |``; whole MiB,
  rounded down. ``context`` is the KV cache and recurrent state only: the output buffer
  is in no column.

:func:`parse_log` reads a whole log; :class:`BreakdownParser` takes lines one at a time
(the supervisor feeds it an instance's output). Buffer names map to corral's device ids
with :func:`device_of`: anything CPU or ``*_Host`` is ``"host"``, a GPU backend ``X<n>``
is ``gpu<n>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "BreakdownParser",
    "BreakdownRow",
    "BufferLine",
    "MemoryReport",
    "device_of",
    "parse_log",
]

MiB = 1024 * 1024

_BUFFER_RE = re.compile(
    r"(?P<where>load_tensors|llama_context|llama_kv_cache|llama_memory_recurrent|sched_reserve"
    r"|llama_adapter_lora_init_impl|\w+):\s+(?P<buf>\S+)\s+"
    r"(?P<kind>model|output|KV|RS|compute|LoRA) buffer size =\s*(?P<mib>[0-9.]+) MiB"
)
_TABLE_HEAD = "memory breakdown [MiB]"
_ROW_RE = re.compile(r"\|\s+-\s+(?P<name>.+?)\s+\|(?P<rest>.*)\|\s*$")
_NUM = r"(-?\d+)"
_GPU_ROW = re.compile(
    rf"^\s*{_NUM}\s*=\s*{_NUM}\s*\+\s*\(\s*{_NUM}\s*=\s*{_NUM}\s*\+\s*{_NUM}"
    rf"\s*\+\s*{_NUM}\s*\)\s*\+\s*{_NUM}\s*$"
)
_OTHER_ROW = re.compile(rf"^\s*{_NUM}\s*=\s*{_NUM}\s*\+\s*{_NUM}\s*\+\s*{_NUM}\s*$")
_KINDS = {
    "model": "model",
    "output": "output",
    "KV": "kv",
    "RS": "rs",
    "compute": "compute",
    "LoRA": "lora",
}
_GPU_NAME = re.compile(r"^(?P<backend>[A-Za-z]+?)(?P<n>\d*)$")
_RPC_BUFFER = re.compile(r"^RPC\d+\[[^\]]+\]$")
_RPC_ROW = re.compile(r"^RPC\d+ \((?P<endpoint>[^()\s]+:\d+)\)$")


def device_of(buffer: str) -> str:
    """corral's device id for a llama.cpp buffer or device name (``CUDA1`` -> ``gpu1``;
    an RPC buffer ``RPC0[10.0.0.2:50052]`` is its own id; a table row ``RPC3 (HOST:PORT)``
    names its server, ``RPC[HOST:PORT]``, not which of the server's devices)."""
    rpc = _RPC_ROW.match(buffer.strip())
    if rpc:
        return f"RPC[{rpc['endpoint']}]"
    name = buffer.split(" (")[0].strip()
    if _RPC_BUFFER.match(name):
        return name
    if name.upper().startswith("CPU") or name.endswith("_Host") or name in ("Host", "RPC_Host"):
        return "host"
    m = _GPU_NAME.match(name)
    return f"gpu{int(m['n']) if m and m['n'] else 0}"


@dataclass(frozen=True)
class BufferLine:
    """One ``... <kind> buffer size = X MiB`` line."""

    kind: str  # model | output | kv | rs | compute | lora
    buffer: str  # the buffer type's name: CPU_Mapped, CPU_REPACK, CUDA0, CUDA_Host, ...
    mib: float

    @property
    def bytes(self) -> int:
        return round(self.mib * MiB)

    @property
    def device(self) -> str:
        return device_of(self.buffer)


@dataclass(frozen=True)
class BreakdownRow:
    """One row of a ``common_memory_breakdown_print`` table (MiB, rounded down)."""

    name: str  # "Host", "CPU_REPACK", "CUDA0 (RTX 4090)"
    self_mib: int
    model_mib: int
    context_mib: int
    compute_mib: int
    total_mib: int | None = None  # GPU rows only
    free_mib: int | None = None
    unaccounted_mib: int | None = None

    @property
    def device(self) -> str:
        return device_of(self.name)


@dataclass
class MemoryReport:
    """Everything a log said about memory."""

    buffers: list[BufferLine] = field(default_factory=list)
    #: Tables in the order printed; ``projected`` / ``real`` pick from them.
    tables: list[list[BreakdownRow]] = field(default_factory=list)
    #: Index in ``tables`` of the first table printed after the model loaded.
    first_after_load: int | None = None

    @property
    def projected(self) -> list[BreakdownRow] | None:
        """The table llama.cpp printed before loading (its ``--fit`` projection)."""
        limit = self.first_after_load if self.first_after_load is not None else len(self.tables)
        return self.tables[0] if limit > 0 else None

    @property
    def real(self) -> list[BreakdownRow] | None:
        """The table printed after the model loaded (at exit), if any."""
        if self.first_after_load is None:
            return None
        return self.tables[-1]

    def buffer_bytes(self, kind: str, device: str | None = None) -> int:
        """Sum of the ``kind`` buffers (``"model"``, ``"kv"``...), on ``device`` if given."""
        return sum(
            b.bytes
            for b in self.buffers
            if b.kind == kind and (device is None or b.device == device)
        )

    def per_device(self) -> dict[str, dict[str, int]]:
        """``{device: {kind: bytes}}`` from the buffer lines (rs counted as kv)."""
        out: dict[str, dict[str, int]] = {}
        for b in self.buffers:
            kind = "kv" if b.kind == "rs" else b.kind
            d = out.setdefault(b.device, {})
            d[kind] = d.get(kind, 0) + b.bytes
        return out

    def real_self_bytes(self, device: str = "host") -> int | None:
        """``self`` of the real table summed over the rows of ``device`` (Host + CPU_REPACK)."""
        rows = self.real
        if rows is None:
            return None
        return sum(r.self_mib for r in rows if r.device == device) * MiB


class BreakdownParser:
    """Incremental: ``feed(line)`` each log line, read ``report`` at any time."""

    def __init__(self) -> None:
        self.report = MemoryReport()
        self._table: list[BreakdownRow] | None = None
        self._loaded = False

    def feed(self, line: str) -> None:
        if _TABLE_HEAD in line:
            self._table = []
            self.report.tables.append(self._table)
            if self._loaded and self.report.first_after_load is None:
                self.report.first_after_load = len(self.report.tables) - 1
            return
        if self._table is not None and "common_memory_breakdown_print" in line:
            row = _parse_row(line)
            if row is not None:
                self._table.append(row)
            return
        self._table = None
        m = _BUFFER_RE.search(line)
        if m:
            self.report.buffers.append(BufferLine(_KINDS[m["kind"]], m["buf"], float(m["mib"])))
            self._loaded = True  # a buffer was allocated: later tables are real ones


def _parse_row(line: str) -> BreakdownRow | None:
    m = _ROW_RE.search(line)
    if not m:
        return None
    name, rest = m["name"], m["rest"].replace("|", " ")
    g = _GPU_ROW.match(rest)
    if g:
        total, free, self_, model, ctx, comp, unacc = (int(x) for x in g.groups())
        return BreakdownRow(name, self_, model, ctx, comp, total, free, unacc)
    o = _OTHER_ROW.match(rest)
    if o:
        self_, model, ctx, comp = (int(x) for x in o.groups())
        return BreakdownRow(name, self_, model, ctx, comp)
    return None


def parse_log(text: str) -> MemoryReport:
    """Parse a whole ``llama-server -lv 4`` log (see the module docstring)."""
    p = BreakdownParser()
    for line in text.splitlines():
        p.feed(line)
    return p.report
