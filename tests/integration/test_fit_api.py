"""corral fit and POST /api/v1/fit end to end, with the real estimator on GGUF headers.

The headers are written by gguf-py's GGUFWriter in the shape of real models (a dense
14B and a 30B MoE, Q4_K/Q6_K) with a sparse data region: the file has its full size
and no data block is written. The daemon is a real ``corral serve`` with the fake
llama-server (for its catalog only: nothing is launched).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from tests.integration.conftest import api, assert_error  # noqa: E402

Q = gguf.GGMLQuantizationType
KEYS = {"fits", "flags", "context", "cache_type_k", "cache_type_v", "devices", "notes"}
DEVICE_KEYS = {
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


def write_header(
    path: Path,
    *,
    n_layer=48,
    n_embd=5120,
    n_head=40,
    n_kv=8,
    n_ff=13824,
    vocab=152064,
    ctx=131072,
    n_expert=0,
    n_ff_exp=768,
    n_used=8,
) -> Path:
    """A llama (or qwen3moe) GGUF header with every tensor listed, data left sparse."""
    arch = "qwen3moe" if n_expert else "llama"
    w = gguf.GGUFWriter(path, arch=arch)
    for key, value in (
        ("block_count", n_layer),
        ("context_length", ctx),
        ("embedding_length", n_embd),
        ("feed_forward_length", n_ff),
        ("attention.head_count", n_head),
        ("attention.head_count_kv", n_kv),
    ):
        w.add_uint32(f"{arch}.{key}", value)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    if n_expert:
        w.add_uint32(f"{arch}.expert_count", n_expert)
        w.add_uint32(f"{arch}.expert_used_count", n_used)
        w.add_uint32(f"{arch}.expert_feed_forward_length", n_ff_exp)
    hd = n_embd // n_head

    def tensor(name, dims, typ=Q.Q4_K):  # dims as ggml has them (ne0 first)
        elems = int(np.prod(dims))
        if typ == Q.F32:
            w.add_tensor_info(name, list(reversed(dims)), np.dtype(np.float32), elems * 4)
            return
        block, size = gguf.GGML_QUANT_SIZES[typ]
        byte_shape = list(reversed(dims))
        byte_shape[-1] = dims[0] // block * size
        w.add_tensor_info(
            name, byte_shape, np.dtype(np.uint8), elems // block * size, raw_dtype=typ
        )

    tensor("token_embd.weight", [n_embd, vocab], Q.Q6_K)
    for i in range(n_layer):
        p = f"blk.{i}."
        tensor(p + "attn_norm.weight", [n_embd], Q.F32)
        tensor(p + "attn_q.weight", [n_embd, n_head * hd])
        tensor(p + "attn_k.weight", [n_embd, n_kv * hd])
        tensor(p + "attn_v.weight", [n_embd, n_kv * hd], Q.Q6_K)
        tensor(p + "attn_output.weight", [n_head * hd, n_embd])
        tensor(p + "ffn_norm.weight", [n_embd], Q.F32)
        if n_expert:
            tensor(p + "ffn_gate_inp.weight", [n_embd, n_expert], Q.F32)
            tensor(p + "ffn_gate_exps.weight", [n_embd, n_ff_exp, n_expert])
            tensor(p + "ffn_up_exps.weight", [n_embd, n_ff_exp, n_expert])
            tensor(p + "ffn_down_exps.weight", [n_ff_exp, n_embd, n_expert], Q.Q6_K)
        else:
            tensor(p + "ffn_gate.weight", [n_embd, n_ff])
            tensor(p + "ffn_up.weight", [n_embd, n_ff])
            tensor(p + "ffn_down.weight", [n_ff, n_embd], Q.Q6_K)
    tensor("output_norm.weight", [n_embd], Q.F32)
    tensor("output.weight", [n_embd, vocab], Q.Q6_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    data = sum(ti.nbytes + 64 for ti in w.tensors[0].values())  # alignment slack
    with open(path, "r+b") as fh:
        fh.truncate(fh.seek(0, 2) + data)  # sparse: no block is written
    return path


@pytest.fixture
def dense(tmp_path) -> Path:
    return write_header(tmp_path / "dense-14b-Q4_K_M.gguf")


@pytest.fixture
def moe(tmp_path) -> Path:
    return write_header(
        tmp_path / "moe-30b-a3b-Q4_K_M.gguf",
        n_embd=2048,
        n_head=32,
        n_kv=4,
        n_ff=6144,
        ctx=262144,
        n_expert=128,
    )


def cli(env, *args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --------------------------------------------------------------------------- the CLI


def test_cli_fit_json_without_a_daemon(daemon_env, dense):
    cli(daemon_env, "fit", str(dense), "--devices", "none")  # the build's catalog, cached
    started = time.perf_counter()
    out = cli(daemon_env, "fit", str(dense), "--devices", "12GiB,8GiB,host=64GiB", "--json")
    wall = time.perf_counter() - started
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert set(plan) == KEYS
    assert plan["fits"] is True
    assert [d["id"] for d in plan["devices"]] == ["gpu0", "gpu1", "host"]
    assert [d["kind"] for d in plan["devices"]] == ["gpu", "gpu", "host"]
    for d in plan["devices"]:
        assert set(d) == DEVICE_KEYS
        assert d["used_bytes"] <= d["free_bytes"] - 1024**3  # the margin
    assert "--tensor-split" in plan["flags"]
    assert plan["context"] >= 4096
    print(f"corral fit --json, 48-layer header, end to end: {wall * 1000:.0f} ms")


def test_cli_fit_cpu_only_and_user_flags(daemon_env, dense):
    out = cli(
        daemon_env,
        "fit",
        str(dense),
        "-c",
        "8192",
        "-ctk",
        "q8_0",
        "--devices",
        "none,host=64GiB",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    (host,) = plan["devices"]
    assert host["id"] == "host" and host["kind"] == "host" and host["layers"] == 48
    assert plan["context"] == 8192 and plan["cache_type_k"] == "q8_0"
    flags = plan["flags"]
    assert flags[flags.index("--ctx-size") + 1] == "8192"
    assert flags[flags.index("--cache-type-k") + 1] == "q8_0"
    assert "--gpu-layers" not in flags


def test_cli_fit_table_and_what_does_not_fit(daemon_env, dense):
    out = cli(daemon_env, "fit", str(dense), "--devices", "none,host=4GiB")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["DEVICE", "LAYERS", "WEIGHTS", "KV", "COMPUTE", "USED/FREE"]
    assert "OVER" in out.stdout
    assert any(line.startswith("does not fit") for line in lines)
    assert any("does not fit by" in line and "on host" in line for line in lines)
    assert any(line.startswith("flags: ") for line in lines)


def test_cli_fit_moe_keeps_dense_layers_on_the_gpu(daemon_env, moe):
    out = cli(daemon_env, "fit", str(moe), "--devices", "12GiB,host=64GiB", "--json")
    plan = json.loads(out.stdout)
    assert plan["fits"], plan["notes"]
    flags = plan["flags"]
    n = int(flags[flags.index("--n-cpu-moe") + 1])
    assert 0 < n <= 48
    assert flags[flags.index("--gpu-layers") + 1] == "49"
    assert plan["devices"][0]["used_bytes"] <= plan["devices"][0]["free_bytes"] - 1024**3


def test_cli_fit_bad_input_is_one_line(daemon_env, dense, tmp_path):
    for args in (
        ["fit", str(dense), "--devices", "12XB"],
        ["fit", str(dense), "--no-such-flag"],
        ["fit", str(tmp_path / "missing.gguf")],
        ["fit", "nosuchmodel"],
        ["fit", str(dense), "--margin", "lots"],
    ):
        out = cli(daemon_env, *args)
        assert out.returncode != 0, args
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "Traceback" not in out.stderr, out.stderr


def test_cli_fit_does_not_import_fastapi(daemon_env, dense):
    code = (
        "import sys; from click.testing import CliRunner; from corral.cli import cli; "
        f"r = CliRunner().invoke(cli, ['fit', {str(dense)!r}, '--devices', 'none', "
        "'--json']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'huggingface_hub', 'rich') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=daemon_env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- the API


def test_api_fit_answers_what_the_cli_prints(daemon, dense):
    body = {"model": str(dense), "flags": ["-c", "16384"], "devices": "12GiB,8GiB,host=64GiB"}
    status, plan = api(daemon, "POST", "/api/v1/fit", body)
    assert status == 200, plan
    assert set(plan) == KEYS
    out = daemon.cli(
        "fit", str(dense), "-c", "16384", "--devices", "12GiB,8GiB,host=64GiB", "--json"
    )
    assert json.loads(out.stdout) == plan
    assert plan["context"] == 16384
    assert "--ctx-size 16384 kept as given" in plan["notes"]


def test_api_fit_margin_and_defaults_preset(daemon, dense):
    status, _ = api(daemon, "PUT", "/api/v1/presets/*", {"flags": ["-ngl", "20"]})
    if status == 405:
        status, _ = api(daemon, "POST", "/api/v1/presets", {"name": "*", "flags": ["-ngl", "20"]})
    assert status in (200, 201)
    status, plan = api(
        daemon,
        "POST",
        "/api/v1/fit",
        {"model": str(dense), "devices": "24GiB,host=64GiB", "margin_mib": 4096},
    )
    assert status == 200, plan
    flags = plan["flags"]
    assert flags[flags.index("--gpu-layers") + 1] == "20"  # the '*' defaults apply
    gpu0 = plan["devices"][0]
    assert gpu0["used_bytes"] <= gpu0["free_bytes"] - 4096 * 1024**2


def test_api_fit_bad_input(daemon, dense):
    for body, want in (
        ({"model": str(dense), "devices": "12XB"}, 400),
        ({"model": str(dense), "flags": ["--nope"]}, 400),
        ({"model": "nosuchmodel"}, 404),
        ({"model": str(dense), "margin_mib": -1}, 400),
    ):
        status, payload = api(daemon, "POST", "/api/v1/fit", body)
        assert_error(status, payload, want)
