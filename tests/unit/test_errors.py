"""The one exception tree (corral.errors): every class is defined there, drawn in its
docstring, has a status, a code and an exit code, and survives the HTTP hop -- raised in
a real FastAPI app with the daemon's error handler, read back by the CLI's client, it is
the class of its code with that class's exit code."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest
from fastapi import FastAPI

import corral
from corral import errors
from corral.api.errors import install
from corral.client import Client, error_from_answer
from corral.settings import load_settings
from tests.serve_thread import serve_in_thread

TREE = errors.walk()


def _import_every_module() -> None:
    for info in pkgutil.walk_packages(corral.__path__, "corral."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


def _every_subclass(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _every_subclass(sub)
    return found


def test_every_corral_error_in_the_package_is_defined_in_errors():
    _import_every_module()
    elsewhere = {
        f"{c.__module__}.{c.__qualname__}"
        for c in _every_subclass(errors.CorralError)
        if c.__module__ != "corral.errors" and not c.__module__.startswith("tests.")
    }
    assert not elsewhere, f"define these in corral/errors.py: {sorted(elsewhere)}"
    assert set(TREE) == {errors.CorralError} | {
        c for c in _every_subclass(errors.CorralError) if c.__module__ == "corral.errors"
    }


@pytest.mark.parametrize("cls", TREE, ids=lambda c: c.__name__)
def test_every_class_has_a_status_a_code_an_exit_code_and_a_docstring(cls):
    assert isinstance(cls.status, int) and 400 <= cls.status <= 599
    assert re.fullmatch(r"[a-z][a-z0-9_]*", cls.code)
    assert isinstance(cls.exit_code, int) and 1 <= cls.exit_code <= 125
    assert cls.__doc__ and cls.__doc__.strip()
    exc = cls("message", detail="detail")  # how the client rebuilds one
    assert (exc.message, exc.detail) == ("message", "detail")


def test_a_code_names_one_class_and_any_other_with_it_refines_it():
    table = errors.by_code()
    assert set(table.values()) <= set(TREE)
    for cls in TREE:
        owner = table[cls.code]
        assert issubclass(cls, owner), f"{cls.__name__} reuses {owner.__name__}'s code"
    # Every class but a refinement owns its code.
    refinements = {c for c in TREE if table[c.code] is not c}
    assert refinements == {errors.ReleaseDigestMismatch}


def test_the_docstring_draws_every_class_under_its_parent_with_its_numbers():
    drawn = {}
    stack: list[type] = []
    for line in errors.__doc__.splitlines():
        m = re.match(r"^\s{4}([│├└─ ]*)([A-Z]\w+)\s+(\d{3})\s+(?:(\d+)\s+)?([a-z_]+)", line)
        if not m:
            continue
        prefix, name, status, exit_code, code = m.groups()
        cls = getattr(errors, name)
        depth = len(prefix) // 4
        del stack[depth:]
        assert cls.__bases__[0] is (stack[-1] if stack else Exception), name
        assert (int(status), code) == (cls.status, cls.code), name
        shown = int(exit_code) if exit_code else cls.__bases__[0].exit_code
        assert shown == cls.exit_code, name
        stack.append(cls)
        drawn[name] = cls
    assert set(drawn.values()) == set(TREE)


def _error_app() -> FastAPI:
    app = FastAPI()
    install(app)

    @app.get("/raise/{name}")
    async def raise_(name: str):
        raise getattr(errors, name)(f"{name} happened", detail="more lines")

    return app


@pytest.fixture(scope="module")
def error_daemon():
    with serve_in_thread(_error_app()) as port:
        yield port


@pytest.mark.parametrize("cls", TREE, ids=lambda c: c.__name__)
def test_every_error_survives_the_http_hop_with_its_exit_code(error_daemon, cls):
    client = Client(load_settings(url=f"http://127.0.0.1:{error_daemon}"))
    status, _ = client._roundtrip("GET", f"/raise/{cls.__name__}", None, 5.0)
    assert status == cls.status
    with pytest.raises(errors.CorralError) as got:
        client.request("GET", f"/raise/{cls.__name__}")
    assert type(got.value) is errors.by_code()[cls.code]
    assert got.value.exit_code == cls.exit_code
    assert (got.value.message, got.value.detail) == (f"{cls.__name__} happened", "more lines")


def test_busy_reaches_the_cli_as_busy_not_a_generic_error():
    body = errors.Busy("no instance of m can be evicted", retry_after=10).to_dict()
    exc = error_from_answer(503, body)
    assert type(exc) is errors.Busy and exc.exit_code == 13


def test_an_answer_without_a_corral_code_is_classed_by_its_status():
    assert type(error_from_answer(404, {"detail": "Not Found"})) is errors.NotFound
    assert type(error_from_answer(401, None)) is errors.UsageError
    assert type(error_from_answer(500, {"error": {"code": "???"}})) is errors.CorralError
