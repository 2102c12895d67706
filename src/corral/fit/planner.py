"""The memory planner: free memory per device -> llama-server flags that fit.

Given the devices (:mod:`corral.fit.devices`, with a margin kept free on each), the bytes
other instances already hold or will hold on them (``committed``), the model and the
user's flags, :func:`plan` chooses the GPUs, ``--gpu-layers``, ``--tensor-split``, the
context, the KV cache types and, for MoE models, ``--n-cpu-moe``. It only ever calls the
estimator's pure ``project(model, options, gpus)``: a few dozen to a few hundred calls.

What the user fixed is kept as given: ``-ngl``, ``-ts``, ``--device``, ``-c``, ``-ctk``,
``-ctv``, ``-fa``, ``--n-cpu-moe``/``--cpu-moe``/``-ot`` are never changed, only planned
around. ``--fit-ctx N`` (llama.cpp's own floor for its ``--fit``) lowers the context
floor, ``--fit-target MiB`` sets the margin when the caller gave none.

The levers, cheapest first (each is pulled only when the ones before it are exhausted):

1. All layers on the GPUs, f16 KV cache (or the user's), the largest context up to the
   target (the user's ``-c``, else the model's training context) and not below the
   floor (4096, or the training context when it is smaller).
2. Quantized KV cache, ``q8_0`` then ``q4_0`` with ``-fa on`` (llama.cpp needs flash
   attention for a quantized V cache): only when f16 does not fit the floor context.
3. MoE models: the experts of the first N layers on the CPU (``--n-cpu-moe N``), the
   smallest N that fits; before any dense layer leaves the GPU.
4. Fewer layers on the GPUs (``--gpu-layers N``), the most that fit.

For 3 and 4 the KV type that needs the least offload wins (ties: the less quantized
one); the context is then grown again as far as that placement allows. When a model
fits on fewer GPUs than there are, unchanged (every layer, the target context, the
default KV cache), it goes on the fewest with the most room, like Ollama does; otherwise
on every GPU with room, split in proportion to usable memory (free − margin −
committed) after each device's fixed buffers (compute, output).

When nothing fits, the plan says so and by how much: the configuration that came
closest, and the bytes missing per device. Every choice leaves a note.

Decisions:

* The host is a device like the others: weights left on the CPU count against free
  RAM (mmap would let a too-large model run, from disk, slowly; a plan that "fits"
  should run well).
* ``committed`` is subtracted from what the driver reports as free. The caller passes
  the part of other instances' projected use the driver does not show yet.
* The flags name devices as llama.cpp does (``--device CUDA0,CUDA1``, ``ROCm0``);
  :attr:`Plan.env` gives the same choice as ``CUDA_VISIBLE_DEVICES`` /
  ``HIP_VISIBLE_DEVICES`` for callers that prefer it (never both: the env var renumbers
  the devices the flag names).
* Full offload is written ``--gpu-layers N+1`` (N repeating layers and the output
  layer, llama.cpp's count), so the flag is the same on builds that do not know
  ``all``.
* Contexts are searched in steps of 1024 tokens.
* **RPC devices** (``--rpc``: :attr:`Devices.rpc`, asked their memory by
  :mod:`corral.fit.rpc_devices`) are planned like GPUs (weights, KV cache and compute
  buffer of their layers), in llama.cpp's device order: the RPC devices first, then the
  local GPUs, so ``--tensor-split`` lists them in that order and the output layer goes
  with the last device. The servers a launch names are all used (no "fewest devices"
  narrowing); one without room is left out by ``--device`` with llama.cpp's names
  (``RPC1,CUDA0``), which no visible-devices env var can say.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from corral.fit.devices import DEFAULT_MARGIN, Device, Devices, MiB, detect_devices, human_bytes

#: The smallest context the planner chooses by itself (llama.cpp's --fit-ctx default).
MIN_CONTEXT = 4096
CTX_STEP = 1024
KV_LADDER = ("q8_0", "q4_0")
#: Quantized V cache types: llama.cpp needs flash attention for them.
QUANTIZED = {"q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"}

#: Roles of the flags the planner reads or writes, by the spelling every build has.
ROLES = {
    "ngl": "-ngl",
    "ts": "-ts",
    "device": "-dev",
    "ctx": "-c",
    "ctk": "-ctk",
    "ctv": "-ctv",
    "fa": "-fa",
    "ncmoe": "-ncmoe",
    "cmoe": "-cmoe",
    "ot": "-ot",
    "sm": "-sm",
    "fit_ctx": "-fitc",
    "fit_target": "-fitt",
}
#: Long names when there is no catalog (today's llama-server).
LONG = {
    "ngl": "--gpu-layers",
    "ts": "--tensor-split",
    "device": "--device",
    "ctx": "--ctx-size",
    "ctk": "--cache-type-k",
    "ctv": "--cache-type-v",
    "fa": "--flash-attn",
    "ncmoe": "--n-cpu-moe",
    "cmoe": "--cpu-moe",
    "ot": "--override-tensor",
    "sm": "--split-mode",
    "fit_ctx": "--fit-ctx",
    "fit_target": "--fit-target",
}


@dataclass
class DevicePlan:
    """What the plan puts on one device."""

    device: Device
    usable_bytes: int  # free - margin - committed
    committed_bytes: int = 0
    layers: int = 0
    weights_bytes: int = 0
    kv_bytes: int = 0
    compute_bytes: int = 0
    output_bytes: int = 0

    @property
    def used_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.output_bytes

    @property
    def over_bytes(self) -> int:
        """Bytes past what may be used (0 when it fits)."""
        return max(0, self.used_bytes - self.usable_bytes)

    def view(self) -> dict:
        return {
            **self.device.view(),
            "layers": self.layers,
            "weights_bytes": self.weights_bytes,
            "kv_bytes": self.kv_bytes,
            "compute_bytes": self.compute_bytes,
            "used_bytes": self.used_bytes,
        }


@dataclass
class Plan:
    """The planner's answer. ``flags`` is the whole llama-server flag list to launch
    with (the user's, then ``added``); ``view()`` is the JSON of ``corral fit --json``."""

    fits: bool
    flags: list[str]
    added: list[tuple[str, str | None]]
    context: int
    cache_type_k: str
    cache_type_v: str
    devices: list[DevicePlan]
    notes: list[str]
    env: dict[str, str] = field(default_factory=dict)
    short_bytes: dict[str, int] = field(default_factory=dict)  # missing per device
    projections: int = 0  # project() calls the search made

    def view(self) -> dict:
        return {
            "fits": self.fits,
            "flags": list(self.flags),
            "context": self.context,
            "cache_type_k": self.cache_type_k,
            "cache_type_v": self.cache_type_v,
            "devices": [d.view() for d in self.devices],
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- inputs


def _names(catalog) -> dict[str, str]:
    """role -> canonical long name in this build (the fallback without a catalog)."""
    out = dict(LONG)
    if catalog is not None:
        for role, short in ROLES.items():
            flag = catalog.lookup(short)
            if flag is not None:
                out[role] = flag.long
    return out


def _given(pairs, names: dict[str, str]) -> dict[str, str | None]:
    """role -> the user's value for every planner role present in ``pairs``."""
    by_long = {v: k for k, v in names.items()}
    given: dict[str, str | None] = {}
    for name, value in pairs:
        role = by_long.get(name)
        if role is not None:
            given[role] = value
    return given


def _int_value(given: dict, role: str, what: str) -> int | None:
    if role not in given:
        return None
    try:
        return int(str(given[role]).split(",")[0])
    except ValueError:
        from corral.errors import UsageError

        raise UsageError(f"{what} needs a number, got {given[role]!r}") from None


def _selected_gpus(devices: Devices, value: str | None) -> list[Device]:
    """The devices a user's ``--device CUDA1,ROCm0,RPC0`` names (by llama.cpp's name, in
    the given order); ``none`` is no GPU; a name not understood leaves every device in."""
    import re

    gpus = devices.offload
    if value is None:
        return list(gpus)
    chosen: list[Device] = []
    for item in (p.strip() for p in value.split(",")):
        if item.lower() == "none":
            return []
        m = re.fullmatch(r"([A-Za-z]+)(\d+)", item)
        if not m:
            return list(gpus)
        match = [g for g in gpus if devices.llama_name(g).lower() == item.lower()]
        if not match:
            return list(gpus)
        chosen.extend(g for g in match if g not in chosen)
    return chosen


# --------------------------------------------------------------------------- the search


@dataclass(frozen=True)
class _Config:
    ctx: int
    ctk: str
    ctv: str
    fa: str
    ngl: int  # -1: all
    ncmoe: int
    gpus: tuple[int, ...]  # positions in Devices.offload (RPC devices, then GPUs)
    split: tuple[float, ...] | None


@dataclass
class _Result:
    config: _Config
    placed: list[DevicePlan]  # the GPUs of config.gpus, then the host
    notes: list[str]

    @property
    def gpu_ok(self) -> bool:
        return all(d.over_bytes == 0 for d in self.placed[:-1])

    @property
    def ok(self) -> bool:
        return all(d.over_bytes == 0 for d in self.placed)

    @property
    def over(self) -> int:
        return sum(d.over_bytes for d in self.placed)


class _Search:
    """Runs ``project`` for configurations, memoised; keeps the closest miss."""

    def __init__(
        self,
        est,
        model,
        base,
        devices: Devices,
        usable: dict[str, int],
        committed: dict[str, int],
        split_fixed: bool,
    ) -> None:
        self.est, self.model, self.base = est, model, base
        self.devices, self.usable, self.committed = devices, usable, committed
        self.split_fixed = split_fixed
        self.calls = 0
        self._memo: dict[_Config, _Result] = {}
        self.closest: _Result | None = None

    def project(self, cfg: _Config) -> _Result:
        if cfg in self._memo:
            return self._memo[cfg]
        opts = dataclasses.replace(
            self.base,
            ctx=cfg.ctx,
            cache_type_k=cfg.ctk,
            cache_type_v=cfg.ctv,
            flash_attn=cfg.fa,
            n_gpu_layers=cfg.ngl if cfg.gpus else 0,
            n_cpu_moe=cfg.ncmoe,
            tensor_split=list(cfg.split) if cfg.split is not None else None,
        )
        self.calls += 1
        proj = self.est.project(self.model, opts, len(cfg.gpus))
        targets = [self.devices.offload[i] for i in cfg.gpus] + [self.devices.host]
        placed = []
        for dev, use in zip(targets, _ordered(proj.devices, len(cfg.gpus)), strict=False):
            placed.append(
                DevicePlan(
                    device=dev,
                    usable_bytes=self.usable[dev.id],
                    committed_bytes=self.committed.get(dev.id, 0),
                    layers=int(use.layers),
                    weights_bytes=int(use.weights_bytes),
                    kv_bytes=int(use.kv_bytes),
                    compute_bytes=int(use.compute_bytes),
                    output_bytes=int(use.output_bytes),
                )
            )
        result = _Result(cfg, placed, list(getattr(proj, "notes", []) or []))
        self._memo[cfg] = result
        if self.closest is None or result.over < self.closest.over:
            self.closest = result
        return result

    def evaluate(self, cfg: _Config) -> _Result:
        """Project ``cfg``; with several GPUs and a split of corral's choosing, split in
        proportion to what each GPU has left after its fixed buffers, refined twice."""
        if len(cfg.gpus) < 2 or self.split_fixed:
            return self.project(cfg)
        gpus = [self.devices.offload[i] for i in cfg.gpus]
        split = _proportions([self.usable[g.id] for g in gpus])
        best = None
        for _ in range(3):
            result = self.project(dataclasses.replace(cfg, split=split))
            if best is None or result.over < best.over:
                best = result
            if result.gpu_ok:
                return result
            room = [
                max(0, d.usable_bytes - d.compute_bytes - d.output_bytes)
                for d in result.placed[:-1]
            ]
            new = _proportions(room)
            if new == split:
                break
            split = new
        return best  # type: ignore[return-value]


def _ordered(uses, n_gpus: int):
    """The projection's GPU entries (gpu0..) in order, then its host entry."""
    by_id = {u.id: u for u in uses}
    return [by_id[f"gpu{i}"] for i in range(n_gpus)] + [by_id["host"]]


def _proportions(values: list[int]) -> tuple[float, ...]:
    """Split proportions rounded to 0.1 GiB (readable as a flag, stable under noise)."""
    gib = [round(max(0, v) / (1024 * MiB), 1) for v in values]
    if not any(gib):
        gib = [1.0] * len(values)
    return tuple(gib)


def _largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The largest x in [lo, hi] with ok(x), for ok monotone decreasing; None if none."""
    if lo > hi or not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _smallest(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The smallest x in [lo, hi] with ok(x), for ok monotone increasing; None if none."""
    if lo > hi or not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


# --------------------------------------------------------------------------- plan


@dataclass
class _Request:
    """What :func:`plan` was asked, read once from the flags: the user's value per role,
    what they fixed, the context range and the bytes each device may use."""

    pairs: list
    catalog: Any
    names: dict[str, str]  # role -> this build's long flag
    given: dict[str, str | None]  # role -> the user's value
    base: Any  # the estimator's Options for the user's flags
    margin: int
    committed: dict[str, int]
    usable: dict[str, int]  # device id -> free - margin - committed
    n_layer: int
    is_moe: bool
    target: int  # the context to reach: the user's -c, else the training context
    floor: int  # the smallest context the planner chooses by itself
    kv_options: list[tuple[str, str, str]]

    @property
    def placement_fixed(self) -> bool:
        return "ngl" in self.given

    @property
    def experts_fixed(self) -> bool:
        return bool({"ncmoe", "cmoe", "ot"} & set(self.given))

    @property
    def devices_fixed(self) -> bool:
        return bool({"device", "ts", "sm"} & set(self.given))

    @property
    def full_ngl(self) -> int:
        """``-ngl`` for "every layer where it goes": the user's, else all (-1)."""
        return int(self.base.n_gpu_layers) if self.placement_fixed else -1


def _read_request(
    model, pairs, devices: Devices, catalog, margin, committed, estimator
) -> _Request:
    """The request behind :func:`plan`; a bad number in a planner flag is a UsageError."""
    pairs = list(pairs)
    committed = dict(committed or {})
    names = _names(catalog)
    given = _given(pairs, names)
    base = estimator.Options.from_pairs(pairs, catalog)
    if margin is None:
        target_mib = _int_value(given, "fit_target", "--fit-target")
        margin = target_mib * MiB if target_mib is not None else DEFAULT_MARGIN
    target, floor = _context_range(model, given)
    return _Request(
        pairs=pairs,
        catalog=catalog,
        names=names,
        given=given,
        base=base,
        margin=margin,
        committed=committed,
        usable={d.id: d.free_bytes - margin - committed.get(d.id, 0) for d in devices.all},
        n_layer=int(model.n_layer),
        is_moe=bool(getattr(model, "is_moe", False) or getattr(model, "n_expert", 0)),
        target=target,
        floor=floor,
        kv_options=_kv_ladder(
            base.cache_type_k,
            base.cache_type_v,
            str(base.flash_attn),
            "ctk" in given,
            "ctv" in given,
            "fa" in given,
        ),
    )


def _context_range(model, given: dict[str, str | None]) -> tuple[int, int]:
    """(target, floor) of the context search: a user's ``-c`` fixes both (0: the training
    context); otherwise the training context down to ``--fit-ctx`` or 4096."""
    n_ctx_train = int(getattr(model, "n_ctx_train", 0) or 0) or MIN_CONTEXT
    ctx_given = _int_value(given, "ctx", "--ctx-size")
    if ctx_given is not None:
        target = ctx_given or n_ctx_train  # -c 0: the training context
        return target, target
    floor_ask = _int_value(given, "fit_ctx", "--fit-ctx")
    return n_ctx_train, min(n_ctx_train, floor_ask if floor_ask is not None else MIN_CONTEXT)


def _request_notes(req: _Request) -> list[str]:
    """The notes every plan starts with: others' commitments and the flags kept."""
    notes = [
        f"{dev_id}: {human_bytes(n)} already committed to other instances"
        for dev_id, n in sorted(req.committed.items())
        if n
    ]
    for role in ("ngl", "ts", "device", "ctx", "ctk", "ctv", "fa", "ncmoe", "cmoe", "ot", "sm"):
        if role in req.given:
            value = req.given[role]
            notes.append(f"{req.names[role]}{'' if value is None else ' ' + value} kept as given")
    if "ot" in req.given:
        notes.append(f"{req.names['ot']} is not modelled: the estimate ignores it")
    return notes


def _gpu_pool(devices: Devices, req: _Request, notes: list[str]) -> tuple[int, ...]:
    """Positions of the GPUs that may take something: the user's ``--device`` choice as
    given, else every GPU with room past the margin and what is committed."""
    pool = _selected_gpus(devices, req.given.get("device"))
    if "device" not in req.given:
        for g in list(pool):
            if req.usable[g.id] <= 0:
                notes.append(
                    f"{g.id}: {human_bytes(g.free_bytes)} free, not more than the "
                    f"{human_bytes(req.margin)} margin"
                    + (" and what is committed" if req.committed.get(g.id) else "")
                    + ": not used"
                )
                pool.remove(g)
    return tuple(devices.offload.index(g) for g in pool)


@dataclass
class _Configs:
    """Makes the search's configurations: the user's fixed choices, one lever changed.

    ``gpus`` is read at each call, so narrowing it (fewer GPUs suffice) changes every
    configuration made afterwards."""

    base: Any
    gpus: tuple[int, ...]

    def __call__(self, ctx, kv, ngl=None, ncmoe=None, gpus=None) -> _Config:
        ctk, ctv, fa = kv
        return _Config(
            ctx=ctx,
            ctk=ctk,
            ctv=ctv,
            fa=fa,
            ngl=int(self.base.n_gpu_layers) if ngl is None else ngl,
            ncmoe=int(self.base.n_cpu_moe or 0) if ncmoe is None else ncmoe,
            gpus=self.gpus if gpus is None else gpus,
            split=tuple(self.base.tensor_split) if self.base.tensor_split else None,
        )


def _fewest_gpus(
    search: _Search, cfg: _Configs, req: _Request, devices: Devices, notes: list[str]
) -> None:
    """Narrow ``cfg.gpus`` to the fewest GPUs with the most room when the model fits
    there unchanged (every layer, the target context, the default KV cache)."""
    positions, offload = cfg.gpus, devices.offload
    if len(positions) < 2 or req.devices_fixed or any(offload[i].kind == "rpc" for i in positions):
        return  # the rpc-servers a launch names are there to be used
    ranked = sorted(positions, key=lambda i: (-req.usable[offload[i].id], i))
    for k in range(1, len(positions)):
        subset = tuple(sorted(ranked[:k]))
        if search.evaluate(cfg(req.target, req.kv_options[0], req.full_ngl, gpus=subset)).ok:
            left = [offload[i].id for i in positions if i not in subset]
            notes.append(
                f"fits on {', '.join(offload[i].id for i in subset)} "
                f"alone: {', '.join(left)} not used"
            )
            cfg.gpus = subset
            return


def plan(
    model,
    pairs,
    devices: Devices,
    *,
    catalog=None,
    margin: int | None = None,
    committed: dict[str, int] | None = None,
    estimator: Any = None,
) -> Plan:
    """Choose the flags that fit ``model`` on ``devices`` (see the module doc).

    ``pairs`` are the user's normalised flags (``FlagCatalog.normalize``), ``margin``
    the bytes kept free per device (default: ``--fit-target`` from the flags, else
    1 GiB), ``committed`` the bytes per device id others hold that the driver's free
    figure does not show yet. ``estimator`` is the module with ``Options`` and
    ``project`` (default :mod:`corral.fit.estimate`; tests pass a stand-in).
    """
    if estimator is None:
        from corral.fit import estimate as estimator
    req = _read_request(model, pairs, devices, catalog, margin, committed, estimator)
    notes = _request_notes(req)
    cfg = _Configs(req.base, _gpu_pool(devices, req, notes))
    search = _Search(
        estimator,
        model,
        req.base,
        devices,
        req.usable,
        req.committed,
        split_fixed="ts" in req.given,
    )
    _fewest_gpus(search, cfg, req, devices, notes)
    chosen, why_kv = _choose(search, cfg, req)
    return _finish(chosen, search, devices, req, why_kv, notes)


def _kv_ladder(
    ctk: str, ctv: str, fa: str, k_fixed: bool, v_fixed: bool, fa_fixed: bool
) -> list[tuple[str, str, str]]:
    """(K type, V type, flash attention) to try, the user's (or f16) first."""
    out = [(ctk, ctv, fa)]
    for q in KV_LADDER:
        k = ctk if k_fixed else q
        v = ctv if v_fixed else q
        if v in QUANTIZED and v != ctv and fa_fixed and fa == "off":
            v = ctv  # a quantized V cache needs flash attention, which the user turned off
        f = fa if fa_fixed or (k, v) == (ctk, ctv) else "on"
        if (k, v, f) not in out:
            out.append((k, v, f))
    return out


def _choose(search: _Search, cfg: _Configs, req: _Request) -> tuple[_Result | None, str]:
    """The first configuration that fits, pulling the levers in order (None if none),
    and why its KV cache type was chosen ("" for the default one)."""
    kv_options, floor, target = req.kv_options, req.floor, req.target
    full_ngl, n_layer = req.full_ngl, req.n_layer
    placement_fixed = req.placement_fixed or not cfg.gpus
    experts_free = req.is_moe and not req.experts_fixed and bool(cfg.gpus)

    def at(ctx, kv, ngl=full_ngl, ncmoe=None):
        return search.evaluate(cfg(ctx, kv, ngl, ncmoe))

    default = f"{kv_options[0][0]}/{kv_options[0][1]}"
    # 1 and 2: every layer where it is, the KV cache as small as it must be.
    for rank, kv in enumerate(kv_options):
        if at(floor, kv).ok:
            why = (
                ""
                if rank == 0
                else (
                    f"{default} does not fit context {floor} on "
                    f"{_tightest(search, cfg(floor, kv_options[0], full_ngl))}"
                )
            )
            return _grow(search, lambda c, kv=kv: at(c, kv), floor, target), why
    # 3: MoE experts to the CPU, the fewest layers' worth; 4: the most layers on the GPUs.
    stages = []
    if experts_free:
        stages.append(("experts", lambda kv, n: at(floor, kv, ncmoe=n)))
    if not placement_fixed:
        ncmoe_all = n_layer if experts_free else None
        stages.append(("layers", lambda kv, n: at(floor, kv, ngl=n, ncmoe=ncmoe_all)))
    for stage, run in stages:
        found: dict[int, tuple[int, int]] = {}  # rank -> (layers moved to the CPU, n)
        for rank, kv in enumerate(kv_options):
            if stage == "experts":
                n = _smallest(1, n_layer, lambda n, kv=kv: run(kv, n).gpu_ok)  # noqa: B023 -- called here
                moved = n
            else:
                n = _largest(0, n_layer, lambda n, kv=kv: run(kv, n).gpu_ok)  # noqa: B023 -- called here
                moved = None if n is None else n_layer - n
            if n is not None and run(kv, n).ok:
                found[rank] = (moved, n)
        if not found:
            continue
        rank = min(found, key=lambda r: (found[r][0], r))  # least moved; then least quantized
        kv, (moved, n) = kv_options[rank], found[rank]
        what = "layers' experts" if stage == "experts" else "layers"
        why = (
            ""
            if rank == 0
            else (
                f"{found[0][0] - moved} fewer {what} on the CPU than with {default}"
                if 0 in found
                else f"{default} does not fit context {floor} even so"
            )
        )
        if stage == "experts":
            return _grow(search, lambda c: at(c, kv, ncmoe=n), floor, target), why  # noqa: B023
        return _grow(search, lambda c: at(c, kv, ngl=n, ncmoe=ncmoe_all), floor, target), why  # noqa: B023
    return None, ""


def _grow(search: _Search, run: Callable[[int], _Result], floor: int, target: int) -> _Result:
    """The largest context in [floor, target] (steps of 1024) that fits; ``floor`` does."""
    if run(target).ok:
        return run(target)
    best = _largest(-(-floor // CTX_STEP), (target - 1) // CTX_STEP, lambda k: run(k * CTX_STEP).ok)
    return run(best * CTX_STEP) if best is not None else run(floor)


@dataclass
class _PlanDraft:
    """The chosen (or closest) configuration on its way to a Plan: each step below adds
    its flags to ``added`` and says why in ``notes``, in the order they are written."""

    result: _Result
    search: _Search
    devices: Devices
    req: _Request
    notes: list[str]
    added: list[tuple[str, str | None]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> _Config:
        return self.result.config

    @property
    def used_gpus(self) -> list[Device]:
        return [self.devices.offload[i] for i in self.config.gpus]

    def add(self, role: str, value: str | None) -> None:
        self.added.append((self.req.names[role], value))


def _device_flags(draft: _PlanDraft) -> None:
    """``--device`` (and the same choice as a visible-devices env var) when only some
    GPUs (or RPC devices) are used."""
    gpus, used = draft.devices.offload, draft.used_gpus
    if "device" in draft.req.given or not gpus or not used or len(used) >= len(gpus):
        return
    draft.add("device", ",".join(draft.devices.llama_name(g) for g in used))
    vendors = {g.visible_env() for g in used}
    if len(vendors) == 1 and None not in vendors:
        draft.env[vendors.pop()] = ",".join(str(g.index) for g in used)


def _layer_flags(draft: _PlanDraft) -> None:
    """``--gpu-layers`` (every layer written as N+1) and ``--tensor-split``."""
    c, used, n_layer = draft.config, draft.used_gpus, draft.req.n_layer
    if "ngl" not in draft.req.given and draft.devices.offload:
        ngl = n_layer + 1 if c.ngl < 0 else c.ngl
        if not used:
            ngl = 0
            draft.notes.append("no GPU has room: everything on the CPU")
        elif c.ngl >= 0:
            draft.notes.append(
                f"{c.ngl} of {n_layer + 1} layers on the GPU"
                f"{'s' if len(used) > 1 else ''} (the rest on the CPU): "
                f"all of them do not fit {_tightest(draft.search, c)}"
            )
        draft.add("ngl", str(ngl))
    if c.split is not None and "ts" not in draft.req.given and len(used) >= 2:
        split = ",".join(f"{x:g}" for x in c.split)
        draft.add("ts", split)
        minus = " − committed" if any(d.committed_bytes for d in draft.result.placed) else ""
        draft.notes.append(
            f"tensor split {split}: in proportion to usable memory (GiB free − "
            f"margin{minus} − compute buffers)"
        )


def _context_flags(draft: _PlanDraft) -> None:
    """``--ctx-size`` unless the user gave it, and what it was shrunk to fit."""
    c, target = draft.config, draft.req.target
    if "ctx" not in draft.req.given:
        draft.add("ctx", str(c.ctx))
        if c.ctx < target:
            up = dataclasses.replace(c, ctx=min(target, c.ctx + CTX_STEP))
            draft.notes.append(f"context {target} → {c.ctx} to fit {_tightest(draft.search, up)}")
        else:
            draft.notes.append(f"context {c.ctx}: the model's training context")
    elif c.ctx < MIN_CONTEXT:
        draft.notes.append(f"context {c.ctx}, below {MIN_CONTEXT}, as asked")


def _kv_flags(draft: _PlanDraft, why_kv: str) -> None:
    """The KV cache types and flash attention, where they differ from the user's."""
    c, kv_default = draft.config, draft.req.kv_options[0]
    if (c.ctk, c.ctv, c.fa) == kv_default:
        return
    if c.ctk != kv_default[0]:
        draft.add("ctk", c.ctk)
    if c.ctv != kv_default[1]:
        draft.add("ctv", c.ctv)
    if c.fa != kv_default[2]:
        draft.add("fa", c.fa)
    draft.notes.append(
        f"KV cache K {c.ctk}, V {c.ctv}"
        f"{' with flash attention on' if c.fa == 'on' else ''}" + (f": {why_kv}" if why_kv else "")
    )


def _expert_flags(draft: _PlanDraft) -> None:
    """``--n-cpu-moe`` when experts go to the CPU and the user fixed none."""
    c, n_layer = draft.config, draft.req.n_layer
    if not c.ncmoe or "ncmoe" in draft.req.given or "cmoe" in draft.req.given:
        return
    draft.add("ncmoe", str(c.ncmoe))
    if c.ngl < 0:
        fewer = dataclasses.replace(c, ncmoe=max(0, c.ncmoe - 1))
        draft.notes.append(
            f"experts of the first {c.ncmoe} of {n_layer} layers on the CPU: "
            f"all of them do not fit {_tightest(draft.search, fewer)}"
            "; every dense layer stays on the GPU"
        )
    else:
        draft.notes.append(f"experts of all {n_layer} layers on the CPU, and still not enough room")


def _shortfall(draft: _PlanDraft) -> dict[str, int]:
    """The bytes missing per device, and the plan's first note saying so."""
    c, result = draft.config, draft.result
    short = {d.device.id: d.over_bytes for d in result.placed if d.over_bytes}
    where = ", ".join(f"{human_bytes(n)} on {dev}" for dev, n in short.items())
    draft.notes.insert(
        0,
        f"does not fit by {human_bytes(sum(short.values()))} ({where}) "
        f"even at context {c.ctx}, KV cache {c.ctk}/{c.ctv}"
        + (f", {c.ngl} layers on the GPU" if c.ngl >= 0 and draft.used_gpus else "")
        + (f", experts of {c.ncmoe} layers on the CPU" if c.ncmoe else ""),
    )
    return short


def _finish(
    chosen: _Result | None,
    search: _Search,
    devices: Devices,
    req: _Request,
    why_kv: str,
    notes: list[str],
) -> Plan:
    """The Plan for the chosen configuration (or, when none fits, the closest): the flags
    to add, a note for each choice and, for a miss, by how much."""
    fits = chosen is not None
    result = chosen if chosen is not None else search.closest
    if result is None:  # not even one projection (cannot happen: the floor is tried)
        raise RuntimeError("the planner made no projection")
    placed = {d.device.id: d for d in result.placed}
    dev_plans = [
        placed.get(d.id) or DevicePlan(device=d, usable_bytes=req.usable[d.id]) for d in devices.all
    ]
    draft = _PlanDraft(result, search, devices, req, notes)
    _device_flags(draft)
    _layer_flags(draft)
    _context_flags(draft)
    _kv_flags(draft, why_kv)
    _expert_flags(draft)
    notes.extend(n for n in result.notes if n not in notes)
    short = {} if fits else _shortfall(draft)
    from corral.builds.catalog import FlagCatalog

    catalog, pairs = req.catalog, req.pairs
    merged = catalog.merge(pairs, draft.added) if catalog is not None else [*pairs, *draft.added]
    c = result.config
    return Plan(
        fits=fits,
        flags=catalog.to_argv(merged) if catalog is not None else FlagCatalog.to_argv(merged),
        added=draft.added,
        context=c.ctx,
        cache_type_k=c.ctk,
        cache_type_v=c.ctv,
        devices=dev_plans,
        notes=notes,
        env=draft.env,
        short_bytes=short,
        projections=search.calls,
    )


def _tightest(search: _Search, cfg: _Config) -> str:
    """The device that overflows most under ``cfg`` (what a note blames)."""
    result = search.evaluate(cfg)
    worst = max(result.placed, key=lambda d: (d.over_bytes, d.used_bytes - d.usable_bytes))
    return worst.device.id


# --------------------------------------------------------------------------- entry point


def owned_and_mmproj(catalog, pairs, mmproj: str | None) -> list:
    """``pairs`` as a launch would pass them on: without the flags corral owns
    (``--model``, ``--port``, ``--host``), with the model's vision projector unless the
    user chose one (or ``--no-mmproj``), as the supervisor does."""
    owned = {
        f.long
        for f in (catalog.lookup(n) for n in ("--model", "--port", "--host"))
        if f is not None
    }
    kept = [(n, v) for n, v in pairs if n not in owned]
    mm = catalog.lookup("--mmproj")
    names = {n for n, _ in kept}
    if (
        mmproj
        and mm is not None
        and mm.long not in names
        and not any(n.startswith("--no-mmproj") for n in names)
    ):
        kept.append((mm.long, mmproj))
    return kept


def fit(
    model_path: str,
    pairs,
    *,
    catalog=None,
    devices_spec: str | None = None,
    margin: int | None = None,
    committed: dict[str, int] | None = None,
    probe=None,
    estimator: Any = None,
    rpc_asker: Callable | None = None,
) -> tuple[Plan, Devices]:
    """Plan ``model_path`` with these normalised flags on the devices detected now (or
    simulated from ``devices_spec``), and the devices of the rpc-servers its ``--rpc``
    names (asked now; ``rpc_asker`` replaces :func:`corral.fit.rpc_devices.ask`).
    What ``corral fit`` runs."""
    if estimator is None:
        from corral.fit import estimate as estimator
    devs = detect_devices(devices_spec, probe)
    _ask_rpc(devs, pairs, catalog, rpc_asker)
    shape = estimator.load_model(str(model_path))
    result = plan(
        shape, pairs, devs, catalog=catalog, margin=margin, committed=committed, estimator=estimator
    )
    result.notes.extend(w for w in devs.warnings if w not in result.notes)
    return result, devs


def _ask_rpc(devs: Devices, pairs, catalog, asker: Callable | None) -> None:
    """The ``--rpc`` servers' devices into ``devs``; UpstreamError when one cannot be
    asked (a plan without its devices would put its layers elsewhere)."""
    from corral.fit import rpc_devices

    try:
        rpc_devices.add_rpc(devs, pairs, catalog, asker=asker or rpc_devices.ask)
    except OSError as exc:
        raise rpc_unreachable(exc) from None


def rpc_unreachable(exc: OSError):
    """The error for an rpc-server that could not be asked its memory."""
    from corral.errors import UpstreamError

    return UpstreamError(
        f"no memory plan: {exc or type(exc).__name__}; a launch with this --rpc is not "
        "planned (llama.cpp splits the layers by the free memory each device reports)"
    )
