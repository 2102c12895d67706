"""ggml tensor types: id, name, block size and bytes per block.

The table is ggml's own ``type_traits`` (``ggml/src/ggml.c``) with the block structs of
``ggml/src/ggml-common.h`` (``sizeof(block_q4_K)`` = 144, ...), for llama.cpp b11434.
Removed ids (4, 5, 31-33, 36-38) are absent: a GGUF naming one cannot be loaded by
llama.cpp either, and :func:`row_bytes` refuses it.

A row of ``ne0`` elements takes ``ne0 / block * bytes`` (ggml requires ``ne0`` to be a
multiple of the block size for quantized types: ``ggml_row_size``); a tensor takes that
times the product of its other dims (``ggml_nbytes`` for contiguous tensors).
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["GGML_TYPES", "KV_CACHE_TYPES", "GGMLType", "by_name", "row_bytes", "tensor_bytes"]


class GGMLType(NamedTuple):
    id: int
    name: str
    block: int
    bytes: int
    quantized: bool


_QK_K = 256

#: id -> type, as ggml.h ``enum ggml_type`` numbers them.
GGML_TYPES: dict[int, GGMLType] = {
    t.id: t
    for t in (
        GGMLType(0, "f32", 1, 4, False),
        GGMLType(1, "f16", 1, 2, False),
        GGMLType(2, "q4_0", 32, 18, True),
        GGMLType(3, "q4_1", 32, 20, True),
        GGMLType(6, "q5_0", 32, 22, True),
        GGMLType(7, "q5_1", 32, 24, True),
        GGMLType(8, "q8_0", 32, 34, True),
        GGMLType(9, "q8_1", 32, 36, True),
        GGMLType(10, "q2_K", _QK_K, 84, True),
        GGMLType(11, "q3_K", _QK_K, 110, True),
        GGMLType(12, "q4_K", _QK_K, 144, True),
        GGMLType(13, "q5_K", _QK_K, 176, True),
        GGMLType(14, "q6_K", _QK_K, 210, True),
        GGMLType(15, "q8_K", _QK_K, 292, True),
        GGMLType(16, "iq2_xxs", _QK_K, 66, True),
        GGMLType(17, "iq2_xs", _QK_K, 74, True),
        GGMLType(18, "iq3_xxs", _QK_K, 98, True),
        GGMLType(19, "iq1_s", _QK_K, 50, True),
        GGMLType(20, "iq4_nl", 32, 18, True),
        GGMLType(21, "iq3_s", _QK_K, 110, True),
        GGMLType(22, "iq2_s", _QK_K, 82, True),
        GGMLType(23, "iq4_xs", _QK_K, 136, True),
        GGMLType(24, "i8", 1, 1, False),
        GGMLType(25, "i16", 1, 2, False),
        GGMLType(26, "i32", 1, 4, False),
        GGMLType(27, "i64", 1, 8, False),
        GGMLType(28, "f64", 1, 8, False),
        GGMLType(29, "iq1_m", _QK_K, 56, True),
        GGMLType(30, "bf16", 1, 2, False),
        GGMLType(34, "tq1_0", _QK_K, 54, True),
        GGMLType(35, "tq2_0", _QK_K, 66, True),
        GGMLType(39, "mxfp4", 32, 17, True),
        GGMLType(40, "nvfp4", 64, 36, True),
        GGMLType(41, "q1_0", 128, 18, True),
        GGMLType(42, "q2_0", 64, 18, True),
    )
}

_BY_NAME = {t.name.lower(): t for t in GGML_TYPES.values()}

#: What ``--cache-type-k/-v`` accept in b11434 (``kv_cache_types`` in common/arg.cpp).
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


def by_name(name: str) -> GGMLType:
    """The type named ``name`` (case-insensitive: ``"q8_0"``, ``"Q4_K"``); KeyError if none."""
    return _BY_NAME[name.lower()]


def row_bytes(type_id: int, ne0: int) -> int:
    """Bytes of one row of ``ne0`` elements (``ggml_row_size``)."""
    t = GGML_TYPES.get(type_id)
    if t is None:
        raise KeyError(f"unknown ggml type {type_id}")
    return ne0 // t.block * t.bytes if ne0 % t.block == 0 else -(-ne0 // t.block) * t.bytes


def tensor_bytes(type_id: int, dims: tuple[int, ...]) -> int:
    """Bytes of a contiguous tensor of ``dims`` (ne0 first), as ``ggml_nbytes``."""
    return row_bytes(type_id, dims[0]) * math.prod(dims[1:])
