"""GGUF headers in the shapes of real models, written with gguf-py's ``GGUFWriter``.

Each builder writes the metadata and the full tensor-info table of a real model family
(names, ggml types and dims as llama.cpp's converters produce them) and leaves the
tensor data region sparse: the file is truncated to its full length without writing a
byte of it, so a "14 B" model costs a few hundred KB of disk.

* ``dense_14b`` -- Qwen2.5-14B (qwen2): 48 layers, GQA 40/8 heads of 128, Q4_K_M mix.
* ``moe_30b`` -- Qwen3-30B-A3B (qwen3moe): 48 layers, 128 experts (8 used) of 768.
* ``gemma3_4b`` -- Gemma 3 4B (gemma3): 34 layers, sliding window 1024 on 5 of every 6
  layers, tied embeddings, 262k vocabulary.
* ``deepseek_mla`` -- DeepSeek-V2-Lite (deepseek2): MLA (kv_lora_rank 512 + rope 64, one
  KV head), 64 routed + 2 shared experts, first layer dense.
* ``mamba2`` -- Mamba2-2.7B (mamba2): 64 recurrent layers, no KV cache.
* ``hybrid_jamba`` -- a Jamba-style hybrid: every 8th layer attention (per-layer
  ``head_count_kv``, 0 for the Mamba layers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf as gguf_py
import numpy as np

from corral.fit.ggml_types import tensor_bytes

F32, F16, Q4_K, Q5_0, Q6_K, Q8_0 = 0, 1, 12, 6, 14, 8

Tensor = tuple[str, tuple[int, ...], int]  # name, dims (ne0 first), ggml type


def write_shape(
    path: Path, arch: str, kv: dict[str, Any], tensors: list[Tensor], vocab: int
) -> Path:
    """Write a GGUF with ``kv`` (keys without the ``arch.`` prefix where they start with
    ``.``) and the tensor table; the data region is sparse."""
    w = gguf_py.GGUFWriter(path, arch=arch)
    w.add_name(f"synthetic {arch}")
    for key, value in kv.items():
        full = f"{arch}{key}" if key.startswith(".") else key
        if isinstance(value, bool):
            w.add_bool(full, value)
        elif isinstance(value, int):
            w.add_uint32(full, value)
        elif isinstance(value, float):
            w.add_float32(full, value)
        elif isinstance(value, str):
            w.add_string(full, value)
        elif isinstance(value, list):
            w.add_array(full, value)
        else:
            raise TypeError(f"{key}: {type(value)}")
    # a real vocabulary is walked by the reader; keep it small on disk but long enough
    # to count (llama.cpp's n_vocab is the token list's length)
    w.add_key_value(
        "tokenizer.ggml.tokens",
        [""] * vocab,
        gguf_py.GGUFValueType.ARRAY,
        sub_type=gguf_py.GGUFValueType.STRING,
    )
    total = 0
    align = 32
    for name, dims, type_id in tensors:
        nbytes = tensor_bytes(type_id, dims)
        w.add_tensor_info(
            name,
            list(reversed(dims)),
            np.dtype(np.float32),
            nbytes,
            raw_dtype=gguf_py.GGMLQuantizationType(type_id),
        )
        total += -(-nbytes // align) * align
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    with open(path, "r+b") as f:
        f.seek(0, 2)
        start = -(-f.tell() // align) * align
        f.truncate(start + total)  # sparse: nothing written
    return path


def _attn(
    i: int,
    n_embd: int,
    q: int,
    kv: int,
    out_type: int = Q4_K,
    v_type: int = Q6_K,
    bias: bool = False,
) -> list[Tensor]:
    t = [
        (f"blk.{i}.attn_norm.weight", (n_embd,), F32),
        (f"blk.{i}.attn_q.weight", (n_embd, q), Q4_K),
        (f"blk.{i}.attn_k.weight", (n_embd, kv), Q4_K),
        (f"blk.{i}.attn_v.weight", (n_embd, kv), v_type),
        (f"blk.{i}.attn_output.weight", (q, n_embd), out_type),
    ]
    if bias:
        t += [
            (f"blk.{i}.attn_q.bias", (q,), F32),
            (f"blk.{i}.attn_k.bias", (kv,), F32),
            (f"blk.{i}.attn_v.bias", (kv,), F32),
        ]
    return t


def _ffn(i: int, n_embd: int, n_ff: int) -> list[Tensor]:
    return [
        (f"blk.{i}.ffn_norm.weight", (n_embd,), F32),
        (f"blk.{i}.ffn_gate.weight", (n_embd, n_ff), Q4_K),
        (f"blk.{i}.ffn_up.weight", (n_embd, n_ff), Q4_K),
        (f"blk.{i}.ffn_down.weight", (n_ff, n_embd), Q6_K),
    ]


def dense_14b(path: Path) -> Path:
    n_layer, n_embd, n_ff, vocab = 48, 5120, 13824, 152064
    tensors: list[Tensor] = [("token_embd.weight", (n_embd, vocab), Q4_K)]
    for i in range(n_layer):
        tensors += _attn(i, n_embd, 40 * 128, 8 * 128, bias=True) + _ffn(i, n_embd, n_ff)
    tensors += [("output_norm.weight", (n_embd,), F32), ("output.weight", (n_embd, vocab), Q6_K)]
    kv = {
        ".context_length": 32768,
        ".block_count": n_layer,
        ".embedding_length": n_embd,
        ".feed_forward_length": n_ff,
        ".attention.head_count": 40,
        ".attention.head_count_kv": 8,
        ".rope.freq_base": 1000000.0,
        ".attention.layer_norm_rms_epsilon": 1e-6,
        "general.file_type": 15,
    }
    return write_shape(path, "qwen2", kv, tensors, vocab)


def moe_30b(path: Path) -> Path:
    n_layer, n_embd, n_exp, n_ff_exp, vocab = 48, 2048, 128, 768, 151936
    tensors: list[Tensor] = [("token_embd.weight", (n_embd, vocab), Q4_K)]
    for i in range(n_layer):
        tensors += _attn(i, n_embd, 32 * 128, 4 * 128)
        tensors += [
            (f"blk.{i}.attn_q_norm.weight", (128,), F32),
            (f"blk.{i}.attn_k_norm.weight", (128,), F32),
            (f"blk.{i}.ffn_norm.weight", (n_embd,), F32),
            (f"blk.{i}.ffn_gate_inp.weight", (n_embd, n_exp), F32),
            (f"blk.{i}.ffn_gate_exps.weight", (n_embd, n_ff_exp, n_exp), Q4_K),
            (f"blk.{i}.ffn_up_exps.weight", (n_embd, n_ff_exp, n_exp), Q4_K),
            (f"blk.{i}.ffn_down_exps.weight", (n_ff_exp, n_embd, n_exp), Q6_K),
        ]
    tensors += [("output_norm.weight", (n_embd,), F32), ("output.weight", (n_embd, vocab), Q6_K)]
    kv = {
        ".context_length": 40960,
        ".block_count": n_layer,
        ".embedding_length": n_embd,
        ".feed_forward_length": 6144,
        ".attention.head_count": 32,
        ".attention.head_count_kv": 4,
        ".attention.key_length": 128,
        ".attention.value_length": 128,
        ".expert_count": n_exp,
        ".expert_used_count": 8,
        ".expert_feed_forward_length": n_ff_exp,
        "general.file_type": 15,
    }
    return write_shape(path, "qwen3moe", kv, tensors, vocab)


def gemma3_4b(path: Path) -> Path:
    n_layer, n_embd, n_ff, vocab = 34, 2560, 10240, 262144
    tensors: list[Tensor] = [("token_embd.weight", (n_embd, vocab), Q6_K)]
    for i in range(n_layer):
        tensors += _attn(i, n_embd, 8 * 256, 4 * 256) + _ffn(i, n_embd, n_ff)
        tensors += [
            (f"blk.{i}.attn_q_norm.weight", (256,), F32),
            (f"blk.{i}.attn_k_norm.weight", (256,), F32),
            (f"blk.{i}.post_attention_norm.weight", (n_embd,), F32),
            (f"blk.{i}.post_ffw_norm.weight", (n_embd,), F32),
        ]
    tensors += [("output_norm.weight", (n_embd,), F32)]  # tied: no output.weight
    kv = {
        ".context_length": 131072,
        ".block_count": n_layer,
        ".embedding_length": n_embd,
        ".feed_forward_length": n_ff,
        ".attention.head_count": 8,
        ".attention.head_count_kv": 4,
        ".attention.key_length": 256,
        ".attention.value_length": 256,
        ".attention.sliding_window": 1024,
        "general.file_type": 15,
    }
    return write_shape(path, "gemma3", kv, tensors, vocab)


def deepseek_mla(path: Path) -> Path:
    n_layer, n_embd, vocab = 27, 2048, 102400
    n_head, rank, rope, nope, v_head = 16, 512, 64, 128, 128
    n_exp, n_ff_exp, n_ff = 64, 1408, 10944
    tensors: list[Tensor] = [("token_embd.weight", (n_embd, vocab), Q4_K)]
    for i in range(n_layer):
        tensors += [
            (f"blk.{i}.attn_norm.weight", (n_embd,), F32),
            (f"blk.{i}.attn_q.weight", (n_embd, n_head * (nope + rope)), Q4_K),
            (f"blk.{i}.attn_kv_a_mqa.weight", (n_embd, rank + rope), Q4_K),
            (f"blk.{i}.attn_kv_a_norm.weight", (rank,), F32),
            (f"blk.{i}.attn_k_b.weight", (nope, rank, n_head), Q8_0),
            (f"blk.{i}.attn_v_b.weight", (rank, v_head, n_head), Q8_0),
            (f"blk.{i}.attn_output.weight", (n_head * v_head, n_embd), Q4_K),
            (f"blk.{i}.ffn_norm.weight", (n_embd,), F32),
        ]
        if i == 0:
            tensors += _ffn(i, n_embd, n_ff)[1:]
        else:
            tensors += [
                (f"blk.{i}.ffn_gate_inp.weight", (n_embd, n_exp), F32),
                (f"blk.{i}.ffn_gate_exps.weight", (n_embd, n_ff_exp, n_exp), Q4_K),
                (f"blk.{i}.ffn_up_exps.weight", (n_embd, n_ff_exp, n_exp), Q4_K),
                (f"blk.{i}.ffn_down_exps.weight", (n_ff_exp, n_embd, n_exp), Q6_K),
                (f"blk.{i}.ffn_gate_shexp.weight", (n_embd, 2 * n_ff_exp), Q4_K),
                (f"blk.{i}.ffn_up_shexp.weight", (n_embd, 2 * n_ff_exp), Q4_K),
                (f"blk.{i}.ffn_down_shexp.weight", (2 * n_ff_exp, n_embd), Q6_K),
            ]
    tensors += [("output_norm.weight", (n_embd,), F32), ("output.weight", (n_embd, vocab), Q6_K)]
    kv = {
        ".context_length": 163840,
        ".block_count": n_layer,
        ".embedding_length": n_embd,
        ".feed_forward_length": n_ff,
        ".attention.head_count": n_head,
        ".attention.head_count_kv": 1,
        ".attention.key_length": rank + rope,
        ".attention.value_length": rank,
        ".attention.key_length_mla": nope + rope,
        ".attention.value_length_mla": v_head,
        ".attention.kv_lora_rank": rank,
        ".rope.dimension_count": rope,
        ".expert_count": n_exp,
        ".expert_used_count": 6,
        ".expert_feed_forward_length": n_ff_exp,
        ".expert_shared_count": 2,
        ".leading_dense_block_count": 1,
        "general.file_type": 15,
    }
    return write_shape(path, "deepseek2", kv, tensors, vocab)


def _mamba_layer(i: int, n_embd: int, d_inner: int, d_state: int, n_head: int) -> list[Tensor]:
    conv = d_inner + 2 * d_state
    return [
        (f"blk.{i}.attn_norm.weight", (n_embd,), F32),
        (f"blk.{i}.ssm_in.weight", (n_embd, 2 * d_inner + 2 * d_state + n_head), Q8_0),
        (f"blk.{i}.ssm_conv1d.weight", (4, conv), F32),
        (f"blk.{i}.ssm_conv1d.bias", (conv,), F32),
        (f"blk.{i}.ssm_dt.bias", (n_head,), F32),
        (f"blk.{i}.ssm_a", (1, n_head), F32),
        (f"blk.{i}.ssm_d", (1, n_head), F32),
        (f"blk.{i}.ssm_norm.weight", (d_inner,), F32),
        (f"blk.{i}.ssm_out.weight", (d_inner, n_embd), Q8_0),
    ]


def mamba2(path: Path) -> Path:
    n_layer, n_embd, d_inner, d_state, vocab = 64, 2560, 5120, 128, 50288
    tensors: list[Tensor] = [("token_embd.weight", (n_embd, vocab), Q8_0)]
    for i in range(n_layer):
        tensors += _mamba_layer(i, n_embd, d_inner, d_state, 80)
    tensors += [("output_norm.weight", (n_embd,), F32)]
    kv = {
        ".context_length": 1048576,
        ".block_count": n_layer,
        ".embedding_length": n_embd,
        ".feed_forward_length": 0,
        ".attention.head_count": 0,
        ".ssm.conv_kernel": 4,
        ".ssm.inner_size": d_inner,
        ".ssm.state_size": d_state,
        ".ssm.time_step_rank": 80,
        ".ssm.group_count": 1,
        "general.file_type": 7,
    }
    return write_shape(path, "mamba2", kv, tensors, vocab)


def hybrid_jamba(path: Path) -> Path:
    n_layer, n_embd, d_inner, d_state, vocab, n_ff = 16, 2048, 4096, 16, 65536, 8192
    heads_kv = [8 if i % 8 == 4 else 0 for i in range(n_layer)]
    tensors: list[Tensor] = [("token_embd.weight", (n_embd, vocab), Q8_0)]
    for i in range(n_layer):
        if heads_kv[i]:
            tensors += _attn(i, n_embd, 32 * 64, 8 * 64)
        else:
            tensors += _mamba_layer(i, n_embd, d_inner, d_state, 64)
        tensors += _ffn(i, n_embd, n_ff)
    tensors += [("output_norm.weight", (n_embd,), F32), ("output.weight", (n_embd, vocab), Q8_0)]
    kv = {
        ".context_length": 262144,
        ".block_count": n_layer,
        ".embedding_length": n_embd,
        ".feed_forward_length": n_ff,
        ".attention.head_count": 32,
        ".attention.head_count_kv": heads_kv,
        ".ssm.conv_kernel": 4,
        ".ssm.inner_size": d_inner,
        ".ssm.state_size": d_state,
        ".ssm.time_step_rank": 128,
        "general.file_type": 7,
    }
    return write_shape(path, "jamba", kv, tensors, vocab)


SHAPES = {
    "dense_14b": dense_14b,
    "moe_30b": moe_30b,
    "gemma3_4b": gemma3_4b,
    "deepseek_mla": deepseek_mla,
    "mamba2": mamba2,
    "hybrid_jamba": hybrid_jamba,
}
