"""The memory planner on simulated devices.

Besides the golden plans on the real estimator (``test_golden_properties``), the precise cases
are planned against :class:`StandIn`: round numbers, so "the largest context that fits"
can be checked by hand, with the real estimator's result types and llama.cpp's placement
rules (the last ``-ngl`` layers offloaded, the output layer with them when all are,
layers split by cumulative ``--tensor-split`` fractions, the experts of the first
``--n-cpu-moe`` layers on the host, the input embedding on the host). The properties
asserted hold for any estimator: nothing past free − margin, user flags unchanged,
context >= 4096 unless asked, experts before dense layers, the shortfall message.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from corral.builds.catalog import FlagCatalog
from corral.fit import planner
from corral.fit.devices import Devices, GiB, MiB, detect_devices, parse_spec
from corral.fit.estimate import DeviceUse, Projection

HELP = Path(__file__).resolve().parents[1] / "fakes" / "llama-server-help.txt"
CATALOG = FlagCatalog.parse(HELP.read_text())

# --------------------------------------------------------------------------- stand-in

_KV_BYTES = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
    "q4_1": 20 / 32,
    "iq4_nl": 18 / 32,
    "q5_0": 22 / 32,
    "q5_1": 24 / 32,
}


@dataclass
class Options:
    ctx: int = 0
    n_parallel: int = 1
    kv_unified: bool = True
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: str = "auto"
    n_batch: int = 2048
    n_ubatch: int = 512
    n_gpu_layers: int = -1
    tensor_split: list[float] | None = None
    n_cpu_moe: int = 0
    swa_full: bool = False
    mmproj: str | None = None
    draft: str | None = None
    loras: list[str] = field(default_factory=list)
    no_kv_offload: bool = False

    @classmethod
    def from_pairs(cls, pairs, catalog=None) -> "Options":
        o = cls()
        for name, value in pairs:
            if name == "--ctx-size":
                o.ctx = int(value)
            elif name == "--cache-type-k":
                o.cache_type_k = value
            elif name == "--cache-type-v":
                o.cache_type_v = value
            elif name == "--flash-attn":
                o.flash_attn = value
            elif name == "--gpu-layers":
                o.n_gpu_layers = -1 if value in ("all", "auto") else int(value)
            elif name == "--tensor-split":
                o.tensor_split = [float(x) for x in re.split(r"[,/]", value)]
            elif name == "--n-cpu-moe":
                o.n_cpu_moe = int(value)
        return o


@dataclass
class Shape:
    """A model as the stand-in sees it: per-layer bytes, no tensor table."""

    n_layer: int
    n_ctx_train: int
    dense_bytes: int  # attention + norms (+ a dense FFN) per layer
    expert_bytes: int = 0  # the experts of one layer
    n_expert: int = 0
    kv_per_token: int = 2 * 8 * 128  # K+V elements per token per layer
    embd_bytes: int = 500 * MiB
    output_bytes: int = 500 * MiB

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0


class StandIn:
    """The estimator's interface with llama.cpp's placement rules and round numbers."""

    Options = Options

    def __init__(self) -> None:
        self.calls = 0

    def project(self, m: Shape, o: Options, gpus: int) -> Projection:
        self.calls += 1
        ngl = o.n_gpu_layers if gpus else 0
        ngl = m.n_layer + 1 if ngl < 0 else min(ngl, m.n_layer + 1)
        # b11434's llama-model.cpp: the last ngl of the n_layer + 1 layers (+1: output)
        start = max(m.n_layer + 1 - ngl, 0)
        n_off = ngl
        split = list(o.tensor_split or [1.0] * gpus)[:gpus]
        split += [0.0] * (gpus - len(split))
        total = sum(split) or 1.0
        cum = [sum(split[: i + 1]) / total for i in range(gpus)]
        use = {f"gpu{i}": DeviceUse(f"gpu{i}") for i in range(gpus)}
        host = DeviceUse("host", weights_bytes=m.embd_bytes)
        kv_layer = int(
            o.ctx * m.kv_per_token / 2 * (_KV_BYTES[o.cache_type_k] + _KV_BYTES[o.cache_type_v])
        )
        for il in range(m.n_layer):
            if il >= start and gpus:
                at = min(bisect.bisect_right(cum, (il - start) / max(n_off, 1)), gpus - 1)
                dev = use[f"gpu{at}"]
            else:
                dev = host
            dev.layers += 1
            dev.weights_bytes += m.dense_bytes
            dev.kv_bytes += kv_layer
            (host if il < o.n_cpu_moe else dev).weights_bytes += m.expert_bytes
        last = next((use[f"gpu{i}"] for i in reversed(range(gpus)) if use[f"gpu{i}"].layers), None)
        if ngl > 0 and last is not None:
            last.output_bytes = m.output_bytes
        else:
            host.output_bytes = m.output_bytes
        fa = o.flash_attn == "on"
        for d in use.values():
            if d.layers or d is last:
                d.compute_bytes = 300 * MiB + o.ctx * (8 if fa else 32) * 1024 // 1024
        host.compute_bytes = 64 * MiB
        return Projection(
            devices=[*use.values(), host],
            context=o.ctx,
            n_parallel=1,
            cache_type_k=o.cache_type_k,
            cache_type_v=o.cache_type_v,
            flash_attn=fa,
            notes=[],
        )


# Shapes like the models, in round numbers (a 14B Q4_K_M is ~8.4 GiB).
DENSE_14B = Shape(n_layer=48, n_ctx_train=131072, dense_bytes=165 * MiB, kv_per_token=2 * 8 * 128)
MOE_30B = Shape(
    n_layer=48,
    n_ctx_train=262144,
    dense_bytes=25 * MiB,
    expert_bytes=330 * MiB,
    n_expert=128,
    kv_per_token=2 * 4 * 128,
)
SMALL = Shape(
    n_layer=24, n_ctx_train=2048, dense_bytes=10 * MiB, embd_bytes=100 * MiB, output_bytes=100 * MiB
)


def devices(spec: str, host: str = "64GiB") -> Devices:
    return detect_devices(f"{spec},host={host}" if spec != "none" else f"none,host={host}")


def make(model: Shape, spec: str, flags: list[str] = (), host: str = "64GiB", **kw):
    pairs = CATALOG.normalize(list(flags))
    est = StandIn()
    result = planner.plan(model, pairs, devices(spec, host), catalog=CATALOG, estimator=est, **kw)
    return result, pairs, est


def flag(plan, name: str) -> str | None:
    pairs = CATALOG.normalize(plan.flags)
    long = CATALOG.lookup(name).long
    values = [v for n, v in pairs if n == long]
    return values[-1] if values else None


def assert_within(plan, margin=1 * GiB, committed=None):
    """The property every plan that fits must have: nothing past free − margin."""
    committed = committed or {}
    for d in plan.devices:
        limit = d.device.free_bytes - margin - committed.get(d.device.id, 0)
        assert d.used_bytes <= limit, (d.device.id, d.used_bytes, limit, plan.notes)


# --------------------------------------------------------------------------- golden plans


def test_dense_14b_on_one_24gib_card_gets_everything():
    plan, _, _ = make(DENSE_14B, "24GiB")
    assert plan.fits
    assert_within(plan)
    assert flag(plan, "-ngl") == "49"
    assert flag(plan, "-ctk") is None and flag(plan, "-ts") is None
    assert plan.devices[0].layers == 48 and plan.devices[0].output_bytes > 0
    assert plan.context >= 4096


def test_dense_14b_on_12_plus_8_splits_by_usable_memory():
    plan, _, _ = make(DENSE_14B, "12GiB,8GiB")
    assert plan.fits, plan.notes
    assert_within(plan)
    ts = [float(x) for x in flag(plan, "-ts").split(",")]
    assert ts[0] > ts[1] > 0
    gpu0, gpu1, host = plan.devices
    assert gpu0.layers > gpu1.layers > 0 and host.layers == 0
    assert flag(plan, "--device") is None  # both cards are used


def test_fits_on_one_card_alone_leaves_the_others_out():
    plan, _, _ = make(SMALL, "4x8GiB")
    assert plan.fits
    assert flag(plan, "--device") == "CUDA0"
    assert [d.layers for d in plan.devices[:4]] == [24, 0, 0, 0]
    assert any("alone" in n for n in plan.notes)


def test_context_shrinks_to_fit_never_below_4096():
    plan, _, _ = make(DENSE_14B, "12GiB")  # 8.2 GiB weights + 11 GiB usable: little KV room
    assert plan.fits, plan.notes
    assert_within(plan)
    assert 4096 <= plan.context < DENSE_14B.n_ctx_train
    assert plan.context % 1024 == 0
    assert flag(plan, "-c") == str(plan.context)
    assert any(n.startswith(f"context 131072 → {plan.context} to fit gpu0") for n in plan.notes)
    assert flag(plan, "-ctk") is None  # f16 fits the floor: no quantization
    # One step more would not fit: the context is the largest, not merely one that fits.
    bigger, _, _ = make(DENSE_14B, "12GiB", ["-c", str(plan.context + 1024)])
    assert flag(bigger, "-ctk") == "q8_0" or not bigger.fits


def test_quantized_kv_with_flash_attention_when_that_makes_the_context_fit():
    plan, pairs, _ = make(DENSE_14B, "12GiB", ["-c", "32768"])
    assert plan.fits, plan.notes
    assert_within(plan)
    assert plan.context == 32768 and flag(plan, "-c") == "32768"
    assert plan.cache_type_k == plan.cache_type_v and plan.cache_type_k in ("q8_0", "q4_0")
    assert flag(plan, "-fa") == "on"
    assert any("KV cache" in n and "does not fit context 32768" in n for n in plan.notes)
    assert flag(plan, "-ngl") == "49"  # quantizing is cheaper than offloading layers


def test_q8_0_before_q4_0():
    # Pick a context where q8_0 fits and f16 does not.
    plan, _, _ = make(DENSE_14B, "12GiB", ["-c", "16384"])
    assert plan.cache_type_k == "q8_0"


def test_user_fixed_flags_are_kept_as_given():
    flags = ["-c", "65536", "-ctk", "f16", "-ctv", "f16", "-fa", "off", "-ngl", "30", "-ts", "1,1"]
    plan, pairs, _ = make(DENSE_14B, "12GiB,8GiB", flags)
    got = CATALOG.normalize(plan.flags)
    for pair in pairs:
        assert pair in got
    for name, value in (
        ("-c", "65536"),
        ("-ctk", "f16"),
        ("-ctv", "f16"),
        ("-fa", "off"),
        ("-ngl", "30"),
        ("-ts", "1,1"),
    ):
        assert flag(plan, name) == value
    assert plan.context == 65536
    assert len([n for n, _ in got if n == "--ctx-size"]) == 1


def test_user_device_choice_is_kept():
    plan, _, _ = make(DENSE_14B, "12GiB,8GiB", ["--device", "CUDA1"])
    assert flag(plan, "--device") == "CUDA1"
    assert plan.devices[0].used_bytes == 0 and plan.devices[1].layers > 0


def test_a_fixed_flash_attention_off_never_gets_a_quantized_v_cache():
    plan, _, _ = make(DENSE_14B, "12GiB", ["-c", "32768", "-fa", "off"])
    assert plan.cache_type_v == "f16"
    assert flag(plan, "-fa") == "off"


def test_moe_experts_leave_the_gpu_before_dense_layers():
    plan, _, _ = make(MOE_30B, "12GiB,8GiB")
    assert plan.fits, plan.notes
    assert_within(plan)
    n = int(flag(plan, "--n-cpu-moe"))
    assert 0 < n < 48
    assert flag(plan, "-ngl") == "49"  # every dense layer stays on a GPU
    assert plan.devices[2].layers == 0
    # and n is the fewest: one layer fewer of experts on the CPU does not fit
    fewer, _, _ = make(
        MOE_30B,
        "12GiB,8GiB",
        [
            "--n-cpu-moe",
            str(n - 1),
            "-ngl",
            "49",
            "-c",
            "4096",
            "-ctk",
            plan.cache_type_k,
            "-ctv",
            plan.cache_type_v,
        ],
    )
    assert not fewer.fits


def test_dense_layers_leave_when_all_experts_are_on_the_cpu_and_it_still_does_not_fit():
    plan, _, _ = make(MOE_30B, "6GiB")  # 5 GiB usable: 48 × 25 MiB dense fits, experts do not
    assert plan.fits, plan.notes
    assert_within(plan)
    assert flag(plan, "--n-cpu-moe") == "48" or int(flag(plan, "-ngl")) <= 49
    huge = Shape(
        n_layer=48, n_ctx_train=8192, dense_bytes=200 * MiB, expert_bytes=100 * MiB, n_expert=64
    )
    plan, _, _ = make(huge, "6GiB")
    assert plan.fits
    assert_within(plan)
    assert flag(plan, "--n-cpu-moe") == "48"
    assert 0 < int(flag(plan, "-ngl")) < 48


def test_a_card_too_small_moves_layers_to_the_cpu():
    plan, _, _ = make(DENSE_14B, "6GiB")
    assert plan.fits, plan.notes
    assert_within(plan)
    ngl = int(flag(plan, "-ngl"))
    assert 0 < ngl < 48
    assert plan.devices[1].layers == 48 - (ngl - 1)  # ngl counts the output layer
    assert any(f"{ngl} of 49 layers on the GPU" in n for n in plan.notes)


def test_no_gpu_puts_everything_on_the_host():
    plan, _, _ = make(DENSE_14B, "none")
    assert plan.fits
    assert [d.device.id for d in plan.devices] == ["host"]
    assert plan.devices[0].layers == 48
    assert flag(plan, "-ngl") is None and flag(plan, "--device") is None
    view = plan.view()
    assert view["devices"][0]["id"] == "host" and view["devices"][0]["kind"] == "host"


def test_nothing_fits_says_by_how_much():
    plan, _, _ = make(DENSE_14B, "none", host="6GiB")
    assert not plan.fits
    # 5 GiB usable, ~8.2 GiB of weights and more: the miss is reported in full.
    short = plan.short_bytes["host"]
    used = plan.devices[0].used_bytes
    assert short == used - (6 * GiB - 1 * GiB)
    assert plan.notes[0].startswith("does not fit by ")
    assert "on host" in plan.notes[0]


def test_committed_bytes_of_other_instances_count():
    alone, _, _ = make(DENSE_14B, "24GiB")
    shared, _, _ = make(DENSE_14B, "24GiB", committed={"gpu0": 10 * GiB})
    assert_within(shared, committed={"gpu0": 10 * GiB})
    assert shared.context < alone.context
    assert any("committed" in n for n in shared.notes)


def test_margin_is_honoured():
    plan, _, _ = make(DENSE_14B, "12GiB", margin=3 * GiB)
    assert_within(plan, margin=3 * GiB)
    via_flag, _, _ = make(DENSE_14B, "12GiB", ["--fit-target", "3072"])
    assert via_flag.context == plan.context


def test_fit_ctx_lowers_the_floor():
    tight, _, _ = make(DENSE_14B, "10GiB")
    low, _, _ = make(DENSE_14B, "10GiB", ["--fit-ctx", "1024"])
    assert tight.context >= 4096
    assert low.context >= 1024


def test_training_context_below_4096_is_the_ceiling():
    plan, _, _ = make(SMALL, "8GiB")
    assert plan.context == 2048


def test_a_gpu_without_room_is_not_used():
    devs = Devices(gpus=parse_spec("12GiB,1GiB")[0], host=devices("none").host)
    plan = planner.plan(DENSE_14B, [], devs, catalog=CATALOG, estimator=StandIn())
    assert flag(plan, "--device") == "CUDA0"
    assert any(n.startswith("gpu1:") and "not used" in n for n in plan.notes)


def test_deterministic_and_bounded():
    a, _, est = make(MOE_30B, "12GiB,8GiB")
    b, _, _ = make(MOE_30B, "12GiB,8GiB")
    assert a.view() == b.view()
    assert est.calls == a.projections <= 300


@pytest.mark.parametrize("model", [DENSE_14B, MOE_30B, SMALL], ids=["14b", "moe", "small"])
@pytest.mark.parametrize("spec", ["12GiB,8GiB", "24GiB", "4x8GiB", "6GiB", "none"])
def test_golden_properties(model, spec):
    plan, _, est = make(model, spec)
    assert plan.fits, plan.notes
    assert_within(plan)
    assert plan.context >= min(4096, model.n_ctx_train)
    assert sum(d.layers for d in plan.devices) == model.n_layer
    assert est.calls <= 300
    view = plan.view()
    assert set(view) == {
        "fits",
        "flags",
        "context",
        "cache_type_k",
        "cache_type_v",
        "devices",
        "notes",
    }
    for d in view["devices"]:
        assert set(d) == {
            "id",
            "name",
            "kind",
            "total_bytes",
            "free_bytes",
            "layers",
            "weights_bytes",
            "kv_bytes",
            "compute_bytes",
            "used_bytes",
        }
    CATALOG.normalize(plan.flags)  # valid for the build


def test_no_catalog_uses_todays_names():
    plan = planner.plan(DENSE_14B, [], devices("12GiB,8GiB"), estimator=StandIn())
    assert "--gpu-layers" in plan.flags and "--tensor-split" in plan.flags


def test_the_stand_in_is_the_estimators_interface():
    """Keeps the stand-in honest: once corral.fit.estimate exists, the names match."""
    est = pytest.importorskip("corral.fit.estimate")
    for name in ("Options", "DeviceUse", "Projection", "load_model", "project"):
        assert hasattr(est, name)
    fields = {f for f in est.Options.__dataclass_fields__}
    assert set(Options.__dataclass_fields__) <= fields


# --------------------------------------------------------------------------- the real one


@pytest.fixture(scope="module")
def real_shapes(tmp_path_factory):
    """The real estimator on GGUF headers (dense 14B, 30B MoE with 128 experts)."""
    pytest.importorskip("gguf")
    from corral.fit import estimate
    from tests.integration.test_fit_api import write_header

    d = tmp_path_factory.mktemp("shapes")
    dense = write_header(d / "dense.gguf")
    moe = write_header(
        d / "moe.gguf", n_embd=2048, n_head=32, n_kv=4, n_ff=6144, ctx=262144, n_expert=128
    )
    return {"dense": estimate.load_model(str(dense)), "moe": estimate.load_model(str(moe))}


@pytest.mark.parametrize("name", ["dense", "moe"])
@pytest.mark.parametrize("spec", ["12GiB,8GiB", "24GiB", "4x8GiB", "6GiB", "none"])
def test_golden_properties_with_the_real_estimator(real_shapes, name, spec):
    from corral.fit import estimate

    model = real_shapes[name]
    plan = planner.plan(model, [], devices(spec), catalog=CATALOG, estimator=estimate)
    assert plan.fits, plan.notes
    assert_within(plan)
    assert plan.context >= 4096
    assert sum(d.layers for d in plan.devices) == model.n_layer
    assert plan.projections <= 300
    if name == "moe" and spec == "6GiB":
        assert flag(plan, "--n-cpu-moe") is not None
        assert flag(plan, "-ngl") == "49"  # experts leave before any dense layer
    CATALOG.normalize(plan.flags)


def test_real_estimator_6gib_dense_and_the_shortfall(real_shapes):
    from corral.fit import estimate

    plan = planner.plan(
        real_shapes["dense"], [], devices("6GiB"), catalog=CATALOG, estimator=estimate
    )
    assert plan.fits and 0 < int(flag(plan, "-ngl")) < 49
    miss = planner.plan(
        real_shapes["dense"], [], devices("none", host="4GiB"), catalog=CATALOG, estimator=estimate
    )
    assert not miss.fits and miss.short_bytes["host"] > 0
    assert miss.notes[0].startswith("does not fit by ")


@pytest.mark.parametrize("spec", ["12GiB,8GiB", "24GiB", "4x8GiB", "6GiB", "none"])
@pytest.mark.parametrize(
    "shape", ["dense_14b", "moe_30b", "gemma3_4b", "deepseek_mla", "mamba2", "hybrid_jamba"]
)
def test_golden_properties_on_the_estimators_shapes(tmp_path, shape, spec):
    """The estimator engineer's shapes (tests/fakes/gguf_shapes.py), the real estimator."""
    shapes = pytest.importorskip("tests.fakes.gguf_shapes")
    from corral.fit import estimate

    model = estimate.load_model(str(shapes.SHAPES[shape](tmp_path / f"{shape}.gguf")))
    plan = planner.plan(model, [], devices(spec), catalog=CATALOG, estimator=estimate)
    assert plan.fits, plan.notes
    assert_within(plan)
    assert plan.context >= min(4096, model.n_ctx_train or 4096)
    assert plan.projections <= 300
    if model.n_expert and flag(plan, "--n-cpu-moe") is not None:
        assert flag(plan, "-ngl") == str(model.n_layer + 1)  # experts before dense layers
    CATALOG.normalize(plan.flags)


# --------------------------------------------------------------------------- RPC devices


def rpc_device(endpoint: str, index: int, free: int, device: int = 0):
    from corral.fit.devices import Device

    return Device(
        id=f"RPC{device}[{endpoint}]",
        name=f"rpc-server {endpoint}",
        kind="rpc",
        total_bytes=free,
        free_bytes=free,
        vendor="rpc",
        index=index,
    )


def with_rpc(spec: str, *free: int) -> Devices:
    devs = devices(spec)
    devs.rpc = [rpc_device(f"10.0.0.{i + 2}:50052", i, f) for i, f in enumerate(free)]
    return devs


def test_rpc_devices_come_first_in_the_split_as_llama_cpp_orders_them():
    """llama.cpp puts the RPC devices before the local GPUs: -ts counts in that order,
    and the output layer goes with the last device (the local GPU)."""
    devs = with_rpc("8GiB", 6 * GiB, 4 * GiB)
    plan = planner.plan(DENSE_14B, [], devs, catalog=CATALOG, estimator=StandIn())
    assert plan.fits, plan.notes
    assert_within(plan)
    ids = [d.device.id for d in plan.devices]
    assert ids == ["RPC0[10.0.0.2:50052]", "RPC0[10.0.0.3:50052]", "gpu0", "host"]
    assert flag(plan, "-ts") == "5,3,7"  # usable GiB: free − 1 GiB margin, same order
    rpc_a, rpc_b, gpu, host = plan.devices
    assert rpc_a.layers > rpc_b.layers > 0 and gpu.layers > 0 and host.layers == 0
    assert gpu.output_bytes > 0 and rpc_a.output_bytes == rpc_b.output_bytes == 0
    assert flag(plan, "-ngl") == "49" and flag(plan, "--device") is None
    assert plan.view()["devices"][0]["kind"] == "rpc"


def test_rpc_devices_named_by_the_launch_are_all_used_even_when_one_would_do():
    plan = planner.plan(SMALL, [], with_rpc("none", 8 * GiB, 8 * GiB), estimator=StandIn())
    assert plan.fits
    a, b, host = (d.layers for d in plan.devices)
    assert a > 0 and b > 0 and a + b == 24 and host == 0
    assert flag(plan, "-ts") == "7,7" and flag(plan, "--device") is None
    assert not any("alone" in n for n in plan.notes)


def test_an_rpc_device_without_room_is_left_out_by_llama_cpps_name():
    devs = with_rpc("12GiB", 1 * GiB, 6 * GiB)
    plan = planner.plan(DENSE_14B, [], devs, catalog=CATALOG, estimator=StandIn())
    assert flag(plan, "--device") == "RPC1,CUDA0"  # RPCn counts across servers
    assert plan.env == {}  # no visible-devices env var can say it
    assert plan.devices[0].layers == 0 and plan.devices[1].layers > 0
    assert any(n.startswith("RPC0[10.0.0.2:50052]:") and "not used" in n for n in plan.notes)


def test_a_users_device_choice_may_name_rpc_devices():
    devs = with_rpc("8GiB,8GiB", 8 * GiB)
    plan = planner.plan(
        DENSE_14B, CATALOG.normalize(["--device", "RPC0,CUDA1"]), devs, catalog=CATALOG,
        estimator=StandIn(),
    )  # fmt: skip
    assert [d.device.id for d in plan.devices if d.layers] == ["RPC0[10.0.0.2:50052]", "gpu1"]


def test_others_commitments_on_an_rpc_device_count_in_full():
    from types import SimpleNamespace

    from corral.fit import placement

    devs = with_rpc("none", 8 * GiB)
    rec = SimpleNamespace(
        desired="running",
        state="ready",
        pid=1,
        placement={"devices": [{**devs.rpc[0].view(), "used_bytes": 3 * GiB, "layers": 9}]},
    )
    assert placement.committed([rec], devs) == {devs.rpc[0].id: 3 * GiB}
    assert placement.summary({**rec.placement, "context": 4096}).startswith(
        "RPC0[10.0.0.2:50052] 9 layers 3.0 GiB"
    )


def test_fit_asks_the_rpc_servers_of_the_flags(tmp_path):
    """planner.fit (corral fit): the --rpc servers asked over the protocol (a fake one
    here), their devices in the plan; one that does not answer is an UpstreamError."""
    pytest.importorskip("gguf")
    from corral.errors import UpstreamError
    from tests.fakes.fake_rpc_protocol import FakeRpcProtocolServer
    from tests.integration.test_fit_api import write_header

    model = write_header(tmp_path / "m.gguf", n_layer=8, n_embd=512, n_head=8, n_kv=8, n_ff=1024)
    with FakeRpcProtocolServer(devices=[(6 * GiB, 8 * GiB)]) as a, FakeRpcProtocolServer() as b:
        pairs = CATALOG.normalize(["--rpc", f"{a.endpoint},{b.endpoint}", "-c", "4096"])
        plan, devs = planner.fit(str(model), pairs, catalog=CATALOG, devices_spec="none,host=8GiB")
    assert [d.id for d in devs.all] == [f"RPC0[{a.endpoint}]", f"RPC0[{b.endpoint}]", "host"]
    assert devs.rpc[0].free_bytes == 6 * GiB
    assert plan.fits and flag(plan, "-ts") == "5,7" and flag(plan, "-ngl") == "9"
    assert all(d.layers for d in plan.devices[:2])
    with FakeRpcProtocolServer("silent") as silent:
        pairs = CATALOG.normalize(["--rpc", silent.endpoint])

        def slow(endpoint, timeout):
            from corral.fit.rpc_devices import ask

            return ask(endpoint, 0.3)

        with pytest.raises(UpstreamError, match="did not answer.*not planned"):
            planner.fit(str(model), pairs, catalog=CATALOG, devices_spec="none", rpc_asker=slow)


def test_llama_cpps_rpc_buffer_names_map_to_the_plans_ids():
    from corral.fit.breakdown import device_of, parse_log

    assert device_of("RPC0[10.0.0.2:50052]") == "RPC0[10.0.0.2:50052]"
    assert device_of("RPC3 (10.0.0.2:50052)") == "RPC[10.0.0.2:50052]"  # a table row
    assert device_of("RPC_Host") == "host" and device_of("CUDA1") == "gpu1"
    log = (
        "load_tensors: RPC0[127.0.0.1:50161] model buffer size =    35.82 MiB\n"
        "llama_kv_cache: RPC0[127.0.0.1:50162] KV buffer size =     8.00 MiB\n"
        "sched_reserve:        CPU compute buffer size =    38.61 MiB\n"
    )
    per = parse_log(log).per_device()
    assert per["RPC0[127.0.0.1:50161]"]["model"] == round(35.82 * MiB)
    assert per["RPC0[127.0.0.1:50162]"]["kv"] == 8 * MiB and "host" in per
