"""corral.fit: the memory estimator on synthetic GGUF headers in real models' shapes.

Golden numbers are derived by hand from llama.cpp b11434's allocation code (the file
and function are named at each test); the real llama-server checks the same estimator
in tests/real/test_fit_accuracy.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf as gguf_py
import pytest

from corral.builds.catalog import FlagCatalog
from corral.errors import FlagValueError
from corral.fit import breakdown
from corral.fit.estimate import Options, load_model, project
from corral.fit.ggml_types import GGML_TYPES, by_name, row_bytes, tensor_bytes
from tests.fakes import gguf_shapes

MiB = 1024 * 1024
NO_SIMD = frozenset()  # no repacking: numbers independent of the test machine's CPU


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("shapes")
    return {name: build(d / f"{name}.gguf") for name, build in gguf_shapes.SHAPES.items()}


def opts(**kw) -> Options:
    kw.setdefault("cpu_flags", NO_SIMD)
    return Options(**kw)


# -- ggml types -------------------------------------------------------------------------


def test_block_sizes_match_gguf_py_except_q8_1():
    # gguf-py lists Q8_1 as 40 bytes; ggml-common.h static_asserts 2*sizeof(half) + 32 = 36
    for qtype, (block, size) in gguf_py.GGML_QUANT_SIZES.items():
        if qtype.name == "Q8_1":
            assert GGML_TYPES[qtype.value].bytes == 36
            continue
        t = GGML_TYPES[qtype.value]
        assert (t.block, t.bytes) == (block, size), qtype.name


def test_row_and_tensor_bytes_of_kquants_and_mxfp4():
    assert row_bytes(by_name("q4_K").id, 5120) == 20 * 144
    assert tensor_bytes(by_name("mxfp4").id, (2880, 2880, 32)) == 90 * 17 * 2880 * 32
    assert tensor_bytes(by_name("bf16").id, (7, 3)) == 42


def test_unknown_type_is_refused():
    with pytest.raises(KeyError):
        row_bytes(4, 32)  # Q4_2: removed from ggml


# -- tensor table -> shape ---------------------------------------------------------------


def test_sparse_shapes_cost_no_disk(shapes):
    for path in shapes.values():
        assert os.stat(path).st_blocks * 512 < 4 * MiB < path.stat().st_size


def test_weights_are_the_tensor_table_sum(shapes):
    from corral.gguf import read_metadata

    info = read_metadata(shapes["dense_14b"])
    shape = load_model(str(shapes["dense_14b"]))
    assert shape.weights_bytes == sum(tensor_bytes(t.type, t.dims) for t in info.tensors)
    assert shape.n_layer == 48 and shape.n_vocab == 152064
    assert shape.tok_embd_bytes == 152064 * 20 * 144


def test_load_model_is_cached_until_the_file_changes(shapes, tmp_path):
    path = gguf_shapes.mamba2(tmp_path / "m.gguf")
    first = load_model(str(path))
    assert load_model(str(path)) is first
    gguf_shapes.hybrid_jamba(path)  # rewritten: new size and mtime
    assert load_model(str(path)).architecture == "jamba"


# -- context, slots, KV cache --------------------------------------------------------------


def test_dense_kv_f16_and_q8_0(shapes):
    shape = load_model(str(shapes["dense_14b"]))
    # llama-kv-cache.cpp: K and V [n_embd_head * n_head_kv, cells, n_stream] per layer
    p = project(shape, opts(ctx=8192, n_parallel=1), 0)
    assert p.host.kv_bytes == 48 * 8192 * (1024 * 2) * 2
    q8 = project(
        shape,
        opts(ctx=8192, n_parallel=1, cache_type_k="q8_0", cache_type_v="q8_0", flash_attn="on"),
        0,
    )
    assert q8.host.kv_bytes == 48 * 8192 * (32 * 34) * 2


def test_context_padding_and_streams(shapes):
    shape = load_model(str(shapes["dense_14b"]))
    # llama-context.cpp: n_ctx = pad256; non-unified: n_ctx_seq = pad256(n_ctx / n_seq)
    p = project(shape, opts(ctx=3000, n_parallel=3), 0)
    assert (p.context, p.n_ctx_seq, p.kv_unified) == (3072, 1024, False)
    assert p.host.kv_bytes == 48 * 1024 * 3 * 4096
    p = project(shape, opts(ctx=2000, n_parallel=4), 0)
    assert (p.context, p.n_ctx_seq) == (2048, 512)


def test_auto_parallel_is_four_unified_slots(shapes):
    shape = load_model(str(shapes["dense_14b"]))
    # tools/server/server.cpp: n_parallel < 0 -> 4 slots, kv_unified = true
    p = project(shape, opts(ctx=8192), 0)
    assert (p.n_parallel, p.kv_unified, p.n_ctx_seq) == (4, True, 8192)
    assert p.host.output_bytes == 152064 * 4 * 4  # logits for n_seq outputs


def test_zero_context_is_the_training_context(shapes):
    shape = load_model(str(shapes["dense_14b"]))
    assert project(shape, opts(ctx=0, n_parallel=1), 0).context == 32768


def test_swa_cache_size_and_swa_full(shapes):
    shape = load_model(str(shapes["gemma3_4b"]))
    # llama-kv-cache-iswa.cpp: pad256(min(cells, n_swa * n_seq(unified) + n_ubatch))
    p = project(shape, opts(ctx=32768), 0)
    assert p.swa_cells == 1024 * 4 + 512
    n_full = sum(1 for la in shape.layers if not la.swa)
    assert n_full == 5  # layers 5, 11, 17, 23, 29: gemma 3's pattern of 6
    row = 4 * 256 * 2 * 2  # K + V, f16
    assert p.host.kv_bytes == (n_full * 32768 + (34 - n_full) * 4608) * row
    full = project(shape, opts(ctx=32768, swa_full=True), 0)
    assert full.host.kv_bytes == 34 * 32768 * row
    # not unified: the window per stream, not times the slots
    assert project(shape, opts(ctx=32768, n_parallel=4), 0).swa_cells == 1024 + 512


def test_mla_caches_k_only(shapes):
    shape = load_model(str(shapes["deepseek_mla"]))
    # llama-kv-cache.cpp: is_mla -> has_v = false; K is kv_lora_rank + rope wide
    p = project(shape, opts(ctx=4096, n_parallel=1), 0)
    assert p.host.kv_bytes == 27 * 4096 * 576 * 2


def test_recurrent_state_and_hybrid(shapes):
    mamba = load_model(str(shapes["mamba2"]))
    # llama-hparams.cpp n_embd_r/n_embd_s; llama-memory-recurrent.cpp: f32, max(1, n_seq) cells
    width = 3 * (5120 + 2 * 1 * 128) + 128 * 5120
    p = project(mamba, opts(ctx=65536, n_parallel=2), 0)
    assert p.host.kv_bytes == 64 * width * 4 * 2
    jamba = load_model(str(shapes["hybrid_jamba"]))
    p = project(jamba, opts(ctx=8192, n_parallel=1), 0)
    j_width = 3 * (4096 + 2 * 0 * 16) + 16 * 4096
    assert p.host.kv_bytes == 14 * j_width * 4 + 2 * 8192 * 512 * 2 * 2


def test_quantized_v_without_flash_attention_is_refused(shapes):
    shape = load_model(str(shapes["dense_14b"]))
    with pytest.raises(FlagValueError, match="flash attention"):
        project(shape, opts(cache_type_v="q4_0", flash_attn="off"), 0)
    assert project(shape, opts(cache_type_v="q4_0"), 0).flash_attn  # auto -> on
    with pytest.raises(FlagValueError, match="allowed values"):
        project(shape, opts(cache_type_k="q3_K"), 0)


def test_compute_grows_with_context_only_without_flash_attention(shapes):
    shape = load_model(str(shapes["dense_14b"]))
    on = [
        project(shape, opts(ctx=c, n_parallel=1, flash_attn="on"), 0).host.compute_bytes
        for c in (4096, 8192)
    ]
    off = [
        project(shape, opts(ctx=c, n_parallel=1, flash_attn="off"), 0).host.compute_bytes
        for c in (4096, 8192)
    ]
    # FA: the f16 mask grows by 4096 * 512 * 2; without: the f32 mask and 40 heads of scores
    assert on[1] - on[0] == 4096 * 512 * 2
    assert off[1] - off[0] == 4096 * 512 * 4 + 4096 * 512 * 40 * 4


# -- placement -------------------------------------------------------------------------


def test_tensor_split_places_layers_and_output_on_the_last_device(shapes):
    shape = load_model(str(shapes["dense_14b"]))
    # llama-model.cpp get_layer_buft_list: upper_bound(cum split, il / 49)
    p = project(shape, opts(ctx=4096, n_parallel=1, tensor_split=[3, 1]), 2)
    gpu0, gpu1, host = p.devices
    assert (gpu0.layers, gpu1.layers, host.layers) == (37, 11, 0)
    layer = shape.layers[0].weights_bytes
    assert gpu0.weights_bytes == 37 * layer
    assert gpu1.weights_bytes == 11 * layer + shape.output_bytes
    assert host.weights_bytes == shape.input_bytes  # the input embedding stays home
    assert gpu0.kv_bytes == 37 * 4096 * 4096 and gpu1.kv_bytes == 11 * 4096 * 4096
    assert host.kv_bytes == 0 and gpu0.compute_bytes > host.compute_bytes > 0


def test_partial_offload_keeps_the_first_layers_on_the_host(shapes):
    shape = load_model(str(shapes["dense_14b"]))
    # -ngl 10 of 49 (48 + output): i_gpu_start = 39 -> layers 39..47 and the output
    p = project(shape, opts(ctx=4096, n_parallel=1, n_gpu_layers=10, mmap=False), 1)
    gpu, host = p.devices
    assert (gpu.layers, host.layers) == (9, 39)
    assert gpu.weights_bytes == 9 * shape.layers[0].weights_bytes + shape.output_bytes
    assert host.weights_bytes == shape.input_bytes + 39 * shape.layers[0].weights_bytes
    assert project(shape, opts(n_gpu_layers=0), 1).devices[0].used_bytes == 0


def test_no_kv_offload_puts_the_cache_on_the_host(shapes):
    shape = load_model(str(shapes["dense_14b"]))
    p = project(shape, opts(ctx=4096, n_parallel=1, no_kv_offload=True), 1)
    assert p.devices[0].kv_bytes == 0 and p.host.kv_bytes == 48 * 4096 * 4096


def test_n_cpu_moe_keeps_experts_of_the_first_layers_on_the_host(shapes):
    shape = load_model(str(shapes["moe_30b"]))
    base = project(shape, opts(ctx=4096), 1)
    moe = project(shape, opts(ctx=4096, n_cpu_moe=10), 1)
    experts = sum(la.expert_bytes for la in shape.layers[:10])
    assert experts > 0
    assert base.devices[0].weights_bytes - moe.devices[0].weights_bytes == experts
    assert moe.host.weights_bytes - base.host.weights_bytes == experts
    assert moe.devices[0].layers == 48  # the layer itself (attention, KV) stays on the GPU


def test_tied_embeddings_are_copied_to_the_output_device(shapes):
    shape = load_model(str(shapes["gemma3_4b"]))
    assert shape.tied_embeddings
    p = project(shape, opts(ctx=4096), 1)
    layers = sum(la.weights_bytes for la in shape.layers)
    assert p.devices[0].weights_bytes == layers + shape.output_bytes + shape.tok_embd_bytes
    assert p.host.weights_bytes == shape.input_bytes


def test_repack_counts_a_second_copy_on_the_host(shapes):
    shape = load_model(str(shapes["dense_14b"]))
    plain = project(shape, opts(ctx=4096), 0).host
    avx2 = project(shape, opts(ctx=4096, cpu_flags=frozenset({"avx2"})), 0).host
    # q4_K matrices with rows % 8 == 0 (ggml-cpu/repack.cpp); token_embd is not a matmul
    q4k = sum(la.repackable.get(12, 0) for la in shape.layers)
    assert q4k > 0 and avx2.repack_bytes == q4k
    assert avx2.weights_bytes - plain.weights_bytes == q4k
    assert (
        project(
            shape, opts(ctx=4096, cpu_flags=frozenset({"avx2"}), repack=False), 0
        ).host.repack_bytes
        == 0
    )


def test_mmap_counts_the_mapped_span(shapes):
    shape = load_model(str(shapes["dense_14b"]))
    # CPU_Mapped spans the file range of the host tensors, padding included
    mapped = project(shape, opts(ctx=4096), 0).host.weights_bytes
    loaded = project(shape, opts(ctx=4096, mmap=False), 0).host.weights_bytes
    assert loaded == shape.weights_bytes
    assert 0 <= mapped - loaded < 32 * len(shape.layers) * 20


def test_draft_model_adds_its_own_projection(shapes):
    main = str(shapes["dense_14b"])
    draft = str(shapes["mamba2"])
    alone = project(load_model(main), opts(ctx=4096), 1)
    both = project(load_model(main, draft=draft), opts(ctx=4096, draft=draft), 1)
    extra = project(load_model(draft), opts(ctx=4096), 1)
    assert both.devices[0].used_bytes == alone.devices[0].used_bytes + extra.devices[0].used_bytes
    missing = project(load_model(main), opts(ctx=4096, draft=draft), 1)
    assert any("draft" in n for n in missing.notes)


# -- options from flags --------------------------------------------------------------------


HELP = Path(__file__).resolve().parent.parent / "fakes" / "llama-server-help.txt"


def test_options_from_pairs():
    o = Options.from_pairs(
        [
            ("--ctx-size", "16384"),
            ("--parallel", "2"),
            ("--kv-unified", None),
            ("--cache-type-k", "q8_0"),
            ("--cache-type-v", "Q8_0"),
            ("--flash-attn", "on"),
            ("--n-gpu-layers", "all"),
            ("--tensor-split", "3,1"),
            ("--n-cpu-moe", "4"),
            ("--swa-full", None),
            ("--no-kv-offload", None),
            ("--lora", "a.gguf,b.gguf"),
            ("--model-draft", "d.gguf"),
            ("--no-mmap", None),
            ("--threads", "8"),
        ]
    )
    assert (o.ctx, o.n_parallel, o.kv_unified) == (16384, 2, True)
    assert (o.cache_type_k, o.cache_type_v, o.flash_attn) == ("q8_0", "q8_0", "on")
    assert (o.n_gpu_layers, o.tensor_split, o.n_cpu_moe) == (-1, [3.0, 1.0], 4)
    assert o.swa_full and o.no_kv_offload and not o.mmap
    assert (o.loras, o.draft) == (["a.gguf", "b.gguf"], "d.gguf")
    with pytest.raises(FlagValueError):
        Options.from_pairs([("--ctx-size", "big")])


def test_options_defaults_come_from_the_catalog():
    catalog = FlagCatalog.parse(HELP.read_text())
    o = Options.from_pairs(catalog.normalize(["-c", "4096"]), catalog)
    assert (o.ctx, o.n_parallel, o.n_batch, o.n_ubatch) == (4096, -1, 2048, 512)
    assert o.flash_attn == "auto"
    cpu_moe = Options.from_pairs(catalog.normalize(["--cpu-moe"]), catalog)
    assert cpu_moe.n_cpu_moe >= 1 << 20


# -- breakdown -----------------------------------------------------------------------------

LOG = """\
0.00.578.643 I common_memory_breakdown_print: | memory breakdown [MiB] | total   free    self   model   context   compute    unaccounted |
0.00.578.643 I common_memory_breakdown_print: |   - Host               |                  296 =   222 +      49 +      24                |
0.00.578.644 I common_memory_breakdown_print: |   - CPU_REPACK         |                   12 =    12 +       0 +       0                |
0.01.083.483 I load_tensors:   CPU_Mapped model buffer size =   235.16 MiB
0.01.083.499 I load_tensors:   CPU_REPACK model buffer size =    12.66 MiB
0.01.098.759 I llama_context:        CPU  output buffer size =     4.00 MiB
0.01.098.839 I llama_kv_cache:        CPU KV buffer size =    12.00 MiB
0.01.104.512 I llama_kv_cache:        CPU KV buffer size =    37.50 MiB
0.01.124.182 I sched_reserve:        CPU compute buffer size =    24.78 MiB
0.06.006.225 I common_memory_breakdown_print: | memory breakdown [MiB] | total   free    self   model   context   compute    unaccounted |
0.06.006.226 I common_memory_breakdown_print: |   - CUDA0 (RTX 4090)   | 24080 = 20000 + ( 3000 =  2800 +     150 +      50) +       1080 |
0.06.006.267 I common_memory_breakdown_print: |   - Host               |                  309 =   235 +      49 +      24                |
0.06.006.283 I common_memory_breakdown_print: |   - CPU_REPACK         |                   12 =    12 +       0 +       0                |
"""


def test_breakdown_parses_buffers_and_both_tables():
    r = breakdown.parse_log(LOG)
    assert [(b.kind, b.buffer, b.device) for b in r.buffers][:2] == [
        ("model", "CPU_Mapped", "host"),
        ("model", "CPU_REPACK", "host"),
    ]
    assert r.buffer_bytes("kv") == round(49.5 * MiB)
    assert r.per_device()["host"]["compute"] == round(24.78 * MiB)
    assert [row.self_mib for row in r.projected] == [296, 12]
    gpu, host, repack = r.real
    assert (gpu.device, gpu.total_mib, gpu.free_mib, gpu.self_mib, gpu.unaccounted_mib) == (
        "gpu0",
        24080,
        20000,
        3000,
        1080,
    )
    assert (host.model_mib, repack.name) == (235, "CPU_REPACK")
    assert r.real_self_bytes("host") == 321 * MiB


def test_breakdown_without_an_exit_table_has_no_real_numbers():
    r = breakdown.parse_log(LOG.split("0.06.006.225")[0])
    assert r.projected is not None and r.real is None and r.real_self_bytes() is None


@pytest.mark.parametrize(
    "name, device",
    [
        ("CUDA1", "gpu1"),
        ("ROCm0", "gpu0"),
        ("Vulkan2", "gpu2"),
        ("Metal", "gpu0"),
        ("CUDA_Host", "host"),
        ("CPU", "host"),
        ("CUDA0 (RTX 4090)", "gpu0"),
    ],
)
def test_buffer_names_map_to_devices(name, device):
    assert breakdown.device_of(name) == device


# -- several devices: graph inputs and pipeline parallelism ----------------------------


def _masks(p, shape) -> int:
    """The KQ masks of one graph (f16 with flash attention): full and SWA caches."""
    has_full = any(la.k_width and not la.swa for la in shape.layers)
    has_swa = any(la.k_width and la.swa for la in shape.layers)
    return ((p.kv_cells if has_full else 0) + (p.swa_cells if has_swa else 0)) * p.n_ubatch * 2


def test_offloaded_graph_inputs_live_on_the_host(shapes):
    """The scheduler keeps graph inputs on the CPU backend (ggml-backend.cpp, "1.inp"):
    with every layer on one device the host holds the masks and the input embeddings;
    with the output layer at home it computes the whole graph (measured on b11434)."""
    from corral.fit import estimate

    shape = load_model(str(shapes["gemma3_4b"]))
    p = project(shape, opts(ctx=8192, flash_attn="on"), 1)
    assert p.host.compute_bytes == _masks(p, shape) + p.n_ubatch * 4 * shape.n_embd * 4
    on_cpu = project(shape, opts(ctx=8192, flash_attn="on"), 0).host.compute_bytes
    output_home = project(shape, opts(ctx=8192, flash_attn="on", n_gpu_layers=shape.n_layer), 1)
    assert output_home.host.compute_bytes == on_cpu
    assert estimate.SCHED_COPIES == 4


def test_pipeline_parallelism_keeps_four_copies_of_the_inputs(shapes):
    """llama_context turns pipeline parallelism on with >1 device and every layer
    offloaded: each backend then holds 4 copies of the masks (3 more than one device),
    plus the fitted per-token part; the first device more than the others."""
    from corral.fit.estimate import PIPELINE_TOKEN_EXTRA

    shape = load_model(str(shapes["gemma3_4b"]))
    base = opts(ctx=8192, flash_attn="on", tensor_split=[1, 1, 1])
    three = project(shape, base, 3)
    one = project(shape, opts(ctx=8192, flash_attn="on"), 1)
    masks, per_token = _masks(one, shape), shape.n_embd * 4 * one.n_ubatch
    first, others, home = PIPELINE_TOKEN_EXTRA
    a, b, c, host = three.devices
    assert a.compute_bytes == one.devices[0].compute_bytes + 3 * masks + int(first * per_token)
    assert b.compute_bytes == c.compute_bytes
    assert b.compute_bytes == one.devices[0].compute_bytes + 3 * masks + int(others * per_token)
    assert host.compute_bytes == one.host.compute_bytes + 3 * masks + int(home * per_token)
    # no pipeline: the output layer at home, -sm row, -ot, --n-cpu-moe, --no-kv-offload
    for off in (
        {"n_gpu_layers": shape.n_layer},
        {"split_mode": "row"},
        {"tensor_overrides": True},
        {"n_cpu_moe": 1},
    ):
        p = project(shape, opts(ctx=8192, flash_attn="on", tensor_split=[1, 1], **off), 2)
        assert p.devices[0].compute_bytes <= one.devices[0].compute_bytes, off


def test_split_mode_and_overrides_are_read_from_the_flags():
    o = Options.from_pairs([("--split-mode", "row"), ("--override-tensor", "exps=CPU")])
    assert (o.split_mode, o.tensor_overrides) == ("row", True)
