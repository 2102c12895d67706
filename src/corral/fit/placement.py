"""Where a launch goes, as the daemon records it, and what running instances still hold.

The planner (:mod:`corral.fit.planner`) answers for one launch; the daemon places many.
Two facts connect them:

* **A placement record** (:func:`record`): the plan's devices and bytes per device, the
  flags and env it added, its notes. Stored on the instance (``placement``), shown by
  ``ps --json`` and the API, read back by :func:`committed` and the router's eviction.
* **What other instances commit** (:func:`committed`): memory the driver does not show
  as used yet, so two launches cannot both count the same free bytes. Per device:

  - a *simulated* device (``fit_devices``) never changes its free figure: every live
    instance's projection counts in full;
  - a *detected GPU* shows what a process really allocated (the driver's per-process
    figure, ``shown``): an instance commits its projection minus that, so a loading
    instance counts in full and a loaded one only for what it has not allocated;
  - the *detected host* reports MemAvailable, which already leaves out an instance's
    KV cache and compute buffers once they are allocated but still counts its
    memory-mapped weights as available (page cache): a loaded instance commits its
    weights, a loading one everything;
  - an *rpc-server's device* counts in full: a CPU backend reports its whole RAM as
    free whatever it holds, and a server busy with an instance is not asked anyway
    (it serves one client at a time).

Pure functions; the supervisor supplies records and driver figures.
"""

from __future__ import annotations

from typing import Iterable

from corral.fit.devices import Devices

#: Instance states in which a process holds (or is about to hold) memory (and, with
#: ``--rpc``, its rpc-servers' one connection).
HOLDING = frozenset({"starting", "ready", "unhealthy", "backoff", "stopping"})


def record(plan) -> dict:
    """The placement an instance keeps: the plan's view plus what it added."""
    view = plan.view()
    return {
        "fits": view["fits"],
        "devices": view["devices"],
        "added": [list(p) for p in plan.added],
        "env": dict(plan.env),
        "context": view["context"],
        "cache_type_k": view["cache_type_k"],
        "cache_type_v": view["cache_type_v"],
        "notes": view["notes"],
        "real": None,
    }


def committed(
    instances: Iterable, devices: Devices, shown: dict[tuple[str, int], int] | None = None
) -> dict[str, int]:
    """Bytes per device id that live ``instances`` (records with ``placement``, ``pid``,
    ``state``, ``desired``) hold beyond what ``devices``' free figures already show.

    ``shown`` maps (device id, pid) to the bytes the driver reports for that process.
    """
    shown = shown or {}
    by_id = {d.id: d for d in devices.all}
    out: dict[str, int] = {}
    for rec in instances:
        placement = getattr(rec, "placement", None)
        if not placement or rec.desired != "running" or rec.state not in HOLDING:
            continue
        loaded = rec.state in ("ready", "unhealthy")
        for use in placement.get("devices", ()):
            dev = by_id.get(use.get("id"))
            if dev is None:
                continue
            used = int(use.get("used_bytes") or 0)
            if dev.simulated or dev.kind == "rpc":
                held = used
            elif dev.kind == "gpu":
                held = max(0, used - shown.get((dev.id, rec.pid or -1), 0))
            else:  # the detected host: a loaded instance's KV and compute are not available
                held = int(use.get("weights_bytes") or 0) if loaded else used
            if held:
                out[dev.id] = out.get(dev.id, 0) + held
    return out


def summary(placement: dict | None) -> str:
    """One line: ``gpu0 18 layers 2.1G, host 0.3G (ctx 32768, KV f16/f16)``."""
    from corral.fit.devices import human_bytes

    if not placement:
        return "not planned"
    parts = []
    for d in placement.get("devices", ()):
        if not d.get("used_bytes"):
            continue
        offload = d.get("kind") in ("gpu", "rpc")
        layers = f" {d['layers']} layers" if offload and d.get("layers") else ""
        parts.append(f"{d['id']}{layers} {human_bytes(d['used_bytes'])}")
    return (", ".join(parts) or "nothing") + (
        f" (ctx {placement.get('context')}, KV {placement.get('cache_type_k')}/"
        f"{placement.get('cache_type_v')})"
    )
