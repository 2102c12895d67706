"""Fill in the middle through the router's ``/infill`` with the real llama-server.

The test gemma has no FIM tokens, so llama-server refuses ``/infill`` with a 501
("Infill is not supported by this model", see test_real_endpoints). The real server only
checks that the vocab names a prefix, a suffix and a middle token
(``post_infill`` in tools/server/server-context.cpp: ``llama_vocab_fim_pre/suf/mid``
must not be LLAMA_TOKEN_NULL; pad, rep and sep are optional), which llama-vocab.cpp reads
from ``tokenizer.ggml.fim_{pre,suf,mid}_token_id``. So a session fixture writes a copy
of the gemma GGUF into a pytest tmp dir with those three keys pointing at gemma's unused
control tokens ``<unused0..2>``; every other KV and every tensor is copied unchanged
(gguf-py's reader and writer, as its ``gguf_new_metadata`` script does), which the fixture
checks byte for byte. llama-server's load log then names the three tokens, and
``/infill`` answers 200 with the prompt it built around them.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import ollama
import pytest

from tests.conftest import running_daemon
from tests.integration.conftest import api

pytestmark = pytest.mark.real

#: llama.cpp's key -> the gemma token it is pointed at (control tokens gemma never uses)
FIM_TOKENS = {
    "tokenizer.ggml.fim_pre_token_id": "<unused0>",
    "tokenizer.ggml.fim_suf_token_id": "<unused1>",
    "tokenizer.ggml.fim_mid_token_id": "<unused2>",
}


@dataclass(frozen=True)
class FimModel:
    path: Path
    ids: dict[str, int]  # key -> token id
    seconds: float  # how long writing and checking the copy took


def _same_bytes(a, a_off: int, b, b_off: int, chunk: int = 1 << 24) -> bool:
    """Whether file ``a`` from ``a_off`` and file ``b`` from ``b_off`` hold the same bytes
    to their ends."""
    a.seek(a_off)
    b.seek(b_off)
    while True:
        x, y = a.read(chunk), b.read(chunk)
        if x != y:
            return False
        if not x:
            return True


def write_fim_copy(src: Path, dst: Path) -> dict[str, int]:
    """Copy the GGUF ``src`` to ``dst`` with FIM_TOKENS' keys added; return their ids.

    Then check the copy is the original plus those keys and nothing else: the header
    with three more KVs, the original KV bytes, the three new ones (uint32 each), the
    original tensor infos, and the original tensor data from the aligned data offset.
    """
    import gguf

    reader = gguf.GGUFReader(src)
    tokens = reader.get_field("tokenizer.ggml.tokens").contents()
    ids = {key: tokens.index(piece) for key, piece in FIM_TOKENS.items()}
    assert not any(key in reader.fields for key in ids), "the GGUF already names FIM tokens"

    arch = reader.get_field("general.architecture").contents()
    writer = gguf.GGUFWriter(dst, arch=arch, endianess=reader.endianess)  # adds the arch
    kvs = [f for f in reader.fields.values() if not f.name.startswith("GGUF.")]
    for field in kvs:
        if field.name == gguf.Keys.General.ARCHITECTURE:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    for key, token_id in ids.items():
        writer.add_key_value(key, token_id, gguf.GGUFValueType.UINT32)
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()

    # the byte layout of the copy, from the original's offsets
    assert reader.endianess == gguf.GGUFEndian.LITTLE and kvs[0].name == "general.architecture"
    kv_start, ti_start = kvs[0].offset, reader.tensors[0].field.offset
    last = reader.tensors[-1].field
    ti_end = last.offset + sum(p.nbytes for p in last.parts)
    new_kvs = b"".join(
        struct.pack("<Q", len(k)) + k.encode() + struct.pack("<II", 4, v)  # 4: UINT32
        for k, v in ids.items()
    )
    ti_copy = ti_start + len(new_kvs)
    data_copy = -(-(ti_copy + ti_end - ti_start) // reader.alignment) * reader.alignment
    with open(src, "rb") as a, open(dst, "rb") as b:
        head = a.read(ti_end)
        magic, version, n_tensors, n_kv = struct.unpack("<IIQQ", head[:kv_start])
        assert b.read(kv_start) == struct.pack("<IIQQ", magic, version, n_tensors, n_kv + 3)
        assert b.read(ti_start - kv_start) == head[kv_start:ti_start], "a KV changed"
        assert b.read(len(new_kvs)) == new_kvs
        assert b.read(ti_end - ti_start) == head[ti_start:ti_end], "a tensor info changed"
        assert b.read(data_copy - b.tell()).strip(b"\0") == b"", "not just padding"
        assert _same_bytes(a, reader.data_offset, b, data_copy), "the tensor data changed"
    return ids


@pytest.fixture(scope="session")
def fim_model(real_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """The gemma GGUF with FIM tokens, written once a session into a pytest tmp dir."""
    started = time.monotonic()
    path = tmp_path_factory.mktemp("fim") / "gemma-3-270m-fim.gguf"
    ids = write_fim_copy(real_model, path)
    yield FimModel(path, ids, time.monotonic() - started)
    path.unlink(missing_ok=True)  # ~250 MB: not left for pytest's tmp dir rotation


def test_infill_with_the_real_model_through_the_router(real_daemon_env, fim_model: FimModel):
    print(f"\nFIM copy written and checked in {fim_model.seconds:.1f} s: {fim_model.ids}")
    with running_daemon(real_daemon_env) as d:
        out = d.cli("import", str(fim_model.path), "--json")
        assert out.returncode == 0, out.stderr
        [model] = [m["name"] for m in json.loads(d.cli("ls", "--json").stdout)]

        prefix, suffix, prompt = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n", "a"
        body = {
            "model": model,
            "input_prefix": prefix,
            "input_suffix": suffix,
            "prompt": prompt,
            "n_predict": 6,
            "temperature": 0,
            "return_tokens": True,
        }
        started = time.monotonic()
        status, answer = api(d, "POST", "/infill", body, timeout=180)  # starts it on demand
        took = time.monotonic() - started
        print(f"/infill (start on demand included) in {took:.1f} s: {answer!r}")
        assert status == 200, answer
        assert isinstance(answer["content"], str)
        assert answer["tokens_predicted"] > 0
        assert len(answer["tokens"]) == answer["tokens_predicted"]  # return_tokens
        assert answer["tokens_evaluated"] > 0

        # routed by model: llama-server answers with its --alias, corral's name, and the
        # one instance is the router's, launched on the FIM copy
        assert answer["model"] == model
        [inst] = d.client.request("GET", "/api/v1/instances")
        assert inst["origin"] == "router" and inst["state"] == "ready"
        argv = inst["argv"]
        assert argv[argv.index("--alias") + 1] == model
        assert argv[argv.index("--model") + 1] == str(fim_model.path)

        # the copy loaded with the keys read: llama-server's vocab log names the tokens
        lines = d.client.request("GET", f"/api/v1/instances/{inst['name']}/logs?tail=100000")
        log = "\n".join(lines["lines"])
        for kind, key in zip(("PRE", "SUF", "MID"), FIM_TOKENS, strict=True):
            token_id, piece = fim_model.ids[key], FIM_TOKENS[key]
            assert f"FIM {kind} token         = {token_id} '{piece}'" in log, kind

        # the prompt the server built (its detokenized input, special pieces shown):
        # [BOS] FIM_PRE prefix prompt FIM_SUF suffix FIM_MID, the layout of
        # format_prompt_infill in tools/server/server-common.cpp
        pre, suf, mid = FIM_TOKENS.values()
        assert answer["prompt"] == f"<bos>{pre}{prefix}{prompt}{suf}{suffix}{mid}"

        # Ollama's generate with a suffix (Continue's autocomplete) is the same infill:
        # greedy, the same text as /infill asked directly with that prefix and suffix
        direct = dict(body, prompt="", input_prefix=prefix + prompt, return_tokens=False)
        status, same = api(d, "POST", "/infill", direct, timeout=120)
        assert status == 200, same
        with ollama.Client(host=f"http://127.0.0.1:{d.settings.port}", timeout=120) as c:
            got = c.generate(
                model=model,
                prompt=prefix + prompt,
                suffix=suffix,
                raw=True,
                options={"num_predict": 6, "temperature": 0},
            )
        print(f"Ollama generate with suffix: {got.response!r}; /infill: {same['content']!r}")
        assert got.response == same["content"] and got.eval_count == same["tokens_predicted"]
        assert got.done_reason == "length"
