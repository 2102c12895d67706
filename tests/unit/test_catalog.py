"""Flag catalog: parsing llama-server --help, normalising, merging, caching per build."""

from __future__ import annotations

import os
import re
import stat
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from corral.builds import catalog as catalog_mod
from corral.builds.catalog import Flag, FlagCatalog, load_catalog
from corral.errors import BinaryError, FlagValueError, UnknownFlag, UsageError

REAL_HELP = Path(__file__).resolve().parents[1] / "fakes" / "llama-server-help.txt"
CI_CACHE = Path(os.environ.get("CORRAL_CI_CACHE", Path.home() / ".cache" / "corral-ci"))
REAL_BINARY = Path(
    os.environ.get("CORRAL_TEST_LLAMA_SERVER")
    or next(iter(sorted(CI_CACHE.glob("home/bin/*-cpu/llama-server"))), CI_CACHE / "none")
)

# Written in llama.cpp's own layout (common_arg::to_string: help at column 40, names wider
# than 37 columns push the help to the next line), covering the shapes the parser must read.
SAMPLE_HELP = """\
----- common params -----

-h,    --help, --usage                  print usage and exit
-t,    --threads N                      number of CPU threads to use during generation
                                        (default: -1)
                                        (env: LLAMA_ARG_THREADS)
-c,    --ctx-size N                     size of the prompt context (default: 4096, 0 = loaded
                                        from model)
                                        (env: LLAMA_ARG_CTX_SIZE)
-fa,   --flash-attn [on|off|auto]       set Flash Attention use ('on', 'off', or 'auto',
                                        default: 'auto')
                                        (env: LLAMA_ARG_FLASH_ATTN)
--mmap, --no-mmap                       whether to memory-map model (default: enabled)
                                        (env: LLAMA_ARG_MMAP)
-kvo,  --kv-offload, -nkvo, --no-kv-offload
                                        whether to enable KV cache offloading (default:
                                        enabled)
--no-warmup                             skip warming up the model with an empty run
--rope-scaling {none,linear,yarn}       RoPE frequency scaling method
--cpu-strict <0|1>                      use strict CPU placement (default: 0)
--lora FNAME                            path to LoRA adapter (use comma-separated values to
                                        load multiple adapters)
--control-vector-layer-range START END
                                        layer range to apply the control vector(s) to, start
                                        and end inclusive
-hfd, -hfrd, --hf-repo-draft <user>/<model>[:quant]
                                        Same as --hf-repo, but for the draft model (default:
                                        unused)
-s,    --seed SEED                      RNG seed (default: -1, use random seed for -1)


----- sampling params -----

--temp N                                temperature (default: 0.80)
                                        (env: LLAMA_ARG_TEMPERATURE)


----- example-specific params -----

--embedding, --embeddings               restrict to only support embedding use case
-ts,   --tensor-split N0,N1,N2,...      fraction of the model to offload to each GPU,
                                        comma-separated list of proportions, e.g. 3,1
"""
SAMPLE_FLAG_COUNT = 16


@pytest.fixture(scope="module")
def sample() -> FlagCatalog:
    return FlagCatalog.parse(SAMPLE_HELP, version="1 (abc)")


@pytest.fixture(scope="module")
def real_text() -> str:
    if not REAL_HELP.exists():
        pytest.skip(f"{REAL_HELP} not saved yet (needs the real llama-server build)")
    return REAL_HELP.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def real(real_text: str) -> FlagCatalog:
    return FlagCatalog.parse(real_text)


def _flag_lines(text: str) -> list[str]:
    """Lines that start a flag: column 0, a dash, not a section header."""
    return [ln for ln in text.splitlines() if ln.startswith("-") and not ln.startswith("-----")]


# -- parsing: the shapes llama.cpp prints -----------------------------------------------


def test_sample_counts_and_sections(sample: FlagCatalog) -> None:
    assert len(sample.flags) == SAMPLE_FLAG_COUNT == len(_flag_lines(SAMPLE_HELP))
    assert sample.sections == ["common", "sampling", "server"]
    assert sample.lookup("--temp").section == "sampling"
    assert sample.lookup("-ts").section == "server"


def test_valued_flag_with_wrapped_help_and_env(sample: FlagCatalog) -> None:
    ctx = sample.lookup("-c")
    assert ctx is sample.lookup("--ctx-size")
    assert ctx.names == ("-c", "--ctx-size")
    assert (ctx.long, ctx.takes_value, ctx.value_hint, ctx.nargs) == ("--ctx-size", True, "N", 1)
    assert ctx.env == "LLAMA_ARG_CTX_SIZE"
    assert ctx.help == "size of the prompt context (default: 4096, 0 = loaded from model)"
    assert ctx.default == "4096, 0 = loaded from model"
    assert sample.lookup("--threads").default == "-1"


def test_choices_from_every_bracket_style(sample: FlagCatalog) -> None:
    assert sample.lookup("-fa").choices == ("on", "off", "auto")
    assert sample.lookup("-fa").default == "auto"  # quotes stripped
    assert sample.lookup("--rope-scaling").choices == ("none", "linear", "yarn")
    assert sample.lookup("--cpu-strict").choices == ("0", "1")
    # A pattern is not a list of choices.
    assert sample.lookup("-hfd").choices is None
    assert sample.lookup("-ts").choices is None


def test_names_wider_than_the_column_push_help_below(sample: FlagCatalog) -> None:
    hfd = sample.lookup("--hf-repo-draft")
    assert hfd.names == ("-hfd", "-hfrd", "--hf-repo-draft")
    assert hfd.value_hint == "<user>/<model>[:quant]"
    assert hfd.help.startswith("Same as --hf-repo, but for the draft model")
    kvo = sample.lookup("-nkvo")
    assert kvo.long == "--kv-offload"
    assert kvo.negations == ("-nkvo", "--no-kv-offload")
    assert kvo.negation == "--no-kv-offload"


def test_negations_only_where_printed_as_pairs(sample: FlagCatalog) -> None:
    mmap = sample.lookup("--no-mmap")
    assert mmap is sample.lookup("--mmap")
    assert (mmap.long, mmap.negations, mmap.takes_value) == ("--mmap", ("--no-mmap",), False)
    # A flag whose own name starts with --no- is a plain switch.
    warmup = sample.lookup("--no-warmup")
    assert (warmup.long, warmup.negations) == ("--no-warmup", ())


def test_two_value_flag(sample: FlagCatalog) -> None:
    rng = sample.lookup("--control-vector-layer-range")
    assert (rng.value_hint, rng.nargs) == ("START END", 2)
    pairs = sample.normalize(["--control-vector-layer-range", "2", "9", "-c", "1"])
    assert pairs == [("--control-vector-layer-range", "2 9"), ("--ctx-size", "1")]
    assert sample.to_argv(pairs) == ["--control-vector-layer-range", "2", "9", "--ctx-size", "1"]
    with pytest.raises(FlagValueError):
        sample.normalize(["--control-vector-layer-range", "2"])


def test_repeatable_heuristic(sample: FlagCatalog) -> None:
    assert sample.lookup("--lora").repeatable
    assert not sample.lookup("-ts").repeatable
    assert not sample.lookup("--mmap").repeatable


def test_dict_round_trip(sample: FlagCatalog) -> None:
    again = FlagCatalog.from_dict(sample.to_dict())
    assert again == sample
    assert again.version == "1 (abc)"
    assert again.lookup("--no-mmap").long == "--mmap"
    assert Flag.from_dict(sample.flags[3].to_dict()) == sample.flags[3]


def test_lookup_search_suggest(sample: FlagCatalog) -> None:
    assert sample.lookup("--ctx_size") is sample.lookup("-c")  # llama-server reads _ as -
    assert sample.lookup("ctx-size") is sample.lookup("-c")
    assert sample.lookup("--nope") is None
    assert [f.long for f in sample.search("FLASH")] == ["--flash-attn"]
    assert "--lora" in [f.long for f in sample.search("adapter")]
    assert sample.suggest("--ctx-sise")[0] == "--ctx-size"
    assert sample.suggest("--zzzzzzzzzz") == []


# -- the real help text -------------------------------------------------------------------


def test_real_every_flag_line_is_a_flag(real: FlagCatalog, real_text: str) -> None:
    lines = _flag_lines(real_text)
    assert len(real.flags) == len(lines)
    for line, flag in zip(lines, real.flags, strict=False):
        assert line.startswith(flag.names[0]), (line, flag.names)
        for name in flag.names:
            assert real.lookup(name) is flag, name


def test_real_sections(real: FlagCatalog, real_text: str) -> None:
    headers = re.findall(r"^----- (.+) -----$", real_text, flags=re.MULTILINE)
    assert len(real.sections) == len(headers) == 4
    assert real.sections == ["common", "sampling", "speculative", "server"]
    for section in real.sections:
        assert any(f.section == section for f in real.flags)


def test_real_specific_flags(real: FlagCatalog) -> None:
    ctx = real.lookup("-c")
    assert (ctx.long, ctx.takes_value, ctx.value_hint) == ("--ctx-size", True, "N")
    assert ctx.env == "LLAMA_ARG_CTX_SIZE"
    assert ctx.default is not None
    # "-ngl, --gpu-layers, --n-gpu-layers N": the first long spelling is canonical.
    ngl = real.lookup("--n-gpu-layers")
    assert (ngl, ngl.long, ngl.takes_value) == (real.lookup("-ngl"), "--gpu-layers", True)
    assert real.lookup("-fa").choices == ("on", "off", "auto")
    assert real.lookup("-fa").env == "LLAMA_ARG_FLASH_ATTN"
    # This build has no --mmap/--no-mmap (it has --load-mode MODE); same pair shape:
    kvo = real.lookup("--no-kv-offload")
    assert (kvo.long, kvo.takes_value) == ("--kv-offload", False)
    assert kvo.negations == ("-nkvo", "--no-kv-offload")
    op = real.lookup("--no-op-offload")
    assert (op.long, op.negations, op.default) == ("--op-offload", ("--no-op-offload",), "true")
    assert real.lookup("--no-warmup").long == "--warmup"
    ts = real.lookup("-ts")
    assert ts.long == "--tensor-split" and ts.takes_value
    assert real.lookup("--threads").env == "LLAMA_ARG_THREADS"
    assert real.lookup("--port").section == "server"
    assert real.lookup("--temp").section == "sampling"
    assert real.lookup("--lora").repeatable and real.lookup("--override-kv").repeatable
    assert real.lookup("-otd").repeatable and real.lookup("-ot").repeatable
    assert not real.lookup("--api-key").repeatable  # merging presets must not pile up keys


def test_real_help_is_complete(real: FlagCatalog) -> None:
    for flag in real.flags:
        assert flag.help, flag.long
        assert "(env:" not in flag.help, flag.long
        assert flag.long.startswith("-")
        if flag.takes_value:
            assert flag.nargs >= 1 and not flag.negations
        else:
            assert flag.nargs == 0 and flag.choices is None


def test_real_normalize_equivalences(real: FlagCatalog) -> None:
    args = ["-c", "4096", "-fa", "on", "--ctx-size=8192", "-ts", "12,8", "-ngl", "99"]
    assert real.normalize(args) == [
        ("--ctx-size", "4096"),
        ("--flash-attn", "on"),
        ("--ctx-size", "8192"),
        ("--tensor-split", "12,8"),
        ("--gpu-layers", "99"),
    ]


# -- normalize ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["-c", "4096"],
        ["--ctx-size", "4096"],
        ["--ctx-size=4096"],
        ["-c=4096"],
        ["--ctx_size", "4096"],
    ],
)
def test_spellings_normalise_alike(sample: FlagCatalog, args: list[str]) -> None:
    assert sample.normalize(args) == [("--ctx-size", "4096")]


def test_values_may_start_with_a_dash(sample: FlagCatalog) -> None:
    assert sample.normalize(["--seed", "-1", "-t", "--mmap"]) == [
        ("--seed", "-1"),
        ("--threads", "--mmap"),
    ]


def test_negations_keep_their_own_name(sample: FlagCatalog) -> None:
    assert sample.normalize(["--no-mmap", "-nkvo", "-kvo", "--mmap"]) == [
        ("--no-mmap", None),
        ("--no-kv-offload", None),
        ("--kv-offload", None),
        ("--mmap", None),
    ]


def test_choice_values(sample: FlagCatalog) -> None:
    # llama.cpp's synonym for "on" passes, as given.
    assert sample.normalize(["-fa", "enabled"]) == [("--flash-attn", "enabled")]
    assert sample.normalize(["--rope-scaling=yarn"]) == [("--rope-scaling", "yarn")]
    message = r"invalid value 'maybe' for -fa \(choose from on, off, auto\)"
    with pytest.raises(FlagValueError, match=message):
        sample.normalize(["-fa", "maybe"])
    with pytest.raises(FlagValueError):
        sample.normalize(["--cpu-strict", "2"])


def test_unknown_flag_suggests(sample: FlagCatalog) -> None:
    with pytest.raises(UnknownFlag) as err:
        sample.normalize(["--ctx-sise", "4096"])
    assert err.value.message == "unknown flag '--ctx-sise' (did you mean --ctx-size?)"
    with pytest.raises(UnknownFlag, match=r"^unknown flag '--qqqqqqqq'$"):
        sample.normalize(["--qqqqqqqq"])


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (["--mmap=yes"], FlagValueError, "--mmap is a switch and takes no value"),
        (["--mmap", "yes"], FlagValueError, "--mmap is a switch and takes no value"),
        (["-c"], FlagValueError, r"-c needs a value \(N\)"),
        (["model.gguf"], UsageError, "unexpected argument 'model.gguf'"),
        (["-c", "1", "extra"], UsageError, "unexpected argument 'extra'"),
        (["-"], UsageError, "unexpected argument '-'"),
    ],
)
def test_normalize_errors(sample: FlagCatalog, args: list[str], error: type, message: str) -> None:
    with pytest.raises(error, match=message) as err:
        sample.normalize(args)
    if error is UsageError:
        assert type(err.value) is UsageError


TOKENS = st.lists(
    st.one_of(
        st.sampled_from(["-c", "-fa", "on", "--mmap", "--no-mmap", "=", "-", "--", ""]),
        st.sampled_from([n for line in _flag_lines(SAMPLE_HELP) for n in line.split()]),
        st.text(max_size=12),
        st.text(max_size=12).map(lambda s: "--" + s),
    ),
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(TOKENS)
def test_normalize_raises_only_usage_errors(tokens: list[str]) -> None:
    catalog = FlagCatalog.parse(SAMPLE_HELP)
    try:
        pairs = catalog.normalize(tokens)
    except UsageError:
        return
    # Whatever normalises survives the trip back to argv unchanged.
    assert catalog.normalize(catalog.to_argv(pairs)) == pairs


# -- merge and to_argv --------------------------------------------------------------------


def test_merge_later_wins_in_first_seen_order(sample: FlagCatalog) -> None:
    base = sample.normalize(["-c", "4096", "-t", "4", "--mmap"])
    user = sample.normalize(["--threads", "8", "-fa", "on", "-c", "8192"])
    assert sample.merge(base, user) == [
        ("--ctx-size", "8192"),
        ("--threads", "8"),
        ("--mmap", None),
        ("--flash-attn", "on"),
    ]


def test_merge_negations_cancel(sample: FlagCatalog) -> None:
    assert sample.merge([("--mmap", None)], [("--no-mmap", None)]) == [("--no-mmap", None)]
    assert sample.merge([("--no-kv-offload", None), ("-c", "1")], [("-kvo", None)]) == [
        ("--kv-offload", None),
        ("--ctx-size", "1"),
    ]


def test_merge_repeatable_accumulates(sample: FlagCatalog) -> None:
    merged = sample.merge(
        [("--lora", "a.gguf"), ("-c", "1")],
        [("--lora", "b.gguf"), ("--lora", "a.gguf")],
    )
    assert merged == [("--lora", "a.gguf"), ("--lora", "b.gguf"), ("--ctx-size", "1")]


def test_merge_keeps_unknown_names(sample: FlagCatalog) -> None:
    assert sample.merge([("--future", "1")], [("--future", "2")]) == [("--future", "2")]


def test_to_argv_round_trip(sample: FlagCatalog) -> None:
    pairs = [("--ctx-size", "4096"), ("--no-mmap", None), ("--seed", "-1")]
    argv = FlagCatalog.to_argv(pairs)
    assert argv == ["--ctx-size", "4096", "--no-mmap", "--seed", "-1"]
    assert sample.normalize(argv) == pairs
    assert sample.to_argv(pairs) == argv


# -- load_catalog: run the binary once per build -----------------------------------------


def _fake_binary(tmp_path: Path, body: str) -> Path:
    """A shell script standing in for llama-server; every run appends a line to ./calls."""
    exe = tmp_path / "bin" / "llama-server"
    exe.parent.mkdir(exist_ok=True)
    exe.write_text('#!/bin/sh\necho "$1 $LD_LIBRARY_PATH" >> "$(dirname "$0")/calls"\n' + body)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def _calls(exe: Path) -> list[str]:
    calls = exe.parent / "calls"
    return calls.read_text().splitlines() if calls.exists() else []


@pytest.fixture
def fake_server(tmp_path: Path) -> Path:
    (tmp_path / "help.txt").write_text(SAMPLE_HELP)
    body = textwrap.dedent(
        f"""\
        case "$1" in
          --help) cat '{tmp_path / "help.txt"}' ;;
          --version) echo "version: 7000 (deadbee)" >&2; echo "built with cc" >&2 ;;
        esac
        """
    )
    return _fake_binary(tmp_path, body)


def test_load_runs_binary_then_hits_cache(tmp_path: Path, fake_server: Path) -> None:
    cache = tmp_path / "cache"
    first = load_catalog(fake_server, cache)
    assert len(first.flags) == SAMPLE_FLAG_COUNT
    assert first.version == "7000 (deadbee)"
    assert [c.split()[0] for c in _calls(fake_server)] == ["--help", "--version"]
    # The build's own directory comes first on the library path.
    assert _calls(fake_server)[0].split()[1].split(":")[0] == str(fake_server.parent)

    second = load_catalog(fake_server, cache)
    assert len(_calls(fake_server)) == 2  # not run again
    assert second == first
    assert len(list(cache.glob("flags-*.json"))) == 1


def test_cache_follows_the_binary(tmp_path: Path, fake_server: Path) -> None:
    cache = tmp_path / "cache"
    load_catalog(fake_server, cache)
    st_ = fake_server.stat()
    os.utime(fake_server, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000_000))
    load_catalog(fake_server, cache)
    assert len(_calls(fake_server)) == 4  # a rebuilt binary is parsed again


def test_damaged_cache_is_rebuilt(tmp_path: Path, fake_server: Path) -> None:
    cache = tmp_path / "cache"
    load_catalog(fake_server, cache)
    for f in cache.glob("flags-*.json"):
        f.write_text("{not json")
    assert len(load_catalog(fake_server, cache).flags) == SAMPLE_FLAG_COUNT
    assert len(_calls(fake_server)) == 4


def test_binary_without_flags(tmp_path: Path) -> None:
    body = 'echo "error while loading shared libraries: libllama.so" >&2\nexit 127\n'
    exe = _fake_binary(tmp_path, body)
    message = r"--help printed no flags \(error while loading shared libraries"
    with pytest.raises(BinaryError, match=message):
        load_catalog(exe, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("flags-*.json"))


def test_binary_missing_or_not_executable(tmp_path: Path) -> None:
    with pytest.raises(BinaryError, match="not found"):
        load_catalog(tmp_path / "nope", tmp_path / "cache")
    plain = tmp_path / "llama-server"
    plain.write_text("not a program")
    with pytest.raises(BinaryError, match="cannot run"):
        load_catalog(plain, tmp_path / "cache")


def test_binary_that_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_mod, "RUN_TIMEOUT", 0.5)
    exe = _fake_binary(tmp_path, "exec sleep 10\n")
    with pytest.raises(BinaryError, match=r"--help did not finish within 0.5 s"):
        load_catalog(exe, tmp_path / "cache")


def test_real_binary_matches_saved_help(tmp_path: Path, real: FlagCatalog) -> None:
    if not REAL_BINARY.exists():
        pytest.skip(f"no real llama-server at {REAL_BINARY} (make llama-server)")
    loaded = load_catalog(REAL_BINARY, tmp_path)
    assert loaded.flags == real.flags
    assert loaded.version  # e.g. "0.6.0-dev (build 0, commit unknown)"
