"""Prometheus metrics of one daemon: router counters plus gauges read at scrape time.

Each daemon (and each test app) has its own registry, so nothing leaks between them.
Instance state, restarts, load time and GPU memory are not tracked as they change:
a collector reads them from the supervisor and the GPU probe when ``/metrics`` is
scraped.

Memory per device (the planner's ids: ``gpu0``, ``gpu1``, ..., ``host``):

* ``corral_instance_projected_bytes{instance,device}`` -- what the memory plan of each
  instance's launch puts on each device; ``corral_instance_real_bytes{instance,device}``
  what llama-server reported once loaded (when it did).
* ``corral_device_projected_bytes{device}`` -- the sum over live instances.
* ``corral_device_used_bytes{device}`` / ``corral_device_total_bytes{device}`` -- what
  the driver says (NVML, else nvidia-smi / rocm-smi), read at most every
  ``GPU_CACHE_SECONDS``; absent on a machine without GPU figures. The ids are numbered as
  :func:`corral.fit.devices.detect_devices` numbers them, so they match the plans.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

#: Seconds; TTFT of a local model spans ~5 ms (cached prompt) to minutes (long prompt, CPU).
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
GPU_CACHE_SECONDS = 5.0


class Metrics:
    """The router's metric objects, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._live: _LiveCollector | None = None  # set by attach()
        self.requests = Counter(
            "corral_requests",
            "Requests routed to an instance",
            ["model", "instance", "endpoint", "status"],
            registry=r,
        )
        self.errors = Counter(
            "corral_request_errors",
            "Routed requests answered with >= 400",
            ["model", "instance"],
            registry=r,
        )
        self.rejected = Counter(
            "corral_requests_rejected", "Requests refused before routing", ["reason"], registry=r
        )
        self.ttft = Histogram(
            "corral_time_to_first_token_seconds",
            "Time from request to the first byte from upstream",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "corral_request_duration_seconds",
            "Time from request to the last byte",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_in = Counter(
            "corral_prompt_tokens", "Prompt tokens (from usage/timings)", ["model"], registry=r
        )
        self.tokens_out = Counter(
            "corral_completion_tokens",
            "Generated tokens (from usage/timings)",
            ["model"],
            registry=r,
        )
        self.tokens_per_second = Gauge(
            "corral_tokens_per_second",
            "Generation speed of the last response that reported it",
            ["model", "instance"],
            registry=r,
        )
        self.load_seconds = Histogram(
            "corral_model_load_seconds",
            "On-demand starts: request to instance ready",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.load_failures = Counter(
            "corral_model_load_failures", "On-demand starts that failed", ["model"], registry=r
        )
        self.queue_depth = Gauge(
            "corral_queue_depth", "Requests waiting for a model to load", ["model"], registry=r
        )
        self.evictions = Counter(
            "corral_instances_retired",
            "Router-started instances stopped (evicted or idle)",
            ["reason"],
            registry=r,
        )

    def attach(self, supervisor, gpu_probe=None) -> None:
        """Add the scrape-time collector of instance and GPU gauges."""
        self._live = _LiveCollector(supervisor, gpu_probe)
        self.registry.register(self._live)

    def refresh_gpus(self) -> None:
        """Re-detect GPU memory if the last reading is old (blocking: run it in a thread)."""
        if self._live is not None:
            self._live.refresh_gpus()

    def render(self) -> bytes:
        """The text format (on the event loop: the collector reads the supervisor)."""
        return generate_latest(self.registry)


class _LiveCollector:
    """Instance state/restarts/load time and GPU memory, read when scraped."""

    def __init__(self, supervisor, gpu_probe=None) -> None:
        self.supervisor = supervisor
        self.gpu_probe = gpu_probe
        self._gpus: tuple[float, list] = (0.0, [])

    def describe(self):
        return []

    def collect(self):
        state = GaugeMetricFamily(
            "corral_instance_state",
            "1 for the state the instance is in",
            labels=["instance", "model", "state"],
        )
        restarts = GaugeMetricFamily(
            "corral_instance_restarts", "Restarts of the instance", labels=["instance"]
        )
        load = GaugeMetricFamily(
            "corral_instance_load_seconds",
            "Seconds from the last spawn to ready",
            labels=["instance"],
        )
        from corral.supervisor.states import State

        for rec in self.supervisor.list():
            model = rec.model.rsplit("/", 1)[-1]
            for s in State:
                state.add_metric([rec.name, model, s.value], 1.0 if rec.state == s.value else 0.0)
            restarts.add_metric([rec.name], float(rec.restarts))
            if rec.ready_at and rec.started_at and rec.ready_at >= rec.started_at:
                load.add_metric([rec.name], rec.ready_at - rec.started_at)
        yield state
        yield restarts
        yield load
        used = GaugeMetricFamily(
            "corral_gpu_memory_used_bytes", "VRAM in use", labels=["gpu", "name"]
        )
        total = GaugeMetricFamily(
            "corral_gpu_memory_total_bytes", "VRAM size", labels=["gpu", "name"]
        )
        for g in self._gpus[1]:
            if g.vram_total is None:
                continue
            total.add_metric([str(g.index), g.name], float(g.vram_total))
            if g.vram_free is not None:
                used.add_metric([str(g.index), g.name], float(g.vram_total - g.vram_free))
        yield used
        yield total
        yield from self._device_families()

    def _device_families(self):
        projected = GaugeMetricFamily(
            "corral_instance_projected_bytes",
            "Bytes the memory plan of a live instance puts on a device",
            labels=["instance", "device"],
        )
        real = GaugeMetricFamily(
            "corral_instance_real_bytes",
            "Bytes llama-server reported on a device once loaded",
            labels=["instance", "device"],
        )
        per_device = GaugeMetricFamily(
            "corral_device_projected_bytes",
            "Sum of the plans of the live instances on a device",
            labels=["device"],
        )
        from corral.supervisor.states import ALIVE

        sums: dict[str, float] = {}
        for rec in self.supervisor.list():
            placement = getattr(rec, "placement", None)
            if rec.state not in ALIVE or not isinstance(placement, dict):
                continue  # a stopped instance holds no memory; an unplanned one is unknown
            for device, used in _planned_bytes(placement).items():
                projected.add_metric([rec.name, device], used)
                sums[device] = sums.get(device, 0.0) + used
            for device, n in (placement.get("real") or {}).items():
                if isinstance(n, (int, float)):
                    real.add_metric([rec.name, str(device)], float(n))
        for device, n in sorted(sums.items()):
            per_device.add_metric([device], n)
        used = GaugeMetricFamily(
            "corral_device_used_bytes",
            "Memory in use on a GPU, as its driver reports it",
            labels=["device"],
        )
        total = GaugeMetricFamily(
            "corral_device_total_bytes", "Memory size of a GPU", labels=["device"]
        )
        # numbered as fit.devices.detect_devices numbers them: GPUs without figures skipped
        gpus = [g for g in self._gpus[1] if g.vram_total is not None]
        for n, g in enumerate(gpus):
            total.add_metric([f"gpu{n}"], float(g.vram_total))
            if g.vram_free is not None:
                used.add_metric([f"gpu{n}"], float(g.vram_total - g.vram_free))
        yield from (projected, real, per_device, used, total)

    def refresh_gpus(self) -> None:
        """GPUs, re-detected at most every few seconds (nvidia-smi is not free)."""
        at, gpus = self._gpus
        if time.monotonic() - at < GPU_CACHE_SECONDS:
            return
        from corral import gpu

        try:
            gpus = gpu.detect(self.gpu_probe).gpus
        except Exception:  # a broken driver must not break /metrics
            gpus = []
        self._gpus = (time.monotonic(), gpus)


def _planned_bytes(placement: dict) -> dict[str, float]:
    """device id -> projected bytes of a placement (devices it puts nothing on left out)."""
    out: dict[str, float] = {}
    for dev in placement.get("devices") or []:
        used = dev.get("used_bytes") if isinstance(dev, dict) else None
        if isinstance(used, (int, float)) and used > 0:
            out[str(dev.get("id"))] = float(used)
    return out
