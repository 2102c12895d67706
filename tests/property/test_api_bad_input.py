"""Hostile input to every request model and path parameter of the management API.

Property: whatever the body, query or path, the answer is never a 5xx and never an
unhandled exception (the in-process TestClient re-raises those), and every error has
the ``{"error": {"code", "message"}}`` shape. Complements test_schemathesis.py (which
fuzzes a real daemon from the OpenAPI schema, so only with schema-shaped data): here the
inputs are chosen to be hostile to what is *behind* the schema (SQLite's integer range,
NUL bytes, trailing newlines, lone surrogates, traversal, ids of the wrong shape), and
the endpoints schemathesis leaves out (builds/update, settings) are covered.
"""

from __future__ import annotations

from urllib.parse import quote

import yaml
from hypothesis import given, strategies as st

from tests.property.conftest import (
    NASTY_TEXT,
    any_json,
    assert_clean,
    flag_tokens,
    floats,
    ints,
    loose,
    profile,
    send,
    text,
)


def seg(value: str) -> str:
    """One path segment (or query value), percent-encoded: a '/' inside stays inside, a
    lone surrogate goes as the invalid UTF-8 bytes it would be."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def qs(**params: object) -> str:
    """``?k=v&...`` encoded by :func:`seg` (httpx refuses to encode lone surrogates)."""
    return "?" + "&".join(f"{k}={seg(str(v))}" for k, v in params.items())


def launch_fields(d, *, wait: bool = True) -> dict:
    return {
        "model": st.one_of(
            st.just(str(d.model)),
            st.just(str(d.model) + "\n"),
            st.just(str(d.model) + "\x00"),
            text,
        ),
        "preset": text,
        "name": text,
        "port": ints,
        "flags": flag_tokens,
        "restart": st.one_of(st.sampled_from(["always", "on-failure", "never"]), text),
        "env": st.dictionaries(text, st.one_of(text, ints), max_size=3),
        "pinned": st.booleans(),
        "idle_ttl": st.one_of(floats, ints),
        "aliases": st.lists(text, max_size=3),
        "binary": st.one_of(st.just(str(d.fake_binary)), text),
        "build": ints,
        **({"wait": st.booleans()} if wait else {}),
        "timeout": st.one_of(floats, ints),
    }


def preset_fields(d) -> dict:
    fields = launch_fields(d)
    return {
        k: fields[k]
        for k in ("model", "build", "flags", "env", "restart", "idle_ttl", "aliases", "pinned")
    } | {"description": text}


# -- instances ------------------------------------------------------------------------------


def test_instance_plan_never_fails_on_bad_bodies(daemon_in_process):
    d = daemon_in_process

    @profile(80)
    @given(body=loose(launch_fields(d), {"model": str(d.model)}))
    def check(body):
        resp = send(d.client, "POST", "/api/v1/instances/plan", body)
        assert_clean(resp, "POST instances/plan")

    check()


def test_instance_launch_never_fails_on_bad_bodies(daemon_in_process):
    d = daemon_in_process

    @profile(30)
    @given(body=loose(launch_fields(d, wait=False), {"model": str(d.model)}))
    def check(body):
        if isinstance(body, dict):
            body.pop("wait", None)  # never wait on what a hostile body may have started
        assert_clean(send(d.client, "POST", "/api/v1/instances", body), "POST instances")

    check()


def test_instance_paths_never_fail(daemon_in_process):
    d = daemon_in_process
    ops = st.sampled_from(
        [
            ("GET", ""),
            ("DELETE", ""),
            ("POST", "/stop"),
            ("POST", "/start"),
            ("POST", "/restart"),
            ("GET", "/logs"),
        ]
    )

    @profile(40)
    @given(name=text, op=ops, tail=st.one_of(ints, text))
    def check(name, op, tail):
        method, suffix = op
        query = qs(tail=tail) if suffix == "/logs" else ""
        resp = d.client.request(method, f"/api/v1/instances/{seg(name)}{suffix}{query}")
        assert_clean(resp, f"{method} instances/{{name}}{suffix}")

    check()


# -- presets ---------------------------------------------------------------------------------


def test_preset_put_never_fails_on_bad_names_and_bodies(daemon_in_process):
    d = daemon_in_process

    @profile(50)
    @given(name=text, body=loose(preset_fields(d)))
    def check(name, body):
        resp = send(d.client, "PUT", f"/api/v1/presets/{seg(name)}", body)
        assert_clean(resp, "PUT presets/{name}")

    check()


def test_preset_reads_exports_and_deletes_never_fail(daemon_in_process):
    d = daemon_in_process

    @profile(30)
    @given(
        name=text,
        fmt=st.one_of(st.sampled_from(["yaml", "ini"]), text),
        which=st.sampled_from(["get", "delete", "export", "export-many"]),
        names=st.one_of(st.lists(text, max_size=3), any_json),
    )
    def check(name, fmt, which, names):
        if which == "get":
            resp = d.client.get(f"/api/v1/presets/{seg(name)}")
        elif which == "delete":
            resp = d.client.delete(f"/api/v1/presets/{seg(name)}")
        elif which == "export":
            resp = d.client.get(f"/api/v1/presets/{seg(name)}/export" + qs(format=fmt))
        else:
            resp = send(d.client, "POST", "/api/v1/presets/export", {"names": names, "format": fmt})
        assert_clean(resp, f"presets {which}")

    check()


def _preset_docs(d):
    """YAML documents shaped like exports, filled with hostile values; INI lines too."""
    one = st.fixed_dictionaries(
        {}, optional={k: st.one_of(v, any_json) for k, v in preset_fields(d).items()}
    )
    docs = st.one_of(
        st.dictionaries(text, one, max_size=3),
        st.fixed_dictionaries({"presets": st.dictionaries(text, one, max_size=3)}),
        any_json,
    )
    yaml_text = docs.map(lambda doc: yaml.safe_dump(doc, allow_unicode=True))
    ini_line = st.one_of(
        st.sampled_from(
            [
                "[x]",
                "[*]",
                "[x\x00]",
                "[]",
                "c = 4096",
                "ctx-size = 99999999999999999999",
                "model = /nope",
                "; comment",
                "= x",
                "[a b]",
                "version = 1",
            ]
        ),
        text,
    )
    ini_text = st.lists(ini_line, max_size=6).map("\n".join)
    return st.one_of(yaml_text, ini_text, text)


def test_preset_import_never_fails_on_bad_documents(daemon_in_process):
    d = daemon_in_process

    @profile(40)
    @given(doc=_preset_docs(d), fmt=st.sampled_from(["yaml", "ini"]), replace=st.booleans())
    def check(doc, fmt, replace):
        body = {"text": doc, "format": fmt, "replace": replace}
        assert_clean(send(d.client, "POST", "/api/v1/presets/import", body), "POST presets/import")

    check()


# -- builds, flags -----------------------------------------------------------------------


def test_build_ids_and_bodies_never_fail(daemon_in_process):
    d = daemon_in_process
    ids = st.one_of(ints.map(str), text)

    @profile(40)
    @given(
        build_id=ids,
        which=st.sampled_from(["default", "add", "job", "cancel", "flags"]),
        body=loose(
            {"path": st.one_of(st.just(str(d.fake_binary)), text), "default": st.booleans()},
            {"path": str(d.fake_binary)},
        ),
        q=text,
    )
    def check(build_id, which, body, q):
        if which == "default":
            resp = d.client.post(f"/api/v1/builds/{seg(build_id)}/default")
        elif which == "add":
            resp = send(d.client, "POST", "/api/v1/builds", body)
        elif which == "job":
            resp = d.client.get(f"/api/v1/builds/jobs/{seg(build_id)}")
        elif which == "cancel":
            resp = d.client.delete(f"/api/v1/builds/jobs/{seg(build_id)}")
        else:
            resp = d.client.get("/api/v1/flags" + qs(build=build_id, q=q))
        assert_clean(resp, f"builds {which}")

    check()


def test_build_update_never_fails_on_bad_bodies(daemon_in_process):
    """Only ``from=release`` (or invalid kinds) against the closed releases port: no
    pip download, no source build."""
    d = daemon_in_process
    fields = {
        "from": st.one_of(st.just("release"), st.sampled_from(NASTY_TEXT)),
        "backend": st.one_of(st.just("cpu"), text),
        "version": text,
        "force": st.booleans(),
    }

    @profile(20)
    @given(body=loose(fields, {"from": "release", "backend": "cpu"}))
    def check(body):
        if isinstance(body, dict):
            body.pop("source", None)
            if body.get("from") in ("source", "pypi"):
                body["from"] = "release"
        assert_clean(send(d.client, "POST", "/api/v1/builds/update", body), "POST builds/update")

    check()


# -- models, pulls, hub ------------------------------------------------------------------


def test_models_never_fail_on_bad_ids_and_paths(daemon_in_process):
    d = daemon_in_process
    # import paths stay inside the test's folders: "/" or "." would index the whole disk
    paths = st.one_of(
        st.just(str(d.model)),
        text.map(lambda t: f"{d.model.parent}/{t}"),
        st.just(str(d.model) + "\x00"),
        st.just(str(d.model) + "\n"),
    )

    @profile(40)
    @given(
        which=st.sampled_from(["import", "get", "delete"]),
        model_id=text,
        body=loose({"path": paths, "name": text}, {"path": str(d.model)}),
        flags=st.fixed_dictionaries(
            {},
            optional={
                "force": st.sampled_from(["true", "false", "x"]),
                "keep_files": st.sampled_from(["true", "1", "no", ""]),
            },
        ),
    )
    def check(which, model_id, body, flags):
        if (
            isinstance(body, dict)
            and isinstance(body.get("path"), str)
            and not body["path"].startswith(str(d.model.parent))
        ):
            body["path"] = str(d.model)
        if which == "import":
            resp = send(d.client, "POST", "/api/v1/models/import", body)
        elif which == "get":
            resp = d.client.get(f"/api/v1/models/{seg(model_id)}")
        else:
            resp = d.client.delete(f"/api/v1/models/{seg(model_id)}" + qs(**flags))
        assert_clean(resp, f"models {which}")

    check()


def test_pulls_and_hub_never_fail_on_bad_refs(daemon_in_process):
    d = daemon_in_process
    refs = st.one_of(
        st.sampled_from(
            [
                "org/tiny-GGUF",
                "org/tiny-GGUF:Q4_K_M",
                "org/tiny-GGUF\n",
                "org/tiny-GGUF:../../x",
                "org/tiny-GGUF/../../etc/passwd.gguf",
                "hf.co/org/x",
                "org/tiny-GGUF@main",
                "org/tiny-GGUF@\x00",
            ]
        ),
        text,
    )

    @profile(40)
    @given(
        which=st.sampled_from(["pull", "get", "cancel", "search", "quants"]),
        ref=refs,
        limit=st.one_of(ints.map(str), text),
        revision=text,
    )
    def check(which, ref, limit, revision):
        if which == "pull":
            resp = send(d.client, "POST", "/api/v1/pulls", {"ref": ref})
        elif which == "get":
            resp = d.client.get(f"/api/v1/pulls/{seg(ref)}")
        elif which == "cancel":
            resp = d.client.delete(f"/api/v1/pulls/{seg(ref)}")
        elif which == "search":
            resp = d.client.get("/api/v1/hub/search" + qs(q=ref, limit=limit))
        else:
            resp = d.client.get("/api/v1/hub/quants" + qs(repo=ref, revision=revision))
        assert_clean(resp, f"pulls {which}")

    check()


# -- keys, conversations, settings -------------------------------------------------------


def test_keys_and_conversations_never_fail(daemon_in_process):
    d = daemon_in_process
    message = loose(
        {
            "role": st.one_of(st.sampled_from(["user", "assistant", "system"]), text),
            "content": text,
            "tokens_per_second": floats,
        }
    )
    conv = loose(
        {
            "title": text,
            "model": text,
            "system": text,
            "params": loose({"temperature": floats, "max_tokens": ints, "top_p": floats}),
            "messages": st.lists(message, max_size=3),
        }
    )

    @profile(40)
    @given(
        which=st.sampled_from(["key", "revoke", "create", "patch", "get", "delete"]),
        key=loose({"name": text, "scope": st.one_of(st.just("admin"), text)}, {"name": "k"}),
        body=conv,
        ident=text,
    )
    def check(which, key, body, ident):
        c = d.client
        resp = {
            "key": lambda: send(c, "POST", "/api/v1/keys", key),
            "revoke": lambda: c.delete(f"/api/v1/keys/{seg(ident)}"),
            "create": lambda: send(c, "POST", "/api/v1/conversations", body),
            "patch": lambda: send(c, "PATCH", f"/api/v1/conversations/{seg(ident)}", body),
            "get": lambda: c.get(f"/api/v1/conversations/{seg(ident)}"),
            "delete": lambda: c.delete(f"/api/v1/conversations/{seg(ident)}"),
        }[which]()
        assert_clean(resp, f"keys/conversations {which}")

    check()


def test_settings_put_never_fails_on_bad_values(daemon_in_process):
    d = daemon_in_process
    knobs = [
        k["name"] if isinstance(k, dict) else k
        for k in _setting_names(d.client.get("/api/v1/settings").json())
    ]

    @profile(30)
    @given(
        changes=st.one_of(
            st.dictionaries(
                st.one_of(st.sampled_from(knobs), text),
                st.one_of(scalars_for_settings(), any_json),
                max_size=3,
            ),
            any_json,
        )
    )
    def check(changes):
        assert_clean(send(d.client, "PUT", "/api/v1/settings", changes), "PUT settings")

    check()


def _setting_names(described) -> list[str]:
    if isinstance(described, dict):
        items = described.get("settings", described)
        return list(items) if isinstance(items, dict) else [i.get("name") for i in items]
    return [i.get("name") for i in described]


def scalars_for_settings():
    return st.one_of(
        ints,
        floats,
        text,
        st.sampled_from(
            ["1-2", "70000-1", "http://127.0.0.1:9", "ftp://x", "http://\x00", "1e999"]
        ),
    )


# -- raw bodies --------------------------------------------------------------------------

RAW = [
    b"",
    b"{",
    b"\xff\xfe",
    b"null",
    b"[]",
    b'"x"',
    b"1e999",
    b'{"a":' * 200,
    b'{"flags": ["\\u0000"]}',
    b'{"name": "\\ud800"}',
    b"NaN",
    b'{"build": 1e400}',
]
WRITES = [
    ("POST", "/api/v1/instances/plan"),
    ("POST", "/api/v1/instances"),
    ("PUT", "/api/v1/presets/p"),
    ("POST", "/api/v1/presets/import"),
    ("POST", "/api/v1/presets/export"),
    ("POST", "/api/v1/builds"),
    ("POST", "/api/v1/models/import"),
    ("POST", "/api/v1/pulls"),
    ("POST", "/api/v1/keys"),
    ("POST", "/api/v1/conversations"),
    ("PUT", "/api/v1/settings"),
    ("POST", "/api/v1/builds/update"),
]


def test_raw_bodies_never_fail(daemon_in_process):
    """Bodies that are not JSON, or JSON no model accepts, on every write route."""
    for method, path in WRITES:
        for raw in RAW:
            resp = daemon_in_process.client.request(
                method, path, content=raw, headers={"Content-Type": "application/json"}
            )
            assert_clean(resp, f"{method} {path} (raw)")
