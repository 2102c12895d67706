"""Fast GGUF metadata reader and quantization names.

``read_metadata(path)`` parses the GGUF header, every key/value pair and the tensor-info
table of a model file without loading the tensor data or materialising large arrays (a
262k-token vocabulary is walked, not decoded). Reading the 253 MB Gemma 3 270M file takes
a few tens of milliseconds; gguf-py's ``GGUFReader`` needs tens of seconds for the same
file because it builds numpy views for every vocabulary entry.

Decisions (the GGUF spec is silent or permissive here):

* Only little-endian GGUF versions 2 and 3 are read. Version 1 (u32 counts) is refused as
  unsupported; a big-endian file is recognised and refused with a message saying so.
* Arrays with more than ``ARRAY_LIMIT`` items are returned as ``ArraySummary(type,
  length)``; smaller ones as lists. Nested arrays are lists of lists. Nesting deeper than
  ``MAX_DEPTH`` is refused.
* Strings are decoded as UTF-8 with ``errors="replace"``: llama.cpp does not validate
  UTF-8, so a stray byte in a metadata string must not make a loadable model unreadable.
* A duplicate key is refused, as llama.cpp refuses it.
* The tensor-info table is kept: each tensor's name, ggml type id, dims and data offset
  (:class:`TensorInfo`, in file order), so the memory estimator (``corral.fit``) can size
  every weight without touching the data. A file cut short inside the table is detected;
  the tensor data itself is only checked for a tensor whose offset lies beyond the end of
  the file (byte sizes per ggml type live in ``corral.fit.ggml_types``).
* Every problem is an :class:`~corral.errors.InvalidModelFile` with a one-line message
  ``"<path>: <what is wrong>"``; no other exception type escapes ``read_metadata``.
"""

from __future__ import annotations

import math
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from corral.errors import InvalidModelFile

__all__ = [
    "ARRAY_LIMIT",
    "FILE_TYPES",
    "ArraySummary",
    "GGUFInfo",
    "TensorInfo",
    "quant_from_filename",
    "quantization_name",
    "read_metadata",
]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
#: Arrays longer than this are summarised, not materialised.
ARRAY_LIMIT = 64
#: Maximum nesting of arrays inside arrays.
MAX_DEPTH = 8
#: GGML_MAX_DIMS in ggml.h.
MAX_TENSOR_DIMS = 4
DEFAULT_ALIGNMENT = 32

# GGUF value types (gguf.h ``enum gguf_type``).
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL = range(8)
T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = range(8, 13)

TYPE_NAMES = {
    T_UINT8: "uint8",
    T_INT8: "int8",
    T_UINT16: "uint16",
    T_INT16: "int16",
    T_UINT32: "uint32",
    T_INT32: "int32",
    T_FLOAT32: "float32",
    T_BOOL: "bool",
    T_STRING: "string",
    T_ARRAY: "array",
    T_UINT64: "uint64",
    T_INT64: "int64",
    T_FLOAT64: "float64",
}

#: Fixed-size value types: type -> struct format (little-endian).
_SCALAR_FMT = {
    T_UINT8: "<B",
    T_INT8: "<b",
    T_UINT16: "<H",
    T_INT16: "<h",
    T_UINT32: "<I",
    T_INT32: "<i",
    T_FLOAT32: "<f",
    T_BOOL: "<?",
    T_UINT64: "<Q",
    T_INT64: "<q",
    T_FLOAT64: "<d",
}
_SCALAR = {t: struct.Struct(f) for t, f in _SCALAR_FMT.items()}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor_count, kv_count
_TYPE_OFFSET = struct.Struct("<IQ")  # a tensor info's ggml type and data offset
#: Smallest encoding of one item of each type (bytes), for plausibility checks.
_MIN_SIZE = {t: s.size for t, s in _SCALAR.items()}
_MIN_SIZE[T_STRING] = 8
_MIN_SIZE[T_ARRAY] = 12
#: Smallest key/value pair: key length + type + 1-byte value.
_MIN_KV = 8 + 4 + 1
#: Smallest tensor info: name length + n_dims + one dim + type + offset.
_MIN_TENSOR_INFO = 8 + 4 + 8 + 4 + 8

#: llama.cpp ``enum llama_ftype`` (include/llama.h), the value of ``general.file_type``.
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}


def quantization_name(file_type: int | None) -> str | None:
    """The llama.cpp name of a ``general.file_type`` value, or None if unknown."""
    if file_type is None or isinstance(file_type, bool):
        return None
    return FILE_TYPES.get(file_type)


@dataclass(frozen=True)
class ArraySummary:
    """A metadata array too long to materialise: its element type name and length."""

    type: str
    length: int

    def to_dict(self) -> dict:
        return {"type": self.type, "length": self.length}


class TensorInfo(NamedTuple):
    """One entry of the tensor-info table: name, ggml type id, dims (ne0 first), offset.

    ``offset`` is relative to the start of the tensor data (``GGUFInfo.data_offset``), as
    in the file. A NamedTuple keeps the table cheap to build (thousands of entries for a
    MoE model) and immutable.
    """

    name: str
    type: int
    dims: tuple[int, ...]
    offset: int


@dataclass
class GGUFInfo:
    """What ``read_metadata`` found in a GGUF file."""

    path: str
    version: int
    tensor_count: int
    kv: dict[str, Any] = field(default_factory=dict)
    #: File offset where the tensor data starts (aligned).
    data_offset: int = 0
    file_size: int = 0
    #: The tensor-info table in file order.
    tensors: list[TensorInfo] = field(default_factory=list)

    # -- derived -------------------------------------------------------------

    def _get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        value = self.kv.get(key)
        if isinstance(value, bool) and kind is int:
            return None
        return value if isinstance(value, kind) else None

    def _arch_int(self, suffix: str) -> int | None:
        arch = self.architecture
        if not arch:
            return None
        return self._get(f"{arch}.{suffix}", int)

    @property
    def architecture(self) -> str | None:
        return self._get("general.architecture", str)

    @property
    def name(self) -> str | None:
        return self._get("general.name", str)

    @property
    def size_label(self) -> str | None:
        return self._get("general.size_label", str)

    @property
    def file_type(self) -> int | None:
        return self._get("general.file_type", int)

    @property
    def quantization(self) -> str | None:
        return quantization_name(self.file_type)

    @property
    def context_length(self) -> int | None:
        return self._arch_int("context_length")

    @property
    def block_count(self) -> int | None:
        return self._arch_int("block_count")

    @property
    def embedding_length(self) -> int | None:
        return self._arch_int("embedding_length")

    @property
    def head_count(self) -> int | None:
        return self._arch_int("attention.head_count")

    @property
    def head_count_kv(self) -> int | None:
        return self._arch_int("attention.head_count_kv")

    @property
    def has_chat_template(self) -> bool:
        return "tokenizer.chat_template" in self.kv

    @property
    def parameter_count(self) -> int | None:
        return self._get("general.parameter_count", int)

    def to_dict(self) -> dict:
        """JSON-friendly: summaries become dicts, non-finite floats become None."""
        return {
            "path": self.path,
            "version": self.version,
            "tensor_count": self.tensor_count,
            "file_size": self.file_size,
            "architecture": self.architecture,
            "name": self.name,
            "size_label": self.size_label,
            "file_type": self.file_type,
            "quantization": self.quantization,
            "context_length": self.context_length,
            "block_count": self.block_count,
            "embedding_length": self.embedding_length,
            "head_count": self.head_count,
            "head_count_kv": self.head_count_kv,
            "has_chat_template": self.has_chat_template,
            "parameter_count": self.parameter_count,
            "kv": {k: _jsonable(v) for k, v in self.kv.items()},
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, ArraySummary):
        return value.to_dict()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- reader -------------------------------------------------------------------------


class _Bad(Exception):
    """Internal: a parse problem; turned into InvalidModelFile with the path."""


class _Parser:
    def __init__(self, buf: Any, size: int) -> None:
        self.buf = buf
        self.size = size
        self.off = 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.off + n > self.size:
            left = self.size - self.off
            raise _Bad(f"truncated: {what} at offset {self.off} needs {n} bytes, {left} left")

    def u32(self, what: str) -> int:
        self.need(4, what)
        v = _U32.unpack_from(self.buf, self.off)[0]
        self.off += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        v = _U64.unpack_from(self.buf, self.off)[0]
        self.off += 8
        return v

    def string(self, what: str) -> str:
        n = self.u64(f"{what} length")
        left = self.size - self.off
        if n > left:
            raise _Bad(f"{what} length {n} at offset {self.off - 8} exceeds the {left} bytes left")
        start = self.off
        self.off += n
        return bytes(self.buf[start : self.off]).decode("utf-8", errors="replace")

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        sc = _SCALAR.get(vtype)
        if sc is not None:
            self.need(sc.size, what)
            v = sc.unpack_from(self.buf, self.off)[0]
            self.off += sc.size
            return v
        if vtype == T_STRING:
            return self.string(what)
        if vtype == T_ARRAY:
            return self.array(what, depth + 1)
        raise _Bad(f"{what}: unknown value type {vtype} at offset {self.off - 4}")

    def array_header(self, what: str, depth: int) -> tuple[int, int]:
        """Element type and length of an array, checked for plausibility."""
        if depth > MAX_DEPTH:
            raise _Bad(f"{what}: arrays nested deeper than {MAX_DEPTH}")
        itype = self.u32(f"{what} array type")
        if itype not in TYPE_NAMES:
            raise _Bad(f"{what}: unknown array element type {itype} at offset {self.off - 4}")
        n = self.u64(f"{what} array length")
        left = self.size - self.off
        if n * _MIN_SIZE[itype] > left:
            tname = TYPE_NAMES[itype]
            raise _Bad(f"{what}: array length {n} ({tname}) exceeds the {left} bytes left")
        return itype, n

    def array(self, what: str, depth: int) -> Any:
        itype, n = self.array_header(what, depth)
        if n <= ARRAY_LIMIT:
            return [self.value(itype, what, depth) for _ in range(n)]
        self.skip_items(itype, n, what, depth)
        return ArraySummary(TYPE_NAMES[itype], n)

    def skip_items(self, itype: int, n: int, what: str, depth: int) -> None:
        sc = _SCALAR.get(itype)
        if sc is not None:
            self.need(n * sc.size, what)
            self.off += n * sc.size
        elif itype == T_STRING:
            # The hot loop (262k vocabulary strings): no per-item objects beyond ints.
            # A length running past the end makes the next unpack_from raise struct.error
            # or leaves off > size; both are reported as truncation below.
            unpack = _U64.unpack_from
            buf = self.buf
            off = self.off
            try:
                for _ in range(n):
                    off += 8 + unpack(buf, off)[0]
            except struct.error:
                off = self.size + 1
            if off > self.size:
                raise _Bad(f"truncated: {what} string array runs past the end of the file")
            self.off = off
        else:  # nested arrays
            for _ in range(n):
                self.skip_array(what, depth + 1)

    def skip_array(self, what: str, depth: int) -> None:
        itype, n = self.array_header(what, depth)
        self.skip_items(itype, n, what, depth)

    def parse(self) -> tuple[int, int, dict[str, Any], int, list[TensorInfo]]:
        if self.size < 4:
            if self.size == 0:
                raise _Bad("empty file")
            raise _Bad(f"truncated: {self.size} bytes, not a GGUF file")
        magic = bytes(self.buf[0:4])
        if magic != GGUF_MAGIC:
            raise _Bad(f"not a GGUF file (magic {magic!r}, expected b'GGUF')")
        self.off = 4
        version = self.u32("version")
        if version & 0xFFFF == 0 and (version >> 24) in (1, 2, 3):
            raise _Bad(
                f"big-endian GGUF (version {version >> 24}) is not supported;"
                " only little-endian files are"
            )
        if version == 1:
            raise _Bad("GGUF version 1 is not supported (only versions 2 and 3)")
        if version not in SUPPORTED_VERSIONS:
            raise _Bad(f"unsupported GGUF version {version} (only versions 2 and 3)")
        tensor_count = self.u64("tensor count")
        kv_count = self.u64("metadata key/value count")
        left = self.size - self.off
        if kv_count * _MIN_KV > left:
            raise _Bad(f"key/value count {kv_count} is impossible for the {left} bytes left")
        if tensor_count * _MIN_TENSOR_INFO > left:
            raise _Bad(f"tensor count {tensor_count} is impossible for the {left} bytes left")
        kv: dict[str, Any] = {}
        for i in range(kv_count):
            key = self.string(f"key #{i}")
            shown = repr(key if len(key) <= 80 else key[:77] + "...")
            vtype = self.u32(f"type of {shown}")
            if vtype not in TYPE_NAMES:
                raise _Bad(f"key {shown}: unknown value type {vtype} at offset {self.off - 4}")
            value = self.value(vtype, f"value of {shown}")
            if key in kv:
                raise _Bad(f"duplicate key {shown}")
            kv[key] = value
        data_offset, tensors = self.tensor_infos(tensor_count, kv)
        return version, tensor_count, kv, data_offset, tensors

    def tensor_infos(self, count: int, kv: dict[str, Any]) -> tuple[int, list[TensorInfo]]:
        left = self.size - self.off
        if count * _MIN_TENSOR_INFO > left:
            raise _Bad(f"tensor count {count} is impossible for the {left} bytes left")
        # The hot loop of a big MoE header (tens of thousands of tensors): locals only,
        # one unpack per field group, no per-tensor method calls.
        buf, size, off = self.buf, self.size, self.off
        u64, u32 = _U64.unpack_from, _U32.unpack_from
        dims_fmt = {n: struct.Struct(f"<{n}Q").unpack_from for n in range(1, MAX_TENSOR_DIMS + 1)}
        type_off = _TYPE_OFFSET.unpack_from
        tensors: list[TensorInfo] = []
        append = tensors.append
        max_offset = -1
        for i in range(count):
            if off + 8 > size:
                self.off = off
                self.need(8, f"tensor info #{i} name length")
            n = u64(buf, off)[0]
            off += 8
            if n > size - off:
                raise _Bad(
                    f"tensor info #{i} name length {n} at offset {off - 8}"
                    f" exceeds the {size - off} bytes left"
                )
            name = bytes(buf[off : off + n]).decode("utf-8", errors="replace")
            off += n
            if off + 4 > size:
                self.off = off
                self.need(4, f"tensor info #{i} dimension count")
            n_dims = u32(buf, off)[0]
            off += 4
            if not 1 <= n_dims <= MAX_TENSOR_DIMS:
                raise _Bad(f"tensor info #{i}: {n_dims} dimensions (must be 1..{MAX_TENSOR_DIMS})")
            if off + 8 * n_dims + 12 > size:
                self.off = off
                self.need(8 * n_dims + 12, f"tensor info #{i}")
            dims = dims_fmt[n_dims](buf, off)
            off += 8 * n_dims
            ggml_type, t_off = type_off(buf, off)
            off += 12
            if t_off > max_offset:
                max_offset = t_off
            append(TensorInfo(name, ggml_type, dims, t_off))
        self.off = off
        alignment = kv.get("general.alignment", DEFAULT_ALIGNMENT)
        valid = isinstance(alignment, int) and not isinstance(alignment, bool)
        if not valid or alignment <= 0 or alignment & (alignment - 1):
            raise _Bad(f"general.alignment {alignment!r} is not a positive power of two")
        data_offset = -(-self.off // alignment) * alignment
        if count and data_offset + max_offset >= self.size:
            raise _Bad(
                f"truncated: tensor data at offset {data_offset + max_offset}"
                f" is beyond the end of the file ({self.size} bytes)"
            )
        return data_offset, tensors


def read_metadata(path: str | os.PathLike[str]) -> GGUFInfo:
    """Read the GGUF header, metadata and tensor-info table of ``path``.

    Raises :class:`InvalidModelFile` (and nothing else) when the file is missing,
    unreadable, not GGUF, an unsupported version, big-endian, truncated or corrupt.
    """
    shown = os.fspath(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            mm = None
            if size > 0:
                try:
                    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                except (OSError, ValueError):
                    mm = None
            try:
                buf = mm if mm is not None else f.read()
                size = len(buf)
                version, tensor_count, kv, data_offset, tensors = _Parser(buf, size).parse()
            finally:
                if mm is not None:
                    mm.close()
    except _Bad as exc:
        raise InvalidModelFile(f"{shown}: {exc}") from None
    except FileNotFoundError:
        raise InvalidModelFile(f"{shown}: no such file") from None
    except IsADirectoryError:
        raise InvalidModelFile(f"{shown}: is a directory, not a GGUF file") from None
    except (OSError, struct.error, ValueError, OverflowError, MemoryError) as exc:
        msg = str(exc).replace("\n", " ") or type(exc).__name__
        raise InvalidModelFile(f"{shown}: cannot read GGUF metadata: {msg}") from None
    return GGUFInfo(
        path=shown,
        version=version,
        tensor_count=tensor_count,
        kv=kv,
        data_offset=data_offset,
        file_size=size,
        tensors=tensors,
    )


# -- quantization names in file names ------------------------------------------------

_QUANT_RE = re.compile(
    r"(?<![a-z0-9])"
    r"(?P<ud>ud-)?"
    r"(?P<q>"
    r"(?:iq|tq|q)\d(?:_(?:k|xxs|xs|s|m|l|xl|nl|\d))*"
    r"|bf16|f16|fp16|f32|fp32"
    r"|mxfp4(?:_moe)?|nvfp4"
    r")"
    r"(?![a-z0-9])",
    re.IGNORECASE,
)


def quant_from_filename(name: str) -> str | None:
    """The quantization named in a (HuggingFace) file name, upper-cased, or None.

    ``"gemma-3-270m-it-Q4_K_M.gguf"`` → ``"Q4_K_M"``, ``"Qwen3-UD-Q4_K_XL.gguf"`` →
    ``"UD-Q4_K_XL"``, ``"model.bf16.gguf"`` → ``"BF16"``. The last match wins, so a
    directory named after the quant or a model name with a digit does not mislead it.
    """
    matches = list(_QUANT_RE.finditer(name))
    if not matches:
        return None
    m = matches[-1]
    return (("UD-" if m.group("ud") else "") + m.group("q")).upper()
