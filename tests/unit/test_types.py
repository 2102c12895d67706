"""corral.types: the shared names, policies, ranges and converters."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

from corral import types
from corral.errors import UsageError

names = st.from_regex(re.compile(types.NAME_PATTERN), fullmatch=True)


# -- names -----------------------------------------------------------------------------


@given(names)
def test_every_pattern_match_is_a_valid_name(name):
    assert types.check_name(name) == name
    assert len(name) <= types.NAME_MAX


@pytest.mark.parametrize("bad", ["", "-x", ".x", "a b", "a/b", "x" * 65, "é", None, 3])
def test_a_bad_name_is_one_line_naming_what_it_is(bad):
    with pytest.raises(UsageError, match="invalid preset name") as err:
        types.check_name(bad, "preset name")
    assert "\n" not in str(err.value)


def test_a_name_with_a_newline_is_refused_in_one_line():
    with pytest.raises(UsageError) as err:
        types.check_name("a\nb")
    assert "\n" not in str(err.value) and "invalid instance name" in str(err.value)


@given(st.text(max_size=200))
def test_name_from_any_text_is_a_valid_name_or_the_fallback(text):
    got = types.name_from(text, "instance")
    assert got == "instance" or types.check_name(got) == got


def test_name_from_keeps_what_a_name_may_hold():
    assert types.name_from("org/repo:Q4_K_M", "x") == "org-repo-Q4_K_M"
    assert types.name_from("--..", "model") == "model"
    assert types.name_from("a" * 63 + "-b", "x") == "a" * 63


def test_unique_name_counts_from_two():
    assert types.unique_name("chat", set()) == "chat"
    assert types.unique_name("chat", {"chat"}) == "chat-2"
    assert types.unique_name("chat", {"chat", "chat-2", "chat-3"}) == "chat-4"


def test_unique_name_cuts_the_base_to_keep_64():
    base = "m" * 64
    assert types.unique_name(base, {base}) == "m" * 62 + "-2"


@given(names, st.sets(names, max_size=30))
def test_unique_name_is_free_valid_and_starts_from_base(base, taken):
    taken = set(taken)
    got = types.unique_name(base, taken)
    assert got not in taken
    assert types.NAME_RE.fullmatch(got)
    if base not in taken:
        assert got == base
    else:
        assert re.fullmatch(r".*-\d+", got) and base.startswith(got.rsplit("-", 1)[0])


# -- restart policies and ports --------------------------------------------------------


def test_restart_policies_are_one_tuple_everywhere():
    from typing import get_args

    from corral.supervisor import states

    assert states.RESTART_POLICIES is types.RESTART_POLICIES
    assert get_args(types.Restart) == types.RESTART_POLICIES
    assert types.DEFAULT_RESTART in types.RESTART_POLICIES
    for policy in types.RESTART_POLICIES:
        assert types.check_restart(policy) == policy


@pytest.mark.parametrize("bad", ["sometimes", "", None, "ALWAYS"])
def test_a_bad_restart_policy_names_the_choices(bad):
    with pytest.raises(UsageError, match="restart must be one of on-failure, always, never"):
        types.check_restart(bad)


@given(st.integers(min_value=1, max_value=65535))
def test_every_port_in_range_passes_as_int_and_text(port):
    assert types.check_port(port) == port
    assert types.check_port(str(port)) == port


@pytest.mark.parametrize("bad", [0, -1, 65536, "http", "", True, 80.5, None])
def test_a_port_out_of_range_or_not_a_number_is_refused(bad):
    with pytest.raises(UsageError, match=r"port must be a port number \(1-65535\)"):
        types.check_port(bad)


def test_pydantic_takes_the_port_and_restart_types():
    from pydantic import BaseModel, ValidationError

    class Body(BaseModel):
        port: types.Port | None = None
        restart: types.Restart | None = None

    assert Body(port=8080, restart="always").port == 8080
    for bad in ({"port": 0}, {"port": 70000}, {"restart": "sometimes"}):
        with pytest.raises(ValidationError):
            Body(**bad)
    props = Body.model_json_schema()["properties"]
    port = next(s for s in props["port"]["anyOf"] if s.get("type") == "integer")
    assert (port["minimum"], port["maximum"]) == (1, 65535)
    restart = next(s for s in props["restart"]["anyOf"] if "enum" in s)
    assert restart["enum"] == list(types.RESTART_POLICIES)


@given(st.from_regex(re.compile(types.ENV_NAME_PATTERN), fullmatch=True))
def test_env_name_pattern_is_the_one_launchspec_checks(name):
    from corral.launchspec import check_env

    assert check_env({name: "1"}) == {name: "1"}


# -- files -----------------------------------------------------------------------------


def test_inside_follows_dots_and_links(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f.txt").write_text("x")
    outside = tmp_path / "secret"
    outside.write_text("s")
    (root / "link").symlink_to(outside)
    assert types.inside(root, "sub/f.txt") == (root / "sub" / "f.txt").resolve()
    assert types.inside(root, root / "sub" / "f.txt") == (root / "sub" / "f.txt").resolve()
    assert types.inside(root, "sub/../sub/f.txt") == (root / "sub" / "f.txt").resolve()
    for escaping in ("../secret", "link", str(outside), "sub/../../secret", "a\0b"):
        with pytest.raises(UsageError):
            types.inside(root, escaping)
        assert not types.is_inside(root, escaping)
    assert types.is_inside(root, "sub")


@given(st.lists(st.sampled_from(["a", "b", "..", "."]), max_size=6))
def test_inside_agrees_with_the_normalised_path(tmp_path_factory, parts):
    import os

    root = tmp_path_factory.getbasetemp()
    rel = os.path.join(*parts) if parts else "."
    normal = os.path.normpath(os.path.join(str(root.resolve()), rel))
    expected = normal == str(root.resolve()) or normal.startswith(str(root.resolve()) + os.sep)
    assert types.is_inside(root, rel) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("mmproj-model-f16.gguf", True),
        ("/x/MMPROJ-F16.GGUF", True),
        ("mmproj.bin", False),
        ("model-mmproj.gguf", False),
        ("/mmproj/model.gguf", False),
    ],
)
def test_is_mmproj_by_file_name(path, expected):
    assert types.is_mmproj(path) is expected


# -- scalars ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("true", True), ("Yes", True), ("on", True), ("0", False), ("off", False)],
)
def test_to_bool_reads_text_unless_strict(text, expected):
    assert types.to_bool(text, "x") is expected
    with pytest.raises(UsageError, match="x must be true or false"):
        types.to_bool(text, "x", strict=True)


def test_to_bool_refuses_other_text():
    with pytest.raises(UsageError, match="pinned must be true or false, got 'maybe'"):
        types.to_bool("maybe", "pinned")


@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_to_int_checks_the_range(n):
    try:
        got = types.to_int(str(n), "n", low=0, high=100)
    except UsageError as exc:
        assert str(exc) == (f"n must be >= 0, got {n}" if n < 0 else f"n must be <= 100, got {n}")
    else:
        assert 0 <= n <= 100 and got == n


@pytest.mark.parametrize(
    ("value", "words"),
    [(2.5, "n must be a whole number, got 2.5"), ("x", "n must be a number, got 'x'")],
)
def test_to_int_tells_a_fraction_from_no_number(value, words):
    with pytest.raises(UsageError, match=re.escape(words)):
        types.to_int(value, "n")


def test_to_int_strict_takes_no_text():
    assert types.to_int(5, "build", strict=True) == 5
    assert types.to_int(5.0, "build", strict=True) == 5
    for bad in ("5", True, None, [5]):
        with pytest.raises(UsageError, match="build must be a number"):
            types.to_int(bad, "build", strict=True)


def test_to_float_exclusive_bound():
    assert types.to_float(0.1, "t", above=0) == 0.1
    with pytest.raises(UsageError, match="t must be > 0, got 0"):
        types.to_float(0, "t", above=0)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_to_float_takes_finite_numbers_only(x):
    import math

    if math.isfinite(x):
        assert types.to_float(x, "f") == x
        assert types.to_float(repr(x), "f") == x
    else:
        with pytest.raises(UsageError):
            types.to_float(x, "f")


@pytest.mark.parametrize("bad", [-1, "-0.5", "soon", float("inf"), True])
def test_to_seconds_refuses_negative_and_non_numbers(bad):
    with pytest.raises(UsageError, match="idle_ttl must be a number of seconds >= 0"):
        types.to_seconds(bad, "idle_ttl")


def test_to_seconds_keeps_zero_and_fractions():
    assert types.to_seconds(0, "t") == 0.0
    assert types.to_seconds("2.5", "t") == 2.5


# -- served to the UI ------------------------------------------------------------------


def test_schema_has_the_shape_the_ui_reads():
    assert types.schema() == {
        "instance_name": {"pattern": types.NAME_PATTERN, "max_length": 64},
        "restart_policies": ["on-failure", "always", "never"],
        "default_restart": "on-failure",
        "port": {"min": 1, "max": 65535},
        "env_name": {"pattern": types.ENV_NAME_PATTERN},
    }


@pytest.fixture
def guarded(tmp_path):
    """The system routes behind the daemon's guard, with an API key required."""
    import types as std_types

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from corral.api.security import Guard
    from corral.api.system import router
    from corral.settings import load_settings
    from corral.store.db import Store

    settings = load_settings(home=tmp_path, api_key="crl_test-secret")
    app = FastAPI()
    app.include_router(router)
    store = Store(tmp_path / "c.db")
    app.state.daemon = std_types.SimpleNamespace(store=store, settings=settings)
    with TestClient(Guard(app, settings), base_url=settings.daemon_url) as client:
        yield client
    store.close()


def test_schema_is_served_with_the_system_routes_auth(guarded):
    for path in ("/api/v1/system", "/api/v1/schema"):
        assert guarded.get(path).status_code == 401
    ok = guarded.get("/api/v1/schema", headers={"Authorization": "Bearer crl_test-secret"})
    assert ok.status_code == 200 and ok.json() == types.schema()
    js = ok.json()["instance_name"]["pattern"]
    assert re.fullmatch(js, "chat-1") and not re.fullmatch(js, "-chat")


def test_types_is_a_cheap_leaf():
    """The CLI imports corral.types: it must pull in nothing beyond corral.errors."""
    code = (
        "import sys; import corral.types; "
        "print(sorted(m for m in sys.modules if m.startswith('corral') "
        "or m in ('pydantic', 'click', 'fastapi', 'annotated_types')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['corral', 'corral.errors', 'corral.types']"
