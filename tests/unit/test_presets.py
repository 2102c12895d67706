"""Presets: validation, the store, merge order of a launch, YAML and llama.cpp INI formats.

Flags are checked against the catalog parsed from the captured help of the real
llama-server build (tests/fakes/llama-server-help.txt).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from corral import presets
from corral.builds.catalog import FlagCatalog
from corral.errors import Conflict, FlagValueError, NotFound, OwnedFlag, UnknownFlag, UsageError
from corral.presets import Preset
from corral.store import builds as builds_table
from corral.store.db import Store

HELP = Path(__file__).resolve().parents[1] / "fakes" / "llama-server-help.txt"


@pytest.fixture(scope="module")
def catalog() -> FlagCatalog:
    return FlagCatalog.parse(HELP.read_text(encoding="utf-8"))


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "corral.db")
    yield s
    s.close()


class FakeSupervisor:
    """What compose needs of the supervisor: the store, catalogs, the instances."""

    def __init__(self, store: Store, catalog: FlagCatalog, running: tuple[str, ...] = ()):
        self.store = store
        self._catalog = catalog
        self.running = running
        self.asked: list[tuple] = []

    async def catalog(self, binary=None, build_id=None) -> FlagCatalog:
        self.asked.append((binary, build_id))
        return self._catalog

    def list(self):
        return [SimpleNamespace(name=n) for n in self.running]


def compose(sup: FakeSupervisor, **kw):
    taken = [r.name for r in sup.list()]
    return asyncio.run(presets.compose(sup.store, sup.catalog, taken=taken, **kw))


def test_compose_names_a_preset_launch_past_the_names_taken(store, catalog):
    """Names in use beyond the store (``taken``) push a preset's launch to ``-2``."""
    presets.save(store, Preset("chat", model="m.gguf", flags=["-c", "2048"]))
    spec = compose(FakeSupervisor(store, catalog, ("chat",)), preset="chat", flags=["-ngl", "1"])
    assert spec.name == "chat-2"
    assert compose(FakeSupervisor(store, catalog), preset="chat").name == "chat"


def test_compose_refuses_an_unknown_request_field(store, catalog):
    with pytest.raises(TypeError):
        compose(FakeSupervisor(store, catalog), model="m.gguf", colour="blue")


def test_the_package_exports_what_its_callers_use():
    """router, supervisor, the API and the CLI import these from ``corral.presets``."""
    used = {"Preset", "compose", "compose_sync", "find", "list_all", "get", "save"}
    used |= {"save_many", "delete", "validate", "to_yaml", "from_yaml", "to_ini", "from_ini"}
    used |= {"preset_view", "keep_secrets", "DEFAULTS", "MAX_MODEL", "MAX_FLAGS", "MAX_ENV"}
    used |= {"MAX_ALIASES", "MAX_DESCRIPTION"}
    assert used <= set(presets.__all__)
    assert all(hasattr(presets, name) for name in presets.__all__)
    assert callable(presets.compose) and callable(presets.compose_sync)


def test_presets_import_no_supervisor():
    """compose needs a store, a catalog and names: the supervisor stays out (corral fit)."""
    import subprocess
    import sys

    code = (
        "import sys, corral.presets; "
        "print(any(m.startswith('corral.supervisor') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["chat", "a", "Qwen3.5-4B_q4", "*", "x" * 64])
def test_valid_names(name):
    assert presets.validate(Preset(name)).name == name


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "a/b", "a b", "**", "x" * 65, "ü"])
def test_invalid_names(name):
    with pytest.raises(UsageError, match="invalid preset name"):
        presets.validate(Preset(name))


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("restart", "sometimes", "restart must be one of"),
        ("idle_ttl", -1, "idle_ttl must be"),
        ("idle_ttl", float("nan"), "idle_ttl must be"),
        ("idle_ttl", True, "idle_ttl must be"),
        ("env", {"1X": "a"}, "invalid environment variable name"),
        ("env", {"A-B": "a"}, "invalid environment variable name"),
        ("env", {"A": ["x"]}, "needs a string value"),
        ("env", {f"V{i}": "1" for i in range(65)}, "too many environment variables"),
        ("flags", {"-c": 1}, "flags must be a list"),
        ("flags", ["-c", None], "flags must be strings"),
        ("flags", ["--metrics"] * 513, "too many flag tokens"),
        ("aliases", ["has space"], "invalid alias"),
        ("aliases", ["a,b"], "invalid alias"),
        ("aliases", ["*"], "invalid alias"),
        ("build", 0, "build must be"),
        ("build", True, "build must be"),
        ("model", "  ", "model must be"),
        ("pinned", "yes", "pinned must be true or false"),
        ("description", "d" * 1025, "description must be"),
    ],
)
def test_bad_fields_are_one_line_usage_errors(field, value, message):
    with pytest.raises(UsageError) as info:
        presets.validate(Preset("p", **{field: value}))
    assert message in info.value.message
    assert info.value.message.startswith("preset 'p': ")
    assert "\n" not in info.value.message


def test_defaults_may_not_name_a_model_or_aliases():
    for kw in ({"model": "m.gguf"}, {"aliases": ["x"]}):
        with pytest.raises(UsageError, match="may not name a model or aliases"):
            presets.validate(Preset("*", **kw))
    assert presets.validate(Preset("*", flags=["-c", "1"], build=2, env={"A": "1"})).build == 2


def test_flags_checked_against_the_catalog(catalog):
    did_you_mean = r"unknown flag '--ctx-sise' \(did you mean --ctx-size\?\)"
    with pytest.raises(UnknownFlag, match=did_you_mean):
        presets.validate(Preset("p", flags=["--ctx-sise", "1"]), catalog)
    with pytest.raises(FlagValueError):
        presets.validate(Preset("p", flags=["-fa", "sometimes"]), catalog)
    with pytest.raises(OwnedFlag, match="not as --model"):
        presets.validate(Preset("p", flags=["-m", "x.gguf"]), catalog)
    with pytest.raises(OwnedFlag, match="corral assigns ports"):
        presets.validate(Preset("p", flags=["--port", "8080"]), catalog)
    # tokens are kept as typed, and a flag string is split like a shell would
    assert presets.validate(Preset("p", flags="-c 8192 --alias 'a b'"), catalog).flags == [
        "-c",
        "8192",
        "--alias",
        "a b",
    ]
    # without a catalog only the shape is checked
    assert presets.validate(Preset("p", flags=["--ctx-sise", "1"])).flags == ["--ctx-sise", "1"]


def test_own_cli_options_are_not_llama_server_flags(catalog):
    """corral pulls its own options out of the llama-server flags by name."""
    from corral.cli import instances as cli_instances, presets as cli_presets

    run_own = cli_instances.RUN_VALUED | cli_instances.RUN_SWITCHES
    for name in ("--preset", "--env", "--idle-ttl", "--pin"):
        assert name in run_own and catalog.lookup(name) is None, name
    # `preset save` takes --model and --alias itself; llama-server's own go after `--`
    own = cli_presets.SAVE_VALUED | cli_presets.SAVE_SWITCHES
    assert {n for n in own if catalog.lookup(n)} == {"--model", "--alias"}


# -- the store ---------------------------------------------------------------------------


def test_save_get_list_replace_delete(store, catalog):
    presets.save(store, Preset("zeta", model="z.gguf"), catalog)
    presets.save(store, Preset("*", flags=["-c", "4096"]), catalog)
    saved = presets.save(
        store,
        Preset(
            "alpha", flags=["-ngl", "99"], env={"A": "1"}, restart="always", idle_ttl=0, pinned=True
        ),
        catalog,
    )
    assert saved.idle_ttl == 0.0
    assert [p.name for p in presets.list_all(store)] == ["*", "alpha", "zeta"]
    assert presets.get(store, "alpha") == saved
    presets.save(store, Preset("alpha", flags=["-c", "1"]), catalog)  # replaces all fields
    assert presets.get(store, "alpha") == Preset("alpha", flags=["-c", "1"])
    presets.delete(store, "alpha")
    with pytest.raises(NotFound, match="no preset named 'alpha'"):
        presets.get(store, "alpha")
    with pytest.raises(NotFound):
        presets.delete(store, "alpha")
    assert [p.name for p in presets.list_all(store)] == ["*", "zeta"]


def test_find_by_name_then_alias_never_the_defaults(store):
    presets.save(store, Preset("*", flags=["-c", "1"]))
    presets.save(store, Preset("chat", aliases=["gpt-4o", "talk"]))
    presets.save(store, Preset("code"))
    assert presets.find(store, "chat").name == "chat"
    assert presets.find(store, "talk").name == "chat"
    assert presets.find(store, "code").name == "code"
    assert presets.find(store, "*") is None
    assert presets.find(store, "nothing") is None


def test_alias_conflicts(store):
    presets.save(store, Preset("chat", aliases=["talk"]))
    with pytest.raises(Conflict, match="alias 'chat' of preset 'other' is already the name"):
        presets.save(store, Preset("other", aliases=["chat"]))
    with pytest.raises(Conflict, match="alias 'talk' of preset 'other' is already an alias"):
        presets.save(store, Preset("other", aliases=["talk"]))
    with pytest.raises(Conflict, match="'talk'"):  # a new name may not shadow an alias
        presets.save(store, Preset("talk"))
    # re-saving a preset with its own aliases (or its own name as one) is fine
    presets.save(store, Preset("chat", aliases=["talk", "chat"]))
    assert [p.name for p in presets.list_all(store)] == ["chat"]


def test_save_many_is_all_or_nothing(store, catalog):
    presets.save(store, Preset("keep", flags=["-c", "1"]))
    batch = [Preset("new1"), Preset("keep", flags=["-c", "2"])]
    with pytest.raises(Conflict, match="preset keep already exists"):
        presets.save_many(store, batch)
    with pytest.raises(UnknownFlag, match="preset 'bad'"):
        presets.save_many(
            store, [Preset("new1"), Preset("bad", flags=["--nope"])], catalog_for=lambda _b: catalog
        )
    with pytest.raises(UsageError, match="given twice"):
        presets.save_many(store, [Preset("x"), Preset("x")])
    with pytest.raises(Conflict):
        presets.save_many(store, [Preset("a", aliases=["z"]), Preset("b", aliases=["z"])])
    assert [p.name for p in presets.list_all(store)] == ["keep"]
    presets.save_many(store, batch, replace=True)
    assert presets.get(store, "keep").flags == ["-c", "2"]
    assert [p.name for p in presets.list_all(store)] == ["keep", "new1"]


def test_build_must_be_registered(store, tmp_path):
    with pytest.raises(UsageError, match="no build with id 7"):
        presets.save(store, Preset("p", build=7))
    rec = builds_table.add(store, str(tmp_path / "llama-server"), "1 (abc)")
    assert presets.save(store, Preset("p", build=rec.id)).build == rec.id


# -- compose: defaults < preset < explicit --------------------------------------------


def test_merge_order_defaults_preset_explicit(store, catalog):
    presets.save(
        store,
        Preset(
            "*",
            flags=["-c", "4096", "--jinja", "--lora", "a.gguf", "-t", "4"],
            env={"A": "star", "B": "star"},
            restart="never",
            idle_ttl=60,
        ),
    )
    presets.save(
        store,
        Preset(
            "chat",
            model="chat.gguf",
            flags=["-c", "8192", "--no-jinja", "--lora", "b.gguf"],
            env={"B": "preset", "C": "preset"},
            restart="always",
            aliases=["talk"],
        ),
    )
    sup = FakeSupervisor(store, catalog)
    spec = compose(
        sup,
        preset="chat",
        flags=["-c", "2048", "--lora", "a.gguf", "-ngl", "99"],
        env={"C": "explicit"},
    )
    # each flag keeps its first place; later values win; --no-jinja cancels --jinja;
    # --lora accumulates without duplicates
    assert spec.flags == [
        "--ctx-size",
        "2048",
        "--no-jinja",
        "--lora",
        "a.gguf",
        "--lora",
        "b.gguf",
        "--threads",
        "4",
        "--gpu-layers",
        "99",
    ]
    assert spec.env == {"A": "star", "B": "preset", "C": "explicit"}
    assert (spec.model, spec.preset, spec.restart, spec.idle_ttl) == (
        "chat.gguf",
        "chat",
        "always",
        60.0,
    )
    assert spec.aliases == ["talk"] and spec.name == "chat" and spec.origin == "user"
    # explicit arguments beat the preset
    spec = compose(
        sup,
        preset="chat",
        model="other.gguf",
        restart="on-failure",
        idle_ttl=0,
        pinned=True,
        aliases=["more"],
        name="mine",
        port=9000,
        origin="router",
        flags=["--jinja"],
    )
    assert (
        spec.model,
        spec.restart,
        spec.idle_ttl,
        spec.pinned,
        spec.name,
        spec.port,
        spec.origin,
    ) == ("other.gguf", "on-failure", 0, True, "mine", 9000, "router")
    assert spec.aliases == ["talk", "more"]
    assert "--jinja" in spec.flags and "--no-jinja" not in spec.flags


def test_defaults_apply_without_a_preset(store, catalog):
    presets.save(
        store, Preset("*", flags=["-c", "4096"], env={"CUDA_VISIBLE_DEVICES": "1"}, pinned=True)
    )
    spec = compose(FakeSupervisor(store, catalog), model="m.gguf", flags=["-ngl", "1"])
    assert spec.flags == ["--ctx-size", "4096", "--gpu-layers", "1"]
    assert spec.env == {"CUDA_VISIBLE_DEVICES": "1"}
    assert spec.pinned is True and spec.preset is None and spec.name is None
    assert spec.restart == "on-failure" and spec.idle_ttl is None
    spec = compose(FakeSupervisor(store, catalog), model="m.gguf", pinned=False)
    assert spec.pinned is False


def test_no_defaults_no_preset_passes_flags_through(store, catalog):
    spec = compose(FakeSupervisor(store, catalog), model="m.gguf", flags=["-c", "1", "--jinja"])
    assert spec.flags == ["--ctx-size", "1", "--jinja"]
    assert spec.env == {} and spec.aliases == [] and spec.pinned is False


def test_compose_errors(store, catalog):
    sup = FakeSupervisor(store, catalog)
    presets.save(store, Preset("nomodel", flags=["-c", "1"]))
    with pytest.raises(UsageError, match="preset 'nomodel' names no model: give MODEL"):
        compose(sup, preset="nomodel")
    with pytest.raises(UsageError, match="a model is required"):
        compose(sup)
    with pytest.raises(NotFound, match="no preset named 'ghost'"):
        compose(sup, preset="ghost", model="m.gguf")
    with pytest.raises(UsageError, match="defaults"):
        compose(sup, preset="*", model="m.gguf")
    with pytest.raises(UnknownFlag):
        compose(sup, model="m.gguf", flags=["--ctx-sise", "1"])
    with pytest.raises(UsageError, match="invalid alias"):
        compose(sup, model="m.gguf", aliases=["a b"])
    # a stored flag this build does not know names the preset it came from
    presets.save(store, Preset("old", model="m.gguf", flags=["--removed-flag"]))
    with pytest.raises(UnknownFlag, match="^preset 'old': unknown flag '--removed-flag'"):
        compose(sup, preset="old")


def test_the_build_comes_from_the_highest_layer(store, catalog, tmp_path):
    b1 = builds_table.add(store, str(tmp_path / "b1"), "1").id
    b2 = builds_table.add(store, str(tmp_path / "b2"), "2").id
    presets.save(store, Preset("*", build=b1))
    presets.save(store, Preset("p", model="m.gguf", build=b2))
    presets.save(store, Preset("q", model="m.gguf"))
    sup = FakeSupervisor(store, catalog)
    assert compose(sup, preset="p").build_id == b2
    assert compose(sup, preset="q").build_id == b1
    assert compose(sup, preset="p", build_id=b1).build_id == b1
    spec = compose(sup, preset="p", binary="/opt/llama-server")
    assert (spec.binary, spec.build_id) == ("/opt/llama-server", None)
    assert sup.asked == [(None, b2), (None, b1), (None, b1), ("/opt/llama-server", None)]


def test_instance_named_after_the_preset_unless_taken(store, catalog):
    presets.save(store, Preset("chat", model="m.gguf"))
    assert compose(FakeSupervisor(store, catalog, ("other",)), preset="chat").name == "chat"
    taken = FakeSupervisor(store, catalog, ("chat", "chat-2"))
    assert compose(taken, preset="chat").name == "chat-3"


def test_instances_of_the_store_are_taken_names_too(store, catalog):
    from corral.store import instances

    presets.save(store, Preset("chat", model="m.gguf"))
    instances.insert(store, instances.InstanceRecord("chat", "m.gguf", "/bin/x", 8081))
    assert compose(FakeSupervisor(store, catalog), preset="chat").name == "chat-2"


# -- YAML --------------------------------------------------------------------------------

FULL = [
    Preset("*", flags=["-c", "4096", "--jinja"], env={"CUDA_VISIBLE_DEVICES": "0"}),
    Preset(
        "chat",
        model="gemma-3-270m",
        build=2,
        flags=["-ngl", "99", "--alias", "a b", "--temp", "0.10", "-fa", "on"],
        env={"X": "01", "EMPTY": ""},
        restart="always",
        idle_ttl=0.0,
        aliases=["gpt-4o-mini", "org/model:Q4_K_M"],
        pinned=True,
        description="fast: 'quoted' # not a comment",
    ),
    Preset("plain"),
]


def test_yaml_round_trip_is_lossless():
    text = presets.to_yaml(FULL)
    assert presets.from_yaml(text) == FULL
    assert presets.to_yaml(presets.from_yaml(text)) == text
    assert text.startswith("presets:\n  '*':\n")


def test_yaml_hand_written():
    text = """
presets:
  '*': {flags: "-c 4096 --jinja"}
  chat:
    model: ./chat.gguf
    flags: [-ngl, 99]
    env: {CUDA_VISIBLE_DEVICES: 1}
    idle_ttl: 300
    aliases: talk
  empty:
"""
    star, chat, empty = presets.from_yaml(text)
    assert star.flags == ["-c", "4096", "--jinja"]
    assert chat == Preset(
        "chat",
        model="./chat.gguf",
        flags=["-ngl", "99"],
        env={"CUDA_VISIBLE_DEVICES": "1"},
        idle_ttl=300.0,
        aliases=["talk"],
    )
    assert empty == Preset("empty")
    assert presets.from_yaml("presets: {}") == []


@pytest.mark.parametrize(
    "text,message",
    [
        ("presets:\n  chat: {flags: [-c, 1]\n", "YAML line 3"),
        ("presets:\n\tchat: {}\n", "YAML line 2"),
        ("presets:\n  *: {}\n", "YAML line 2"),
        ("- a\n- b\n", "top-level key 'presets'"),
        ("presets: {}\nother: 1\n", "top-level key 'presets'"),
        ("presets: [a]\n", "'presets' must map"),
        (
            "presets:\n  chat: {flgs: [-c, 1]}\n",
            "preset 'chat': unknown key 'flgs' (did you mean flags?)",
        ),
        ("presets:\n  chat: 5\n", "preset 'chat': expected a mapping"),
        ("presets:\n  chat: {restart: sometimes}\n", "preset 'chat': restart must be"),
        ("presets:\n  chat: {env: {1A: x}}\n", "preset 'chat': invalid environment variable"),
        ("presets:\n  '*': {model: m.gguf}\n", "preset '*': the defaults"),
        ("presets:\n  bad/name: {}\n", "invalid preset name 'bad/name'"),
        ("presets:\n  1.5: {}\n", "preset names must be text"),
        ("presets:\n  [a]: {}\n", "YAML line 2: found unhashable key"),
    ],
)
def test_malformed_yaml_is_one_line(text, message):
    with pytest.raises(UsageError) as info:
        presets.from_yaml(text)
    assert message in info.value.message
    assert "\n" not in info.value.message


# -- INI (llama-server --models-preset) -----------------------------------------------

CANONICAL_INI = """\
; llama-server --models-preset file, written by corral

[*]
ctx-size = 4096
jinja = true

[chat]
model = /models/chat.gguf
alias = gpt-4o-mini,talk
n-gpu-layers = 99
flash-attn = on
lora = a.gguf,b.gguf
kv-offload = false
chat-template-kwargs = {"reasoning_effort": "high"}

[embed]
model = /models/embed.gguf
embeddings = true
"""


def test_ini_round_trip_is_lossless(catalog):
    parsed, warnings = presets.from_ini(CANONICAL_INI, catalog)
    assert warnings == []
    assert [p.name for p in parsed] == ["*", "chat", "embed"]
    chat = parsed[1]
    assert chat.model == "/models/chat.gguf" and chat.aliases == ["gpt-4o-mini", "talk"]
    assert chat.flags == [
        "--gpu-layers",
        "99",
        "--flash-attn",
        "on",
        "--lora",
        "a.gguf,b.gguf",
        "--no-kv-offload",
        "--chat-template-kwargs",
        '{"reasoning_effort": "high"}',
    ]
    text, warnings = presets.to_ini(parsed, catalog)
    assert (text, warnings) == (CANONICAL_INI, [])


def test_presets_to_ini_and_back_keep_what_ini_holds(catalog):
    original = [
        Preset("*", flags=["-c", "4096"]),
        Preset(
            "chat",
            model="/m/chat.gguf",
            flags=["-ngl", "99", "--no-jinja", "-fa", "on"],
            aliases=["talk"],
        ),
    ]
    text, warnings = presets.to_ini(original, catalog)
    assert warnings == []
    back, _ = presets.from_ini(text, catalog)
    # same presets, flags in their canonical spelling
    assert back == [
        Preset("*", flags=["--ctx-size", "4096"]),
        Preset(
            "chat",
            model="/m/chat.gguf",
            aliases=["talk"],
            flags=["--gpu-layers", "99", "--no-jinja", "--flash-attn", "on"],
        ),
    ]
    assert presets.to_ini(back, catalog)[0] == text


def test_ini_as_llama_cpp_writes_it(catalog):
    text = """version = 1

# global defaults
[*]
c = 8192
n-gpu-layers = -1     ; all layers
jinja = true

[hf-org/model-name-GGUF:Q4_K_M]
c = 16384
LLAMA_ARG_FLASH_ATTN = on
no-kv-offload = true
no-jinja = false
load-on-startup = true
stop-timeout = 30
model = /m/x.gguf
"""
    (star, hf), warnings = presets.from_ini(text, catalog)
    assert star == Preset("*", flags=["--ctx-size", "8192", "--gpu-layers", "-1", "--jinja"])
    assert hf == Preset(
        "hf-org-model-name-GGUF-Q4_K_M",
        model="/m/x.gguf",
        aliases=["hf-org/model-name-GGUF:Q4_K_M"],
        flags=["--ctx-size", "16384", "--flash-attn", "on", "--no-kv-offload", "--jinja"],
    )
    assert warnings == [
        "[hf-org/model-name-GGUF:Q4_K_M] imported as preset 'hf-org-model-name-GGUF-Q4_K_M' "
        "answering to 'hf-org/model-name-GGUF:Q4_K_M'",
        "INI line 14: [hf-org/model-name-GGUF:Q4_K_M] load-on-startup: a llama.cpp router "
        "option with no corral equivalent; ignored",
        "INI line 15: [hf-org/model-name-GGUF:Q4_K_M] stop-timeout: a llama.cpp router "
        "option with no corral equivalent; ignored",
    ]


def test_ini_keys_before_any_section_are_the_default_preset(catalog):
    parsed, _ = presets.from_ini("version = 1\nc = 512\n[*]\n", catalog)
    assert parsed == [Preset("default", flags=["--ctx-size", "512"]), Preset("*")]


def test_ini_false_switch_without_negation_is_dropped_and_port_ignored(catalog):
    (p,), warnings = presets.from_ini(
        "[p]\nembeddings = false\nport = 8080\nc = 1\nc = 2\n", catalog
    )
    assert p.flags == ["--ctx-size", "2"]
    assert warnings == [
        "INI line 3: [p] port: corral assigns ports itself; ignored",
        "INI line 5: [p] c: flag given twice in the section; the later value wins",
    ]


@pytest.mark.parametrize(
    "text,message",
    [
        (
            "[p]\nctx-sise = 1\n",
            "INI line 2: [p] ctx-sise: not a flag of this llama-server (did you mean ctx-size?)",
        ),
        ("[p]\nthis is not ini\n", "INI line 2: expected [section], key = value or a comment"),
        ("[p\nc = 1\n", "INI line 1: expected [section]"),
        ("[p]\n-c = 1\n", "INI line 2: expected"),
        ("[p]\nc = 1\n[q]\n[p]\n", "INI line 4: section [p] appears twice (first on line 1)"),
        ("[p]\njinja = maybe\n", "INI line 2: [p] jinja: a switch takes true or false"),
        (
            "[p]\ncontrol-vector-layer-range = 1 2\n",
            "INI line 2: [p] control-vector-layer-range: takes two values",
        ),
        (
            "[a/b]\n[a-b]\n",
            "INI line 2: section [a-b] would become preset 'a-b', like the section on line 1",
        ),
        ("[///]\n", "INI line 1: section [///] gives no usable preset name"),
        ("[*]\nmodel = m.gguf\n", "preset '*': the defaults"),
        ("[p]\nfa = sometimes\n", "preset 'p': invalid value 'sometimes' for --flash-attn"),
        ("[p]\nport = 1\nmodel = m.gguf\nm = x\nhost = 1.2.3.4\nfoo = 1\n", "INI line 6: [p] foo"),
    ],
)
def test_malformed_ini_names_the_line(catalog, text, message):
    with pytest.raises(UsageError) as info:
        presets.from_ini(text, catalog)
    assert message in info.value.message
    assert "\n" not in info.value.message


def test_ini_export_leaves_out_what_it_cannot_hold(catalog):
    p = Preset(
        "p",
        model="gemma",
        build=1,
        env={"A": "1"},
        restart="never",
        idle_ttl=0.0,
        pinned=True,
        description="d",
        flags=["--samplers", "top_k;temp", "--control-vector-layer-range", "1", "2", "-c", "64"],
    )
    text, warnings = presets.to_ini([p], catalog, model_path={"gemma": "/m/gemma.gguf"}.get)
    assert text.endswith("[p]\nmodel = /m/gemma.gguf\nctx-size = 64\n")
    assert warnings == [
        "preset 'p': samplers = 'top_k;temp' holds ';', which an INI value cannot hold; left out",
        "preset 'p': --control-vector-layer-range takes two values, which llama.cpp presets "
        "cannot hold; left out",
        "preset 'p': env, restart, idle_ttl, pinned, build, description cannot be written to "
        "INI; left out",
    ]
    # a model the index does not know is written as given
    text, _ = presets.to_ini([Preset("q", model="/abs/q.gguf")], catalog, model_path=lambda r: None)
    assert "model = /abs/q.gguf\n" in text
