"""Secrets in command lines: what is masked, and how llama-server's key values are split."""

from __future__ import annotations

import json

from corral.redact import (
    MASK,
    first_api_key,
    first_key_line,
    redact_argv,
    redact_env,
    redact_pairs,
    secret_value,
)
from corral.store.instances import InstanceRecord, view


def test_argv_secret_values_are_masked_in_both_spellings():
    argv = [
        "llama-server",
        "--model",
        "m.gguf",
        "--api-key",
        "k1,k2",
        "--api-key=k3",
        "-hft",
        "hf_x",
        "--hf-token=hf_y",
        "--api-key-file",
        "/etc/keys",
        "-c",
        "4096",
    ]
    assert redact_argv(argv) == [
        "llama-server",
        "--model",
        "m.gguf",
        "--api-key",
        MASK,
        "--api-key=***",
        "-hft",
        MASK,
        "--hf-token=***",
        "--api-key-file",
        "/etc/keys",
        "-c",
        "4096",
    ]


def test_pairs_and_env_secret_values_are_masked():
    pairs = [["--api-key", "k"], ["--jinja", None], ["--api-key-file", "/k"], ["-c", "8"]]
    assert redact_pairs(pairs) == [
        ["--api-key", MASK],
        ["--jinja", None],
        ["--api-key-file", "/k"],
        ["-c", "8"],
    ]
    assert redact_env({"LLAMA_API_KEY": "k", "HF_TOKEN": "t", "CUDA_VISIBLE_DEVICES": "0"}) == {
        "LLAMA_API_KEY": MASK,
        "HF_TOKEN": MASK,
        "CUDA_VISIBLE_DEVICES": "0",
    }
    assert secret_value(pairs) == "k"


def test_api_key_masked_in_instance_view_but_kept_in_the_record():
    rec = InstanceRecord(
        name="keyed",
        model="/m.gguf",
        binary="/bin/llama-server",
        port=8100,
        flags=[["--api-key", "sekrit-123"], ["-c", "512"]],
        argv=[
            "/bin/llama-server",
            "--model",
            "/m.gguf",
            "--port",
            "8100",
            "--api-key",
            "sekrit-123",
            "-c",
            "512",
        ],
        env={"LLAMA_API_KEY": "envsekrit", "OMP_NUM_THREADS": "2"},
    )
    shown = view(rec)
    text = json.dumps(shown)
    assert "sekrit" not in text
    assert shown["flags"] == ["--api-key ***", "-c 512"]
    assert shown["argv"][-4:] == ["--api-key", "***", "-c", "512"]
    assert shown["env"] == {"LLAMA_API_KEY": MASK, "OMP_NUM_THREADS": "2"}
    assert rec.flags[0] == ["--api-key", "sekrit-123"]  # the router still needs it


def test_first_api_key_splits_like_llama_server_parse_csv_row():
    assert first_api_key("k1,k2") == "k1"
    assert first_api_key(",,k2") == "k2"  # empty fields are skipped
    assert first_api_key(" k1 ,k2") == " k1 "  # nothing is trimmed
    assert first_api_key('"a,b",c') == "a,b"  # quoted commas stay
    assert first_api_key('"a""b"') == 'a"b'  # "" is a quote inside quotes
    assert first_api_key('ab"c') == 'ab"c'  # a quote inside an unquoted field is literal
    assert first_api_key(",") is None


def test_first_key_line_skips_empty_and_comment_lines():
    assert first_key_line("# rotated 2024\n\nkey-one\nkey-two\n") == "key-one"
    assert first_key_line("key\r\n") == "key"
    assert first_key_line("# only a comment\n\n") is None
