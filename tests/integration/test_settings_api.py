"""GET/PUT /api/v1/settings against a real daemon, and the config.toml writer itself.

The daemon of the ``daemon`` fixture gets the fast supervision knobs and the port range
from CORRAL_* variables (tests/conftest.py), so those keys show ``source: env``.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from corral.api.settings import KNOBS
from corral.settings import edit_config
from tests.conftest import DaemonProcess
from tests.fakes.fake_hub import FakeHub
from tests.fakes.fake_releases import FakeReleases
from tests.integration.conftest import api, assert_error

EDITABLE = {
    "idle_ttl",
    "router_max_instances",
    "router_memory_budget",
    "router_queue_limit",
    "router_queue_timeout",
    "port_range",
    "probe_interval",
    "probe_timeout",
    "probe_failures",
    "load_timeout",
    "stop_timeout",
    "backoff_initial",
    "backoff_max",
    "crash_limit",
    "crash_window",
    "log_max_bytes",
    "log_backups",
    "hf_endpoint",
    "releases_url",
    "fit_devices",
    "fit_margin_mib",
    "ollama_port",
    "node_poll_interval",
}
TOKEN = "hf_very_secret_token_123"
CONFIG_TEXT = f'# my corral settings\nhf_token = "{TOKEN}"\nidle_ttl = 900  # 15 minutes\n'


@pytest.fixture
def configured(daemon_env):
    """A daemon started with a hand-written config.toml (a comment, a token, idle_ttl)."""
    path = Path(daemon_env["CORRAL_HOME"]) / "config.toml"
    path.write_text(CONFIG_TEXT)
    d = DaemonProcess(daemon_env).start()
    try:
        yield d
    finally:
        d.stop()


def assert_has(entry: dict, want: dict) -> None:
    """``entry`` holds every key of ``want`` with that value (and may hold more)."""
    assert {k: entry.get(k, "<missing>") for k in want} == want, entry


def config_of(d) -> Path:
    return Path(d.env["CORRAL_HOME"]) / "config.toml"


def settings_of(d) -> dict:
    status, body = api(d, "GET", "/api/v1/settings")
    assert status == 200, (status, body)
    return body["settings"]


def put(d, changes: dict) -> dict:
    status, body = api(d, "PUT", "/api/v1/settings", changes)
    assert status == 200, (status, body)
    return body


# --------------------------------------------------------------------------- GET


def test_get_shows_value_default_source_and_hides_secrets(configured):
    status, raw = api(configured, "GET", "/api/v1/settings")
    assert status == 200
    assert TOKEN not in str(raw)
    assert raw["config_path"] == str(config_of(configured))
    s = raw["settings"]
    assert {k for k, v in s.items() if v["editable"]} == EDITABLE
    assert_has(
        s["idle_ttl"],
        {
            "value": 900.0,
            "default": 1800.0,
            "source": "config",
            "env": "CORRAL_IDLE_TTL",
            "type": "float",
            "applies": "live",
            "min": 0,
        },
    )
    assert s["probe_interval"]["source"] == "env" and s["probe_interval"]["value"] == 0.2
    assert s["port_range"]["source"] == "env"
    assert_has(
        s["crash_limit"], {"value": 5, "default": 5, "source": "default", "type": "int", "min": 1}
    )
    assert_has(
        s["hf_token"],
        {
            "value": None,
            "default": None,
            "set": True,
            "secret": True,
            "editable": False,
            "source": "config",
        },
    )
    assert_has(s["api_key"], {"value": None, "set": False, "secret": True, "source": "default"})
    for name, entry in s.items():
        assert entry["applies"] in ("live", "restart"), name
        assert entry["source"] in ("env", "config", "default"), name


# --------------------------------------------------------------------------- PUT


def test_put_writes_the_file_keeps_the_rest_and_applies_live(configured):
    with FakeHub() as hub:
        hub.add_repo("acme/tiny-GGUF", files={"tiny-Q4_K_M.gguf": b"GGUF" + bytes(64)})
        answer = put(
            configured,
            {
                "idle_ttl": 600,
                "router_max_instances": 2,
                "hf_endpoint": hub.url,
                "port_range": " 21000-21099 ",
            },
        )
        assert answer["updated"] == [
            "hf_endpoint",
            "idle_ttl",
            "port_range",
            "router_max_instances",
        ]
        assert answer["overridden"] == {"port_range": "CORRAL_PORT_RANGE"}
        assert answer["applied"] == ["hf_endpoint", "idle_ttl", "router_max_instances"]
        assert answer["restart_required"] == []
        s = answer["settings"]
        assert s["idle_ttl"]["value"] == 600.0 and s["router_max_instances"]["value"] == 2
        assert s["port_range"]["source"] == "env"
        assert s["port_range"]["value"] == configured.env["CORRAL_PORT_RANGE"]  # env still wins

        # live: the next Hub call of the running daemon goes to the new endpoint
        status, found = api(configured, "GET", "/api/v1/hub/search?q=tiny")
        assert status == 200 and [m["id"] for m in found] == ["acme/tiny-GGUF"], found

    text = config_of(configured).read_text()
    assert text.startswith("# my corral settings\n") and f'hf_token = "{TOKEN}"' in text
    assert tomllib.loads(text) == {
        "hf_token": TOKEN,
        "idle_ttl": 600.0,
        "router_max_instances": 2,
        "hf_endpoint": hub.url,
        "port_range": "21000-21099",
    }
    assert settings_of(configured) == s


def test_releases_url_applies_to_the_next_build_job(daemon):
    with FakeReleases() as rel:
        put(daemon, {"releases_url": rel.url})
        status, view = api(daemon, "POST", "/api/v1/builds/update", {"backend": "cpu"})
        assert status == 202, view
        from tests.integration.test_build_jobs import ended

        final = ended(daemon, view["id"])
    assert final["state"] == "done" and final["build"]["build"] == "b6000", final


def test_an_env_var_overrides_what_put_writes(daemon):
    answer = put(daemon, {"probe_interval": 7})
    assert answer["overridden"] == {"probe_interval": "CORRAL_PROBE_INTERVAL"}
    assert answer["applied"] == []
    assert_has(answer["settings"]["probe_interval"], {"value": 0.2, "source": "env"})
    assert tomllib.loads(config_of(daemon).read_text()) == {"probe_interval": 7.0}


def test_null_restores_the_default(configured):
    answer = put(configured, {"idle_ttl": None})
    assert_has(answer["settings"]["idle_ttl"], {"value": 1800.0, "source": "default"})
    text = config_of(configured).read_text()
    assert tomllib.loads(text) == {"hf_token": TOKEN} and "# my corral settings" in text


def test_settings_survive_a_daemon_restart(daemon):
    put(daemon, {"crash_limit": 9, "log_backups": 0, "releases_url": "http://127.0.0.1:1/r"})
    daemon.stop()
    again = DaemonProcess(daemon.env).start()
    try:
        s = settings_of(again)
    finally:
        again.stop()
    assert_has(s["crash_limit"], {"value": 9, "source": "config"})
    assert_has(s["log_backups"], {"value": 0, "source": "config"})
    assert s["releases_url"]["value"] == "http://127.0.0.1:1/r"


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"colour": "blue"}, "unknown setting 'colour'"),
        ({"api_key": "x"}, "cannot be changed"),
        ({"hf_token": "x"}, "cannot be changed"),
        ({"crash_limit": True}, "must be a number"),
        ({"crash_limit": 2.5}, "whole number"),
        ({"crash_limit": 0}, ">= 1"),
        ({"probe_interval": 0}, "> 0"),
        ({"idle_ttl": -1}, ">= 0"),
        ({"idle_ttl": "soon"}, "must be a number"),
        ({"crash_limit": "5"}, "must be a number"),
        ({"idle_ttl": [1]}, "must be a number"),
        ({"load_timeout": 1e300}, "<="),
        ({"port_range": "9000-8000"}, "not within"),
        ({"port_range": "lots"}, "must look like"),
        ({"port_range": 8081}, "must be a string"),
        ({"hf_endpoint": "ftp://mirror"}, "http(s) URL"),
        ({"releases_url": "http://a\nb/r"}, "control characters"),
        ({"releases_url": "http://\udafd/r"}, "lone surrogates"),
        ({"hf_endpoint": "http://["}, "http(s) URL"),
        ({"hf_endpoint": "http://host:port"}, "http(s) URL"),
        ({"backoff_initial": 100}, "must not exceed backoff_max"),
        ({"idle_ttl": 5, "crash_window": "x" * 5000}, "crash_window"),
    ],
)
def test_bad_values_are_one_line_400s_and_change_nothing(configured, changes, words):
    before = settings_of(configured)
    status, payload = api(configured, "PUT", "/api/v1/settings", changes)
    err = assert_error(status, payload, 400, "bad_request")
    assert words in err["message"] and "\n" not in err["message"], err
    assert len(err["message"]) < 300
    assert config_of(configured).read_text() == CONFIG_TEXT
    assert settings_of(configured) == before


@pytest.mark.parametrize("raw", [b"[1, 2]", b"not json", b'"idle_ttl"'])
def test_a_body_that_is_no_object_is_a_400(daemon, raw):
    status, payload = api(daemon, "PUT", "/api/v1/settings", raw=raw)
    assert_error(status, payload, 400, "bad_request")
    assert not config_of(daemon).exists()


def test_a_config_file_broken_since_the_start_is_refused_not_overwritten(configured):
    config_of(configured).write_text("idle_ttl = = 3\n")
    status, payload = api(configured, "PUT", "/api/v1/settings", {"crash_limit": 3})
    err = assert_error(status, payload, 400)
    assert "not valid TOML" in err["message"]
    assert config_of(configured).read_text() == "idle_ttl = = 3\n"


# --------------------------------------------------------------------------- the TOML writer


@pytest.mark.parametrize(
    "text",
    [
        'quote " inside',
        "back\\slash and \\n not a newline",
        "C:\\Users\\me\\models",
        "ünïcødé ✓ 日本語 🦙",
        "tab\tnew\nline\rreturn",
        "ctrl \x00 \x1f \x7f",
        "",
        "'single'",
        '"""',
        "trailing backslash \\",
    ],
)
def test_strings_round_trip_through_tomllib(text):
    assert tomllib.loads(edit_config("", {"k": text})) == {"k": text}


@given(st.text().filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t)))
def test_any_string_round_trips(text):
    """Any text a setting may hold (lone surrogates are refused before the writer)."""
    assert tomllib.loads(edit_config("", {"k": text})) == {"k": text}


@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**63 - 1))
def test_numbers_round_trip_with_their_type(number):
    back = tomllib.loads(edit_config("", {"k": number}))["k"]
    assert back == number and type(back) is type(number)


def test_non_finite_numbers_are_refused():
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError):
            edit_config("", {"k": bad})


def test_edit_keeps_comments_and_order_replaces_appends_and_removes():
    text = "# head\nidle_ttl = 5 # old\n\n# tokens\nhf_token = 'x'\ncrash_limit = 3"
    out = edit_config(text, {"idle_ttl": 7.5, "probe_interval": 2.0, "crash_limit": None})
    assert out == (
        "# head\nidle_ttl = 7.5 # old\n\n# tokens\nhf_token = 'x'\nprobe_interval = 2.0\n"
    )


COMMENTED = """\
# corral settings, by hand
idle_ttl = 900   # 15 minutes

# the Hub
hf_endpoint = 'http://127.0.0.1:1/hub'  # a mirror
colour = "blue"  # a key corral does not know

[later]
# a table of some other tool
x = 1
"""


def test_a_commented_file_round_trips_with_only_the_changed_value_different():
    out = edit_config(COMMENTED, {"idle_ttl": 600.0})
    assert out == COMMENTED.replace("idle_ttl = 900 ", "idle_ttl = 600.0 ")
    assert edit_config(COMMENTED, {}) == COMMENTED


def test_a_new_key_goes_among_the_top_level_keys_not_into_a_table():
    out = edit_config(COMMENTED, {"crash_limit": 3})
    assert tomllib.loads(out) == {**tomllib.loads(COMMENTED), "crash_limit": 3}
    assert out.startswith(COMMENTED.split("[later]")[0].rstrip("\n"))


def test_put_keeps_comments_and_unknown_lines_of_config_toml(configured):
    path = config_of(configured)
    text = CONFIG_TEXT + "\n# kept\n[other_tool]\nx = 1  # theirs\n"
    path.write_text(text)
    put(configured, {"idle_ttl": 600})
    assert path.read_text() == text.replace("idle_ttl = 900 ", "idle_ttl = 600.0 ")


SCALARS = st.one_of(
    st.text().filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t)),
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
KEYS = st.sampled_from(["idle_ttl", "port_range", "hf_endpoint", "crash_limit", "x-y", "k2"])


@given(
    st.dictionaries(KEYS, SCALARS),
    st.dictionaries(KEYS, st.none() | SCALARS),
    st.lists(st.sampled_from(["# note", "", "   # indented = comment"])),
)
def test_any_edit_gives_exactly_the_updated_values(old, changes, comments):
    text = "\n".join(comments) + "\n" + edit_config("", old)
    out = edit_config(text, changes)
    want = {k: v for k, v in {**old, **changes}.items() if v is not None}
    assert tomllib.loads(out) == want
    assert all(c in out for c in comments if c)  # comments are kept


@pytest.mark.parametrize(
    "text",
    [
        '"idle_ttl" = 5\n',  # a quoted key
        'x = "\u2028idle_ttl = 3"\n',  # U+2028 inside a string is no line break
        'llama_server = """\nidle_ttl = 3\n"""\n',  # a key-like line inside a string
    ],
)
def test_edit_stays_exact_in_awkward_files(text):
    out = edit_config(text, {"idle_ttl": 7.5})
    assert tomllib.loads(out) == {**tomllib.loads(text), "idle_ttl": 7.5}


def test_every_knob_names_a_setting_with_a_type_the_writer_handles():
    from dataclasses import fields

    from corral.settings import Settings

    types = {f.name: f.type for f in fields(Settings)}
    assert set(KNOBS) <= set(types)
    assert {types[k] for k in KNOBS} <= {"int", "float", "str"}
