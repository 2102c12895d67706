"""Memory estimate per device for one llama-server launch, from the GGUF tensor table.

``load_model(path)`` reads a GGUF header once (cached by path, mtime and size) into a
:class:`ModelShape`: every tensor's bytes and the layer it belongs to, and the
hyper-parameters llama.cpp sizes its buffers from. ``project(shape, options, gpus)`` is
pure arithmetic on it (no I/O) and returns the bytes each device will hold: weights, KV
cache (and recurrent state), compute buffer and output buffer. What llama.cpp b11434
allocates, and where this module follows it:

* **Context** (``src/llama-context.cpp``, constructor): ``n_ctx`` 0 means the training
  context; it is padded to a multiple of 256. With a unified KV cache every sequence
  shares one stream of ``n_ctx`` cells; otherwise each of the ``n_seq`` streams gets
  ``pad256(n_ctx / n_seq)`` cells and ``n_ctx`` becomes that times ``n_seq``.
  ``n_batch = min(n_ctx, -b)``, ``n_ubatch = min(n_batch, -ub)``.
* **Slots** (``tools/server/server.cpp``): ``-np`` auto (-1) is 4 slots with a unified
  cache; an explicit ``-np`` keeps ``--kv-unified`` at its default (off).
* **KV cache** (``src/llama-kv-cache.cpp``): per layer with KV, K is
  ``[n_embd_head_k * n_head_kv(il), cells, n_stream]`` of ``--cache-type-k`` and V the
  same with ``value_length`` and ``--cache-type-v``; without flash attention V is stored
  transposed and padded to the largest V width when layers differ. MLA models
  (DeepSeek 2/3: ``key_length_mla`` present) cache only K (``kv_lora_rank + rope``
  wide, one head); V is a view of it.
* **Sliding-window layers** (``src/llama-kv-cache-iswa.cpp``): the SWA layers get their
  own cache of ``pad256(min(cells, n_swa * (n_seq if unified else 1) + n_ubatch))``
  cells, or the full size with ``--swa-full``. The layer pattern comes from the GGUF
  (``sliding_window_pattern``) or the architecture's default (gemma 2: every 2nd layer
  full, gemma 3: every 6th, cohere 2: every 4th; ``src/models/*.cpp``).
* **Recurrent state** (``src/llama-memory-recurrent.cpp``): per recurrent layer
  ``(n_embd_r + n_embd_s) * 4`` bytes (f32) for each of ``max(1, n_seq)`` cells, with
  ``n_embd_r = (d_conv - 1) * (d_inner + 2 * n_group * d_state)`` and
  ``n_embd_s = d_state * d_inner`` (``src/llama-hparams.cpp``).
* **Output buffer** (``llama_context::output_reserve``): ``n_vocab * n_seq`` floats of
  logits (plus ``n_embd * n_seq`` with ``--embeddings``), in host memory.
* **Compute buffer** (``sched_reserve``): llama.cpp sizes it by allocating the
  worst-case graph (``n_ubatch`` tokens). Its inputs are modelled exactly: the KQ mask
  of each cache, ``n_kv * n_ubatch`` of f16 with flash attention, f32 without. The
  rest is a fitted model of ggml-alloc's peak, checked against the real server on
  gemma 3 (``tests/real/test_fit_accuracy.py``): the FFN phase holds
  ``4 * n_ff + 2 * n_embd`` floats per token (MoE: ``n_ff_exp * n_expert_used`` plus the
  shared experts as ``n_ff``); without flash attention the attention phase holds the
  ``n_kv * n_ubatch * n_head`` f32 scores plus ``6 * n_head * head_dim`` floats per
  token, and the FFN phase one more Q-sized tensor; the larger phase wins.
* **Flash attention** ``auto`` resolves to on when the backend runs the FA op on the
  layer's device (``llama_context::resolve_fused_ops``): the CPU does, and so do the
  CUDA/ROCm/Metal/Vulkan backends for the usual head sizes, so ``auto`` is on. A
  quantized V cache without flash attention is refused, as llama.cpp refuses it.
* **Placement** (``llama_model::load_tensors``, ``src/llama-model.cpp``): the input
  layer (token embedding) always stays on the host. With ``-ngl N`` the last ``N`` of
  the ``n_layer + 1`` layers (the "+1" is the output layer) go on the GPUs:
  ``i_gpu_start = max(n_layer + 1 - N, 0)``; layer ``il`` goes to the first device whose
  cumulative ``--tensor-split`` share exceeds ``(il - i_gpu_start) / N``. Without
  ``--tensor-split`` llama.cpp splits by free memory, which a pure projection does not
  know: the split is then even (the planner always passes one). The output layer (norm
  and ``output.weight``) is on the last offloaded device; a model with tied embeddings
  (no ``output.weight``) gets a copy of ``token_embd`` there when that device is a GPU
  (``TENSOR_DUPLICATED``). ``--n-cpu-moe N`` keeps the ``*_exps`` tensors of layers
  ``< N`` on the host. The KV cache and recurrent state of a layer live on that layer's
  device, on the host with ``--no-kv-offload``. Each device with layers gets a compute
  buffer; the host always has one: the whole graph when a layer (or the output layer)
  stays there, else the graph inputs the scheduler keeps on the CPU backend (the KQ
  masks; ``ggml_backend_sched``'s "1.inp") and the input embeddings (``4 * n_embd``
  floats per token, measured).
* **Pipeline parallelism** (``llama_context``'s constructor): with more than one device,
  every layer and the output layer offloaded, ``-sm layer``, no ``-ot``/``--n-cpu-moe``
  and the KV cache offloaded, the scheduler keeps 4 copies (``GGML_SCHED_MAX_COPIES``)
  of the graph inputs on the host and of each split's inputs on its device. Modelled as
  3 more copies of the masks on every device and the host (exact on the real server:
  each mask byte more costs 4 everywhere) plus a per-token part fitted in ``n_embd``
  floats on gemma 3 270M over two and three rpc-servers (first device, the others, the
  host: within ±4 % at ``-ub`` 128-1024, ``-c`` 4096-8192, ``-np`` 1 and 4 with flash
  attention; -11 % on the host without it).
* **Host weights and REPACK** (``llama_model::load_tensors``, ``ggml-cpu/repack.cpp``):
  with mmap (the default) the host's weights are one ``CPU_Mapped`` buffer spanning the
  file range of the tensors kept in the default CPU buffer type, from the first to the
  end of the last. Tensors the CPU backend repacks for its SIMD kernels (x86 AVX2:
  ``q4_0``, ``q4_K``, ``iq4_nl``, ``mxfp4`` matrices with rows a multiple of 8; AVX-512
  adds ``q2_K``) are copied into a separate ``CPU_REPACK`` buffer of the same size, but
  the mapped span still covers their bytes in the file. llama.cpp's memory breakdown
  lists ``CPU_REPACK`` as its own row beside ``Host``; the host's ``weights_bytes`` here
  is the sum of both (what the process really holds), ``repack_bytes`` the second part.
  Without mmap the host holds exactly the tensors it keeps, plus the repacked copies.
* **Extras**: ``--mmproj`` weights go on the first GPU (host without GPUs; the CLIP
  compute buffer, sized by the image, is not modelled); a draft model (``-md``) is
  projected with the same context and slots and its bytes added per device; LoRA
  adapter tensors go with the layer they adapt.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable

from corral.errors import FlagValueError
from corral.fit.ggml_types import GGML_TYPES, KV_CACHE_TYPES, by_name, tensor_bytes
from corral.gguf import ArraySummary, GGUFInfo, read_metadata

__all__ = [
    "DeviceUse",
    "LayerShape",
    "ModelShape",
    "Options",
    "Projection",
    "cpu_features",
    "load_model",
    "project",
    "shape_from_info",
]

MiB = 1024 * 1024
#: ``GGML_PAD(n_ctx, 256)`` and the SWA cache padding (llama-context.cpp, llama-kv-cache-iswa.cpp).
CTX_PAD = 256
#: Default ``-np`` when it is auto (tools/server/server.cpp).
AUTO_PARALLEL = 4

#: Architectures whose every layer is recurrent (``llm_arch_is_recurrent``).
RECURRENT_ARCHS = frozenset({"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"})
#: Default SWA pattern per architecture when the GGUF has none (src/models/<arch>.cpp).
SWA_PATTERN_DEFAULTS = {"gemma2": 2, "gemma3": 6, "cohere2": 4}
#: Default window where the GGUF may omit it (gemma2.cpp).
SWA_WINDOW_DEFAULTS = {"gemma2": 4096}

#: Copies of the graph inputs the scheduler keeps with pipeline parallelism
#: (``GGML_SCHED_MAX_COPIES``).
SCHED_COPIES = 4
#: What pipeline parallelism adds per token beyond the masks' copies, in ``n_embd``
#: floats, on the first device, each other device and the host: fitted on gemma 3 270M
#: over two and three rpc-servers (b11434, ``-ub`` 128 to 1024: linear in tokens).
PIPELINE_TOKEN_EXTRA = (12.66, 3.64, 6.06)

_LAYER_RE = re.compile(r"^blk\.(\d+)\.")
_OUTPUT_NAMES = ("output.", "output_norm.", "cls.", "cls_out.")


# -- options ---------------------------------------------------------------------------


@dataclass
class Options:
    """What a launch's flags say about memory; None = the build's default."""

    ctx: int | None = None  # -c; 0/None = the model's training context
    n_parallel: int | None = None  # -np (None/-1 = auto: 4 slots, unified KV)
    kv_unified: bool | None = None
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: str = "auto"  # on|off|auto
    n_batch: int = 2048
    n_ubatch: int = 512
    n_gpu_layers: int = -1  # -1 = all ("auto"/"all" in flags), 0 = none
    tensor_split: list[float] | None = None
    n_cpu_moe: int = 0  # --n-cpu-moe N / --cpu-moe (a large N: every layer)
    swa_full: bool = False
    mmproj: str | None = None
    draft: str | None = None
    loras: list[str] = field(default_factory=list)
    no_kv_offload: bool = False
    # -- added beyond the agreed interface ------------------------------------------
    mmap: bool = True  # --mmap / --no-mmap
    repack: bool = True  # --repack / --no-repack
    embeddings: bool = False  # --embeddings
    #: CPU features deciding what the CPU backend repacks (None: this host's).
    cpu_flags: frozenset[str] | None = None
    split_mode: str = "layer"  # -sm layer|row|none|tensor
    tensor_overrides: bool = False  # -ot given (it turns pipeline parallelism off)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str | None]], catalog: Any = None) -> "Options":
        """Options from normalised ``(flag, value)`` pairs (``FlagCatalog.normalize``).

        Flags are matched by any of their spellings, so pairs from a catalog (canonical
        long names) and hand-written pairs both work. With ``catalog`` the build's
        defaults (``--help``'s ``default:``) fill what the pairs leave unset. Flags that
        do not change memory are ignored; a bad number raises FlagValueError.
        """
        opts = cls()
        if catalog is not None:
            for long, attr in _DEFAULTED.items():
                flag = catalog.lookup(long)
                if flag is not None and flag.default not in (None, ""):
                    # "-1, -1 = auto" -> "-1"; "'auto'" -> "auto"
                    value = flag.default.split(",")[0].strip().strip("'\"")
                    try:
                        _apply(opts, attr, value)
                    except FlagValueError:
                        pass  # a default such as "auto" where we expect a number
        for name, value in pairs:
            attr = _FLAG_ATTRS.get(name)
            if attr is not None:
                _apply(opts, attr, value)
        return opts


_FLAG_SPELLINGS: dict[str, tuple[str, ...]] = {
    "ctx": ("-c", "--ctx-size"),
    "n_parallel": ("-np", "--parallel"),
    "kv_unified": ("-kvu", "--kv-unified"),
    "no_kv_unified": ("-no-kvu", "--no-kv-unified"),
    "cache_type_k": ("-ctk", "--cache-type-k"),
    "cache_type_v": ("-ctv", "--cache-type-v"),
    "flash_attn": ("-fa", "--flash-attn"),
    "n_batch": ("-b", "--batch-size"),
    "n_ubatch": ("-ub", "--ubatch-size"),
    "n_gpu_layers": ("-ngl", "--gpu-layers", "--n-gpu-layers"),
    "tensor_split": ("-ts", "--tensor-split"),
    "n_cpu_moe": ("-ncmoe", "--n-cpu-moe"),
    "cpu_moe": ("-cmoe", "--cpu-moe"),
    "swa_full": ("--swa-full",),
    "mmproj": ("-mm", "--mmproj"),
    "draft": ("-md", "--model-draft", "--spec-draft-model"),
    "lora": ("--lora",),
    "lora_scaled": ("--lora-scaled",),
    "no_kv_offload": ("-nkvo", "--no-kv-offload"),
    "kv_offload": ("-kvo", "--kv-offload"),
    "mmap": ("--mmap",),
    "no_mmap": ("--no-mmap",),
    "repack": ("--repack",),
    "no_repack": ("-nr", "--no-repack"),
    "embeddings": ("--embedding", "--embeddings"),
    "split_mode": ("-sm", "--split-mode"),
    "tensor_overrides": ("-ot", "--override-tensor"),
}
_FLAG_ATTRS = {name: attr for attr, names in _FLAG_SPELLINGS.items() for name in names}
#: Flags whose build default is read from the catalog (long name -> attribute).
_DEFAULTED = {
    "--ctx-size": "ctx",
    "--parallel": "n_parallel",
    "--batch-size": "n_batch",
    "--ubatch-size": "n_ubatch",
    "--cache-type-k": "cache_type_k",
    "--cache-type-v": "cache_type_v",
    "--flash-attn": "flash_attn",
}


def _int(attr: str, value: str | None) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise FlagValueError(f"{attr}: expected a whole number, got {value!r}") from None


def _apply(opts: Options, attr: str, value: str | None) -> None:
    """Set one option from a flag value (switches have value None)."""
    if attr in ("ctx", "n_batch", "n_ubatch"):
        setattr(opts, attr, _int(attr, value))
    elif attr == "n_parallel":
        opts.n_parallel = _int(attr, value)
    elif attr in ("kv_unified", "swa_full", "no_kv_offload", "mmap", "repack", "embeddings"):
        setattr(opts, attr, True)
    elif attr == "no_kv_unified":
        opts.kv_unified = False
    elif attr == "kv_offload":
        opts.no_kv_offload = False
    elif attr == "no_mmap":
        opts.mmap = False
    elif attr == "no_repack":
        opts.repack = False
    elif attr == "split_mode":
        opts.split_mode = str(value).strip().lower()
    elif attr == "tensor_overrides":
        opts.tensor_overrides = True
    elif attr in ("cache_type_k", "cache_type_v"):
        setattr(opts, attr, str(value).strip().lower())
    elif attr == "flash_attn":
        v = "on" if value is None else str(value).strip().lower()
        opts.flash_attn = {"1": "on", "true": "on", "0": "off", "false": "off"}.get(v, v)
    elif attr == "n_gpu_layers":
        v = str(value).strip().lower()
        opts.n_gpu_layers = -1 if v in ("auto", "all", "-1") else _int(attr, v)
    elif attr == "tensor_split":
        try:
            opts.tensor_split = [float(x) for x in re.split(r"[,/]", str(value)) if x.strip()]
        except ValueError:
            raise FlagValueError(f"tensor_split: expected numbers, got {value!r}") from None
    elif attr == "n_cpu_moe":
        opts.n_cpu_moe = _int(attr, value)
    elif attr == "cpu_moe":
        opts.n_cpu_moe = 1 << 30
    elif attr in ("mmproj", "draft"):
        setattr(opts, attr, value)
    elif attr == "lora":
        opts.loras.extend(p for p in str(value).split(",") if p)
    elif attr == "lora_scaled":
        opts.loras.extend(p.rsplit(":", 1)[0] for p in str(value).split(",") if p)


# -- the model's shape -------------------------------------------------------------------


@dataclass
class LayerShape:
    """One repeating layer: its weights and what its KV cache / state needs."""

    index: int
    weights_bytes: int = 0
    #: Bytes of the ``*_exps`` tensors (what ``--n-cpu-moe`` keeps on the host).
    expert_bytes: int = 0
    #: Bytes of matrices the CPU backend may repack, by ggml type id (rows % 8 == 0).
    repackable: dict[int, int] = field(default_factory=dict)
    #: Per-token K and V widths in elements (0/0: no KV cache in this layer).
    k_width: int = 0
    v_width: int = 0
    swa: bool = False
    recurrent: bool = False
    #: (first offset, end offset) of its tensors in the file's data region.
    span: tuple[int, int] = (0, 0)


@dataclass
class ModelShape:
    """What the estimator needs from a GGUF file (see :func:`load_model`)."""

    path: str
    architecture: str
    n_layer: int
    n_embd: int
    n_head: int
    head_dim_k: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int
    layers: list[LayerShape]
    input_bytes: int = 0
    input_span: tuple[int, int] = (0, 0)
    output_bytes: int = 0
    output_span: tuple[int, int] = (0, 0)
    output_repackable: dict[int, int] = field(default_factory=dict)
    #: Bytes of ``token_embd`` (copied to the output device when embeddings are tied).
    tok_embd_bytes: int = 0
    #: Its ggml type when the CPU could repack it as the tied output matrix, else -1.
    tok_embd_type: int = -1
    tied_embeddings: bool = False
    n_swa: int = 0
    is_mla: bool = False
    n_expert: int = 0
    n_expert_used: int = 0
    #: Recurrent state per layer per sequence, in f32 elements (n_embd_r + n_embd_s).
    recurrent_width: int = 0
    file_size: int = 0
    extra: dict[str, "ModelShape | int"] = field(default_factory=dict)

    @property
    def weights_bytes(self) -> int:
        return self.input_bytes + self.output_bytes + sum(la.weights_bytes for la in self.layers)

    @property
    def n_layer_all(self) -> int:
        return len(self.layers)


def _kv_get(kv: dict[str, Any], arch: str, key: str, default: Any = None) -> Any:
    value = kv.get(f"{arch}.{key}", default)
    return default if isinstance(value, ArraySummary) else value


def _per_layer(value: Any, n: int, default: int = 0) -> list[int]:
    """A hyper-parameter that is a number or a per-layer array (head_count_kv, n_ff)."""
    if isinstance(value, list):
        vals = [int(v) for v in value[:n]]
        return vals + [vals[-1] if vals else default] * (n - len(vals))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [int(value)] * n
    return [default] * n


def _swa_layers(kv: dict[str, Any], arch: str, n_layer: int, n_swa: int) -> list[bool]:
    if n_swa <= 0:
        return [False] * n_layer
    pattern = _kv_get(kv, arch, "attention.sliding_window_pattern")
    if isinstance(pattern, list):
        flags = [bool(p) for p in pattern[:n_layer]]
        return flags + [False] * (n_layer - len(flags))
    if not isinstance(pattern, int) or isinstance(pattern, bool):
        pattern = SWA_PATTERN_DEFAULTS.get(arch)
    if pattern is None:
        return [False] * n_layer  # unknown arch: size every layer as full (the safe side)
    # llama_hparams::set_swa_pattern(n_pattern, dense_first=false)
    return [pattern == 0 or (il % pattern < pattern - 1) for il in range(n_layer)]


def _vocab_size(kv: dict[str, Any], arch: str, tensors: dict[str, tuple[int, ...]]) -> int:
    v = _kv_get(kv, arch, "vocab_size")
    if isinstance(v, int) and v > 0:
        return v
    toks = kv.get("tokenizer.ggml.tokens")
    if isinstance(toks, ArraySummary):
        return toks.length
    if isinstance(toks, list):
        return len(toks)
    for name in ("output.weight", "token_embd.weight"):
        if name in tensors and len(tensors[name]) >= 2:
            return tensors[name][1]
    return 0


def _repack_rule(type_id: int, flags: frozenset[str]) -> bool:
    """Whether ggml-cpu repacks a matrix of this type whose rows are a multiple of 8.

    ggml_repack_get_optimal_repack_type (ggml-cpu/repack.cpp); the NEON rules are
    approximated by the dot-product feature (i8mm variants need the same rows).
    """
    x86 = "avx2" in flags
    if type_id in (2, 12, 20, 39):  # q4_0, q4_K, iq4_nl, mxfp4
        return x86 or ("asimddp" in flags)  # NEON dotprod variants (ne1 % 4 or 8)
    if type_id == 10:  # q2_K
        return "avx512f" in flags
    if type_id in (8, 13, 14):  # q8_0, q5_K, q6_K: NEON only
        return "asimddp" in flags
    return False


_REPACKABLE_TYPES = (2, 8, 10, 12, 13, 14, 20, 39)


@dataclass
class _Hparams:
    """The hyper-parameters llama.cpp sizes a model's buffers from, read from the GGUF
    keys once (``llama_model::load_hparams``) so each step of :func:`shape_from_info`
    reads named fields instead of the key table."""

    arch: str
    n_layer: int
    #: ``n_layer`` plus the NextN/MTP layers, which have tensors and a KV cache too.
    n_layer_all: int
    n_embd: int
    n_head: int
    heads_kv: list[int]
    head_k: int
    head_v: int
    n_ctx_train: int
    n_expert: int
    n_expert_used: int
    is_mla: bool
    n_swa: int
    swa: list[bool]
    d_inner: int
    recurrent_width: int
    recurrent: list[bool]


def _read_hparams(kv: dict[str, Any], arch: str) -> _Hparams:
    """The attention, expert, sliding-window and recurrent hyper-parameters of ``arch``."""
    n_layer = int(_kv_get(kv, arch, "block_count", 0) or 0)
    n_nextn = int(_kv_get(kv, arch, "nextn_predict_layers", 0) or 0)
    n_layer_all = n_layer + n_nextn
    n_embd = int(_kv_get(kv, arch, "embedding_length", 0) or 0)
    heads = _per_layer(kv.get(f"{arch}.attention.head_count"), n_layer_all)
    heads_kv_raw = kv.get(f"{arch}.attention.head_count_kv")
    heads_kv = _per_layer(heads_kv_raw, n_layer_all) if heads_kv_raw is not None else heads
    n_head = max(heads) if heads else 0
    head_k = int(
        _kv_get(kv, arch, "attention.key_length", 0) or (n_embd // n_head if n_head else 0)
    )
    n_swa = int(
        _kv_get(kv, arch, "attention.sliding_window", 0) or SWA_WINDOW_DEFAULTS.get(arch, 0)
    )
    d_inner = int(_kv_get(kv, arch, "ssm.inner_size", 0) or 0)
    recurrent_width = _recurrent_width(kv, arch, n_embd, d_inner)
    return _Hparams(
        arch=arch,
        n_layer=n_layer,
        n_layer_all=n_layer_all,
        n_embd=n_embd,
        n_head=n_head,
        heads_kv=heads_kv,
        head_k=head_k,
        head_v=int(_kv_get(kv, arch, "attention.value_length", 0) or head_k),
        n_ctx_train=int(_kv_get(kv, arch, "context_length", 0) or 0),
        n_expert=int(_kv_get(kv, arch, "expert_count", 0) or 0),
        n_expert_used=int(_kv_get(kv, arch, "expert_used_count", 0) or 0),
        is_mla=bool(_kv_get(kv, arch, "attention.key_length_mla", 0)),
        n_swa=n_swa,
        swa=_swa_layers(kv, arch, n_layer, n_swa) + [False] * n_nextn,
        d_inner=d_inner,
        recurrent_width=recurrent_width,
        recurrent=_recurrent_layers(arch, recurrent_width, heads_kv, heads_kv_raw),
    )


def _recurrent_width(kv: dict[str, Any], arch: str, n_embd: int, d_inner: int) -> int:
    """f32 elements of recurrent state per layer per sequence (``n_embd_r + n_embd_s``,
    llama-hparams.cpp); RWKV's is its token shift plus the wkv state. 0: none."""
    d_conv = int(_kv_get(kv, arch, "ssm.conv_kernel", 0) or 0)
    d_state = int(_kv_get(kv, arch, "ssm.state_size", 0) or 0)
    n_group = int(_kv_get(kv, arch, "ssm.group_count", 0) or 0)
    width = max(d_conv - 1, 0) * (d_inner + 2 * n_group * d_state) + d_state * d_inner
    wkv = int(_kv_get(kv, arch, "wkv.head_size", 0) or 0)
    if wkv:  # RWKV: token shift + wkv state
        shift = int(_kv_get(kv, arch, "token_shift_count", 2) or 2)
        width = shift * n_embd + n_embd * wkv
    return width


def _recurrent_layers(arch: str, width: int, heads_kv: list[int], heads_kv_raw: Any) -> list[bool]:
    """Which layers hold recurrent state: all of a recurrent architecture's
    (``llm_arch_is_recurrent``), a hybrid's where the per-layer ``head_count_kv`` is 0."""
    if arch in RECURRENT_ARCHS:
        return [True] * len(heads_kv)
    if width and isinstance(heads_kv_raw, list):
        return [h == 0 for h in heads_kv]
    return [False] * len(heads_kv)


def _layer_shapes(kv: dict[str, Any], hp: _Hparams) -> list[LayerShape]:
    """One LayerShape per layer with its KV widths (K and V per token, in elements).

    A recurrent layer or one without KV heads caches nothing; an MLA layer caches only
    K, ``kv_lora_rank + rope`` wide (one head), V being a view of it."""
    layers = [LayerShape(index=i) for i in range(hp.n_layer_all)]
    for i, la in enumerate(layers):
        la.swa = hp.swa[i]
        la.recurrent = hp.recurrent[i]
        if la.recurrent or hp.heads_kv[i] == 0:
            continue
        if hp.is_mla:
            kv_rank = int(_kv_get(kv, hp.arch, "attention.kv_lora_rank", 0) or 0)
            rope = int(_kv_get(kv, hp.arch, "rope.dimension_count", 0) or 0)
            la.k_width = hp.head_k * hp.heads_kv[i] if hp.head_k else kv_rank + rope
            la.v_width = 0
        else:
            la.k_width = hp.head_k * hp.heads_kv[i]
            la.v_width = hp.head_v * hp.heads_kv[i]
    return layers


def _repack_type(t: Any) -> int | None:
    """The tensor's ggml type when the CPU backend may repack it (a ``.weight`` matrix of
    a repackable type whose rows are a multiple of 8: every x86 rule needs ne1 % 8 == 0)."""
    if (
        t.type in _REPACKABLE_TYPES
        and len(t.dims) >= 2
        and t.dims[1] % 8 == 0
        and t.name.endswith(".weight")
    ):
        return t.type
    return None


def _tensor_home(name: str, n_layer_all: int) -> int | str:
    """Where a tensor belongs: its layer's index, ``"output"`` or ``"input"``."""
    m = _LAYER_RE.match(name)
    if m and int(m.group(1)) < n_layer_all:
        return int(m.group(1))
    return "output" if name.startswith(_OUTPUT_NAMES) else "input"


def _count_tensors(shape: ModelShape, tensors: Iterable[Any]) -> dict[str, tuple[int, ...]]:
    """Add every tensor's bytes to its layer, the output or the input part of ``shape``,
    with what may repack and each part's span in the file; returns dims by tensor name."""
    dims_by_name: dict[str, tuple[int, ...]] = {}
    spans: dict[int | str, tuple[int, int]] = {}  # home -> (first offset, end)
    for t in tensors:
        if t.type not in GGML_TYPES:
            continue  # llama.cpp refuses the file at load; nothing sensible to count
        nbytes = tensor_bytes(t.type, t.dims)
        dims_by_name[t.name] = t.dims
        end = t.offset + nbytes
        rep_type = _repack_type(t)
        home = _tensor_home(t.name, len(shape.layers))
        lo, hi = spans.get(home, (t.offset, end))
        spans[home] = (min(lo, t.offset), max(hi, end))
        if isinstance(home, int):
            la = shape.layers[home]
            la.weights_bytes += nbytes
            if "_exps" in t.name:
                la.expert_bytes += nbytes
            if rep_type is not None:
                la.repackable[rep_type] = la.repackable.get(rep_type, 0) + nbytes
        elif home == "output":
            shape.output_bytes += nbytes
            if rep_type is not None:
                table = shape.output_repackable
                table[rep_type] = table.get(rep_type, 0) + nbytes
        else:
            shape.input_bytes += nbytes
            if t.name == "token_embd.weight":
                shape.tok_embd_bytes = nbytes
                shape.tok_embd_type = t.type if rep_type is not None else -1
    for la in shape.layers:
        la.span = spans.get(la.index, la.span)
    shape.input_span = spans.get("input", (0, 0))
    shape.output_span = spans.get("output", (0, 0))
    return dims_by_name


def _ffn_width(kv: dict[str, Any], hp: _Hparams) -> int:
    """The FFN width the compute buffer is sized by: the routed experts in use plus the
    shared ones for MoE (the dense width when leading dense layers are wider), else
    the widest layer, else a Mamba block's ``2 * d_inner``."""
    arch = hp.arch
    n_ffs = _per_layer(kv.get(f"{arch}.feed_forward_length"), hp.n_layer_all)
    n_ff_exp = int(_kv_get(kv, arch, "expert_feed_forward_length", 0) or 0)
    if not (hp.n_expert and n_ff_exp):
        return max(n_ffs, default=0) or hp.d_inner * 2
    n_ff_shexp = int(_kv_get(kv, arch, "expert_shared_feed_forward_length", 0) or 0)
    n_shared = int(_kv_get(kv, arch, "expert_shared_count", 0) or (1 if n_ff_shexp else 0))
    dense_lead = int(_kv_get(kv, arch, "leading_dense_block_count", 0) or 0)
    moe = n_ff_exp * hp.n_expert_used + n_ff_shexp * n_shared
    return max(moe, max(n_ffs, default=0) if dense_lead else 0)


def shape_from_info(info: GGUFInfo) -> ModelShape:
    """Build the shape from a parsed header (no I/O): the hyper-parameters, the layers'
    KV widths, then every tensor's bytes counted where llama.cpp will place it."""
    kv = info.kv
    hp = _read_hparams(kv, info.architecture or "llama")
    shape = ModelShape(
        path=info.path,
        architecture=hp.arch,
        n_layer=hp.n_layer,
        n_embd=hp.n_embd,
        n_head=hp.n_head,
        head_dim_k=hp.head_k,
        n_ff=0,
        n_vocab=0,
        n_ctx_train=hp.n_ctx_train,
        layers=_layer_shapes(kv, hp),
        n_swa=hp.n_swa,
        is_mla=hp.is_mla,
        n_expert=hp.n_expert,
        n_expert_used=hp.n_expert_used,
        recurrent_width=hp.recurrent_width if any(hp.recurrent) else 0,
        file_size=info.file_size,
    )
    dims_by_name = _count_tensors(shape, info.tensors)
    shape.tied_embeddings = "output.weight" not in dims_by_name and shape.tok_embd_bytes > 0
    shape.n_vocab = _vocab_size(kv, hp.arch, dims_by_name)
    shape.n_ff = _ffn_width(kv, hp)
    return shape


@lru_cache(maxsize=64)
def _load_cached(path: str, mtime_ns: int, size: int) -> ModelShape:
    return shape_from_info(read_metadata(path))


def _load_one(path: str) -> ModelShape:
    st = os.stat(path)
    return _load_cached(os.path.abspath(path), st.st_mtime_ns, st.st_size)


def load_model(
    path: str, *, mmproj: str | None = None, draft: str | None = None, loras: Iterable[str] = ()
) -> ModelShape:
    """Parse a GGUF once (cached by path + mtime + size) into a :class:`ModelShape`.

    ``mmproj``, ``draft`` and ``loras`` are read too and kept in ``shape.extra`` so
    :func:`project` can count them when the options name the same paths. Raises
    :class:`~corral.errors.InvalidModelFile` for a file that is not a readable GGUF.
    """
    cpu_features()  # read /proc/cpuinfo now, so project() never does I/O
    base = _load_one(path)
    if not (mmproj or draft or loras):
        return base
    shape = ModelShape(**{**base.__dict__, "extra": dict(base.extra)})
    if mmproj:
        shape.extra["mmproj:" + mmproj] = _load_one(mmproj).weights_bytes
    if draft:
        shape.extra["draft:" + draft] = _load_one(draft)
    for lora in loras:
        shape.extra["lora:" + lora] = _load_one(lora)
    return shape


@lru_cache(maxsize=1)
def cpu_features() -> frozenset[str]:
    """This host's CPU flags (``/proc/cpuinfo``), which decide what ggml-cpu repacks."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


# -- the projection ---------------------------------------------------------------------


@dataclass
class DeviceUse:
    """Bytes one device will hold for a launch."""

    id: str  # "gpu0", "gpu1", ... or "host"
    layers: int = 0
    weights_bytes: int = 0
    kv_bytes: int = 0
    compute_bytes: int = 0
    output_bytes: int = 0  # logits/embeddings buffer (host)
    #: Part of ``weights_bytes`` in llama.cpp's CPU_REPACK buffer (host only).
    repack_bytes: int = 0

    @property
    def used_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.output_bytes

    @property
    def context_bytes(self) -> int:
        """KV + compute + output: what the context costs on this device."""
        return self.kv_bytes + self.compute_bytes + self.output_bytes


@dataclass
class Projection:
    devices: list[DeviceUse]  # the GPUs in order, then "host" last (always present)
    context: int  # the n_ctx llama.cpp will really allocate (padding applied)
    n_parallel: int
    cache_type_k: str
    cache_type_v: str
    flash_attn: bool
    notes: list[str]
    # -- added beyond the agreed interface ------------------------------------------
    kv_unified: bool = False
    n_ctx_seq: int = 0
    n_batch: int = 0
    n_ubatch: int = 0
    #: Cells of the full-attention and the SWA cache, per stream.
    kv_cells: int = 0
    swa_cells: int = 0

    @property
    def host(self) -> DeviceUse:
        return self.devices[-1]

    @property
    def total_bytes(self) -> int:
        return sum(d.used_bytes for d in self.devices)

    def device(self, id: str) -> DeviceUse:
        return next(d for d in self.devices if d.id == id)


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def _kv_row_bytes(type_name: str, width: int) -> int:
    t = by_name(type_name)
    return -(-width // t.block) * t.bytes


def _check_cache_type(name: str, which: str) -> str:
    n = name.lower()
    if n not in KV_CACHE_TYPES:
        allowed = ", ".join(KV_CACHE_TYPES)
        raise FlagValueError(f"--cache-type-{which} {name!r}: allowed values are {allowed}")
    return n


def _layer_devices(shape: ModelShape, opts: Options, gpus: int) -> list[int]:
    """Device index per layer, 0..n_layer_all (the last entry is the output layer).

    -1 is the host; llama_model::load_tensors' get_layer_buft_list.
    """
    n_all = shape.n_layer_all
    if gpus <= 0:
        return [-1] * (n_all + 1)
    ngl = n_all + 1 if opts.n_gpu_layers is None or opts.n_gpu_layers < 0 else opts.n_gpu_layers
    i_start = max(n_all + 1 - ngl, 0)
    act = min(ngl, n_all + 1)
    split = list(opts.tensor_split or [])[:gpus]
    split += [0.0] * (gpus - len(split))
    if not any(split):
        split = [1.0] * gpus
    total = sum(split)
    cum, acc = [], 0.0
    for s in split:
        acc += s
        cum.append(acc / total)
    out = []
    for il in range(n_all + 1):
        if il < i_start or il - i_start >= act:
            out.append(-1)
            continue
        x = (il - i_start) / act
        out.append(next((i for i, c in enumerate(cum) if c > x), gpus - 1))
    return out


def _repack_bytes(table: dict[int, int], flags: frozenset[str]) -> int:
    return sum(b for type_id, b in table.items() if _repack_rule(type_id, flags))


@dataclass
class _Launch:
    """What llama.cpp resolves from the flags before it allocates anything: the cache
    types, flash attention, the slots and the context (llama-context.cpp, server.cpp)."""

    cache_type_k: str
    cache_type_v: str
    flash_attn: bool
    n_seq: int
    unified: bool
    n_ctx: int
    n_ctx_seq: int
    n_batch: int
    n_ubatch: int
    #: Cells of the full-attention and the SWA cache, per stream.
    kv_cells: int = 0
    swa_cells: int = 0

    @property
    def n_stream(self) -> int:
        return 1 if self.unified else self.n_seq


def _cache_and_fa(opts: Options) -> tuple[str, str, bool]:
    """The K and V cache types and whether flash attention is on, refused as llama.cpp
    refuses them (an unknown type, a quantized V cache without flash attention)."""
    ctk = _check_cache_type(opts.cache_type_k, "k")
    ctv = _check_cache_type(opts.cache_type_v, "v")
    fa_opt = (opts.flash_attn or "auto").lower()
    if fa_opt not in ("on", "off", "auto"):
        raise FlagValueError(f"--flash-attn {opts.flash_attn!r}: expected on, off or auto")
    fa = fa_opt != "off"
    if not fa and by_name(ctv).quantized:
        raise FlagValueError(
            f"--cache-type-v {ctv} needs flash attention (-fa on): llama.cpp refuses a"
            " quantized V cache without it"
        )
    return ctk, ctv, fa


def _resolve(model: ModelShape, opts: Options, notes: list[str]) -> _Launch:
    """Slots, context, batch sizes and cache cells as llama.cpp pads and clamps them."""
    ctk, ctv, fa = _cache_and_fa(opts)
    if opts.n_parallel is None or opts.n_parallel < 0:
        n_seq, unified = AUTO_PARALLEL, True
        if opts.kv_unified is False:
            notes.append("-np auto turns on the unified KV cache whatever --kv-unified says")
    else:
        n_seq, unified = max(1, opts.n_parallel), bool(opts.kv_unified)
    n_ctx = opts.ctx if opts.ctx and opts.ctx > 0 else model.n_ctx_train
    if not n_ctx:
        n_ctx = 4096
        notes.append("the model states no training context: assuming 4096")
    n_ctx = _pad(n_ctx, CTX_PAD)
    if unified:
        n_ctx_seq = n_ctx
    else:
        n_ctx_seq = _pad(n_ctx // n_seq, CTX_PAD)
        n_ctx = n_ctx_seq * n_seq
    n_batch = min(n_ctx, opts.n_batch or 2048)
    n_ubatch = min(n_batch, opts.n_ubatch or n_batch)
    if n_ctx_seq > model.n_ctx_train > 0:
        notes.append(
            f"context per slot {n_ctx_seq} exceeds the training context {model.n_ctx_train}"
        )
    launch = _Launch(ctk, ctv, fa, n_seq, unified, n_ctx, n_ctx_seq, n_batch, n_ubatch)
    launch.kv_cells = n_ctx_seq
    if any(la.swa and la.k_width for la in model.layers):
        launch.swa_cells = (
            n_ctx_seq
            if opts.swa_full
            else _pad(min(n_ctx_seq, model.n_swa * (n_seq if unified else 1) + n_ubatch), CTX_PAD)
        )
    return launch


@dataclass
class _HostWeights:
    """The host's weights as llama.cpp holds them, gathered tensor group by group.

    With mmap the default CPU buffer is one ``CPU_Mapped`` span of the file, from the
    first host tensor to the end of the last, whatever lies between; without it just
    the tensors. Repacked copies (``CPU_REPACK``) are counted at once, apart from both.
    """

    host: DeviceUse
    cpu_flags: frozenset[str]
    repack: bool
    span: tuple[int, int] | None = None
    plain: int = 0  # bytes of the host tensors that do not repack

    def repacks(self, type_id: int) -> bool:
        return self.repack and _repack_rule(type_id, self.cpu_flags)

    def add(self, span: tuple[int, int], nbytes: int, repackable: dict[int, int]) -> None:
        rep = _repack_bytes(repackable, self.cpu_flags) if self.repack else 0
        self.add_repacked(rep)
        self.plain += nbytes - rep
        if span[1] > span[0]:
            lo, hi = span if self.span is None else self.span
            self.span = (min(lo, span[0]), max(hi, span[1]))

    def add_repacked(self, nbytes: int) -> None:
        self.host.weights_bytes += nbytes
        self.host.repack_bytes += nbytes

    def settle(self, mmap: bool) -> None:
        """Add the mapped span (mmap) or the plain tensors to the host's weights."""
        if mmap and self.span is not None:
            self.host.weights_bytes += max(self.span[1] - self.span[0], 0)
        else:
            self.host.weights_bytes += self.plain


def _layer_weights(
    model: ModelShape,
    opts: Options,
    devs: list[DeviceUse],
    placement: list[int],
    weights: _HostWeights,
) -> None:
    """Each repeating layer's weights on its device; ``--n-cpu-moe`` keeps the experts of
    the first layers on the host."""
    host = devs[-1]
    for la, dev_i in zip(model.layers, placement, strict=False):
        dev = host if dev_i < 0 else devs[dev_i]
        dev.layers += 1
        if dev_i < 0:
            weights.add(la.span, la.weights_bytes, la.repackable)
            continue
        experts_host = la.expert_bytes if la.index < opts.n_cpu_moe else 0
        dev.weights_bytes += la.weights_bytes - experts_host
        if experts_host:
            # expert tensors stay in the host's buffers; they do not repack as mmap'd
            host.weights_bytes += experts_host


def _kv_cache(
    model: ModelShape, opts: Options, devs: list[DeviceUse], placement: list[int], launch: _Launch
) -> None:
    """KV cache or recurrent state of each layer, on the layer's device (the host with
    ``--no-kv-offload``)."""
    # value width of the transposed V cache when layers differ (TAG_V_CACHE_VARIABLE)
    v_max = max((la.v_width for la in model.layers), default=0)
    k_row: dict[int, int] = {}
    v_row: dict[int, int] = {}
    fa, n_stream = launch.flash_attn, launch.n_stream  # read once: this loop is the hot one
    state = model.recurrent_width * 4 * max(1, launch.n_seq)
    for la, dev_i in zip(model.layers, placement, strict=False):
        kv_dev = devs[-1] if opts.no_kv_offload or dev_i < 0 else devs[dev_i]
        if la.recurrent:
            kv_dev.kv_bytes += state
        elif la.k_width:
            cells = launch.swa_cells if la.swa else launch.kv_cells
            vw = la.v_width if fa or not la.v_width else v_max
            kb = k_row.get(la.k_width)
            if kb is None:
                kb = k_row[la.k_width] = _kv_row_bytes(launch.cache_type_k, la.k_width)
            vb = v_row.get(vw, -1)
            if vb < 0:
                vb = v_row[vw] = _kv_row_bytes(launch.cache_type_v, vw) if vw else 0
            kv_dev.kv_bytes += (kb + vb) * cells * n_stream


def _output_layer(
    model: ModelShape, devs: list[DeviceUse], placement: list[int], weights: _HostWeights
) -> None:
    """The output layer on its device; with tied embeddings it needs ``token_embd``
    there too (TENSOR_DUPLICATED), on the host only as the CPU's repacked copy."""
    out_i = placement[-1]
    if out_i >= 0:
        devs[out_i].weights_bytes += model.output_bytes
        if model.tied_embeddings:
            devs[out_i].weights_bytes += model.tok_embd_bytes  # TENSOR_DUPLICATED copy
        return
    weights.add(model.output_span, model.output_bytes, model.output_repackable)
    if model.tied_embeddings and model.tok_embd_type >= 0 and weights.repacks(model.tok_embd_type):
        # the output matmul's repacked copy of token_embd (TENSOR_DUPLICATED)
        weights.add_repacked(model.tok_embd_bytes)


def project(model: ModelShape, opts: Options, gpus: int) -> Projection:
    """Bytes per device for launching ``model`` with ``opts`` on ``gpus`` GPUs.

    Pure and fast (no I/O). ``gpus=0`` puts everything on ``"host"``. Raises
    FlagValueError for what llama.cpp would refuse (an unknown cache type, a quantized
    V cache without flash attention). The steps follow llama.cpp's order: resolve the
    context, place the weights, allocate the caches, then the output and compute
    buffers, then what the extras add.
    """
    notes: list[str] = []
    launch = _resolve(model, opts, notes)
    placement = _layer_devices(model, opts, gpus)
    devs = [DeviceUse(id=f"gpu{i}") for i in range(max(gpus, 0))] + [DeviceUse(id="host")]
    host = devs[-1]
    flags = opts.cpu_flags if opts.cpu_flags is not None else cpu_features()
    weights = _HostWeights(host, flags, opts.repack)
    # input layer: always the host (llama-model.cpp: "always keep it on the CPU")
    weights.add(model.input_span, model.input_bytes, {})
    _layer_weights(model, opts, devs, placement, weights)
    _kv_cache(model, opts, devs, placement, launch)
    _output_layer(model, devs, placement, weights)
    weights.settle(opts.mmap)
    # output buffer: host memory (pinned host buffer of the output device)
    host.output_bytes = (
        (model.n_vocab + (model.n_embd if opts.embeddings else 0)) * launch.n_seq * 4
    )
    _compute(model, devs, placement, opts, launch)
    _extras(model, opts, devs, gpus, notes)
    if opts.tensor_split is None and gpus > 1 and opts.n_gpu_layers != 0:
        notes.append("no --tensor-split: layers split evenly (llama.cpp splits by free memory)")
    return Projection(
        devices=devs,
        context=launch.n_ctx,
        n_parallel=launch.n_seq,
        cache_type_k=launch.cache_type_k,
        cache_type_v=launch.cache_type_v,
        flash_attn=launch.flash_attn,
        notes=notes,
        kv_unified=launch.unified,
        n_ctx_seq=launch.n_ctx_seq,
        n_batch=launch.n_batch,
        n_ubatch=launch.n_ubatch,
        kv_cells=launch.kv_cells,
        swa_cells=launch.swa_cells,
    )


def _compute(
    model: ModelShape, devs: list[DeviceUse], placement: list[int], opts: Options, launch: _Launch
) -> None:
    """Compute buffer per device (see the module docstring for the model)."""
    fa, n_seq, n_ubatch = launch.flash_attn, launch.n_seq, launch.n_ubatch
    kv_cells, swa_cells = launch.kv_cells, launch.swa_cells
    tokens = n_ubatch if launch.unified else n_ubatch - n_ubatch % n_seq or n_seq
    f32 = 4
    has_full = any(la.k_width and not la.swa for la in model.layers)
    has_swa = any(la.k_width and la.swa for la in model.layers)
    mask_elem = 2 if fa else 4
    # KQ masks: [n_kv, n_tokens / n_stream, 1, n_stream] per cache (build_attn_inp_kq_mask)
    masks = ((kv_cells if has_full else 0) + (swa_cells if has_swa else 0)) * tokens * mask_elem
    q_dim = model.n_head * model.head_dim_k
    ffn_phase = tokens * f32 * (4 * model.n_ff + 2 * model.n_embd)
    if model.recurrent_width and not has_full and not has_swa:
        q_dim = 0
    if fa or not (has_full or has_swa):
        graph = ffn_phase
        attn_scratch = 0
    else:
        n_kv = kv_cells if has_full else swa_cells
        attn_scratch = n_kv * tokens * model.n_head * f32
        graph = max(ffn_phase + tokens * f32 * q_dim, tokens * f32 * 6 * q_dim + attn_scratch)
    # the output phase: logits of the reserved outputs (n_seq) over the vocabulary
    graph = max(graph, model.n_vocab * min(tokens, n_seq) * f32 + tokens * f32 * model.n_embd)
    host = devs[-1]
    used = sorted({i for i in placement if i >= 0})
    if not used:
        host.compute_bytes = graph + masks
        return
    for i in used:
        dev = devs[i]
        dev.compute_bytes = graph + masks
        if opts.no_kv_offload:
            dev.compute_bytes -= attn_scratch
    if any(i < 0 for i in placement):  # a layer or the output layer computes on the host
        host.compute_bytes = graph + masks
    else:
        # the graph inputs (KQ masks above all) live on the host and are copied to the
        # devices; the input embeddings are computed there (get_rows, scale)
        host.compute_bytes = masks + tokens * f32 * model.n_embd * 4
        if opts.no_kv_offload:
            host.compute_bytes += attn_scratch
    if _pipeline(opts, placement, len(devs) - 1):
        _pipeline_copies(model, devs, used, masks, tokens)


def _pipeline(opts: Options, placement: list[int], gpus: int) -> bool:
    """Whether llama.cpp turns on pipeline parallelism (``llama_context``'s constructor):
    more than one device, every layer and the output layer offloaded, ``-sm layer``, the
    KV cache offloaded and no tensor overrides (``-ot``, and ``--n-cpu-moe``/``--cpu-moe``
    are overrides too); every GPU and RPC device is taken to support async compute and
    events, as CUDA, ROCm and RPC do."""
    return (
        gpus > 1
        and all(i >= 0 for i in placement)
        and opts.split_mode == "layer"
        and not opts.no_kv_offload
        and not opts.tensor_overrides
        and not opts.n_cpu_moe
    )


def _pipeline_copies(
    model: ModelShape, devs: list[DeviceUse], used: list[int], masks: int, tokens: int
) -> None:
    """What pipeline parallelism adds: the scheduler keeps ``SCHED_COPIES`` copies of the
    graph inputs on the host and of each split's inputs on its device, never reused
    (``ggml_backend_sched_split_graph``): the KQ masks 4 times on every backend (measured:
    each mask byte more costs 4 on the host and on each device), plus a per-token part
    fitted in ``n_embd`` floats (:data:`PIPELINE_TOKEN_EXTRA`)."""
    first, others, on_host = PIPELINE_TOKEN_EXTRA
    per_token = model.n_embd * 4 * tokens
    for n, i in enumerate(used):
        extra = first if n == 0 else others
        devs[i].compute_bytes += (SCHED_COPIES - 1) * masks + int(extra * per_token)
    devs[-1].compute_bytes += (SCHED_COPIES - 1) * masks + int(on_host * per_token)


def _extras(
    model: ModelShape, opts: Options, devs: list[DeviceUse], gpus: int, notes: list[str]
) -> None:
    """mmproj, draft model and LoRA adapters, when load_model read them."""
    first = devs[0] if gpus > 0 else devs[-1]
    if opts.mmproj:
        size = model.extra.get("mmproj:" + opts.mmproj)
        if isinstance(size, int):
            first.weights_bytes += size
            notes.append("mmproj: weights counted, its image compute buffer is not")
        else:
            notes.append("mmproj not loaded with the model: not counted")
    if opts.draft:
        draft = model.extra.get("draft:" + opts.draft)
        if isinstance(draft, ModelShape):
            dopts = Options(
                ctx=opts.ctx,
                n_parallel=opts.n_parallel,
                kv_unified=opts.kv_unified,
                n_batch=opts.n_batch,
                n_ubatch=opts.n_ubatch,
                flash_attn=opts.flash_attn,
                tensor_split=opts.tensor_split,
                no_kv_offload=opts.no_kv_offload,
                mmap=opts.mmap,
                repack=opts.repack,
                cpu_flags=opts.cpu_flags,
            )
            sub = project(draft, dopts, gpus)
            for dev, add in zip(devs, sub.devices, strict=False):
                dev.weights_bytes += add.weights_bytes
                dev.repack_bytes += add.repack_bytes
                dev.kv_bytes += add.kv_bytes
                dev.compute_bytes += add.compute_bytes
                dev.output_bytes += add.output_bytes
        else:
            notes.append("draft model not loaded with the model: not counted")
    for lora in opts.loras:
        adapter = model.extra.get("lora:" + lora)
        if isinstance(adapter, ModelShape):
            placement = _layer_devices(model, opts, gpus)
            for la in adapter.layers:
                i = placement[la.index] if la.index < len(placement) - 1 else -1
                (devs[i] if i >= 0 else devs[-1]).weights_bytes += la.weights_bytes
            devs[-1].weights_bytes += adapter.input_bytes + adapter.output_bytes
        else:
            notes.append(f"LoRA {lora} not loaded with the model: not counted")
