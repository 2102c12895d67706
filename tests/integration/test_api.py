"""The daemon's REST API against a real ``corral serve`` and real fake llama-servers.

Every error leaves as ``{"error": {"code", "message"}}`` with its status; bad input is a
400 (never a 500) and spawns nothing.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from corral.store import instances as inst_table
from corral.store.db import Store
from tests.conftest import free_port, wait_for
from tests.integration.conftest import (
    api,
    assert_error,
    fake_processes,
    get,
    group_gone,
    launch,
    listening_socket,
    pid_alive,
    wait_state,
)


def _stored(daemon, name: str):
    store = Store(daemon.settings.db_path)
    try:
        return inst_table.find(store, name)
    finally:
        store.close()


def _nothing_spawned(daemon, fake_binary) -> None:
    assert fake_processes(fake_binary) == []
    assert api(daemon, "GET", "/api/v1/instances") == (200, [])
    assert _stored_names(daemon) == []


def _stored_names(daemon) -> list[str]:
    store = Store(daemon.settings.db_path)
    try:
        return [r.name for r in inst_table.list_all(store)]
    finally:
        store.close()


# --------------------------------------------------------------------------- daemon endpoints


def test_healthz(daemon):
    status, body = api(daemon, "GET", "/healthz")
    assert status == 200
    assert body["status"] == "ok"
    assert body["pid"] == daemon.proc.pid
    assert body["home"] == str(daemon.settings.home)


def test_openapi_lists_the_instance_paths(daemon):
    status, spec = api(daemon, "GET", "/openapi.json")
    assert status == 200
    paths = spec["paths"]
    for path in (
        "/api/v1/instances",
        "/api/v1/instances/{name}",
        "/api/v1/instances/{name}/stop",
        "/api/v1/instances/{name}/start",
        "/api/v1/instances/{name}/restart",
        "/api/v1/instances/{name}/logs",
        "/api/v1/flags",
        "/healthz",
    ):
        assert path in paths, sorted(paths)
    assert {"get", "post"} <= set(paths["/api/v1/instances"])
    assert {"get", "delete"} <= set(paths["/api/v1/instances/{name}"])


def test_unknown_route_and_wrong_method_have_the_error_shape(daemon):
    assert_error(*api(daemon, "GET", "/api/v1/nope"), 404, "not_found")
    assert_error(*api(daemon, "PUT", "/api/v1/instances"), 405, "method_not_allowed")


# --------------------------------------------------------------------------- list / get / launch


def test_launch_list_get(daemon, model_file):
    assert api(daemon, "GET", "/api/v1/instances") == (200, [])
    inst = launch(daemon, model_file, name="one", flags=["-c", "2048", "--metrics"])
    assert inst["name"] == "one"
    assert inst["state"] == "ready"
    assert inst["model"] == str(model_file.resolve())
    assert inst["flags"] == ["--ctx-size 2048", "--metrics"]  # normalised to long names
    argv = inst["argv"]
    assert argv[argv.index("--port") + 1] == str(inst["port"])
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--model") + 1] == str(model_file.resolve())
    assert inst["url"] == f"http://127.0.0.1:{inst['port']}"

    status, listed = api(daemon, "GET", "/api/v1/instances")
    assert status == 200 and [i["name"] for i in listed] == ["one"]
    assert get(daemon, "one")["pid"] == inst["pid"]
    # The process really got the flags.
    cmdline = psutil.Process(inst["pid"]).cmdline()
    assert cmdline[-len(argv) + 1 :] == argv[1:]
    assert "--ctx-size" in cmdline and "2048" in cmdline and "--metrics" in cmdline


def test_launch_without_name_derives_one_from_the_model(daemon, model_file):
    a = launch(daemon, model_file, wait=False)
    b = launch(daemon, model_file, wait=False)
    assert a["name"] == "tiny-model-q4_k_m"
    assert b["name"] == "tiny-model-q4_k_m-2"
    assert a["port"] != b["port"]


def test_concurrent_launches_get_distinct_ports(daemon, model_file, fake_binary):
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda i: api(
                    daemon,
                    "POST",
                    "/api/v1/instances",
                    {"model": str(model_file), "name": f"c{i}", "wait": True},
                ),
                range(4),
            )
        )
    assert [s for s, _ in results] == [201] * 4, results
    ports = {body["port"] for _, body in results}
    assert len(ports) == 4
    for port in ports:
        assert len(fake_processes(fake_binary, port=port)) == 1


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/instances/ghost",
        "/api/v1/instances/ghost/logs",
    ],
)
def test_get_unknown_instance_is_404(daemon, path):
    err = assert_error(*api(daemon, "GET", path), 404, "not_found")
    assert "ghost" in err["message"]


@pytest.mark.parametrize(
    "method,path",
    [
        ("DELETE", "/api/v1/instances/ghost"),
        ("POST", "/api/v1/instances/ghost/stop"),
        ("POST", "/api/v1/instances/ghost/start"),
        ("POST", "/api/v1/instances/ghost/restart"),
        ("POST", "/api/v1/instances/65000/stop"),
    ],
)
def test_commands_on_unknown_instance_are_404(daemon, method, path):
    assert_error(*api(daemon, method, path), 404, "not_found")


# --------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"",
        b"[]",
        b'"model"',
        b"null",
        b'{"model": "x.gguf"',
        '{"model": "\udcff"}'.encode("utf-8", "surrogatepass"),
    ],
)
def test_malformed_body_is_400_not_500(daemon, fake_binary, raw):
    assert_error(*api(daemon, "POST", "/api/v1/instances", raw=raw), 400)
    _nothing_spawned(daemon, fake_binary)


@pytest.mark.parametrize(
    "patch",
    [
        {"model": 5},
        {"model": ""},
        {"model": None},
        {"port": "eighty"},
        {"port": 0},
        {"port": 70000},
        {"flags": "-c 4096"},
        {"flags": [1, 2]},
        {"flags": {"-c": 4096}},
        {"restart": "sometimes"},
        {"wait": "perhaps"},
        {"timeout": -1},
        {"name": ["a"]},
        {"build": "latest"},
    ],
)
def test_wrong_types_are_400_not_500(daemon, model_file, fake_binary, patch):
    body = {"model": str(model_file), "name": "typed", **patch}
    assert_error(*api(daemon, "POST", "/api/v1/instances", body), 400)
    _nothing_spawned(daemon, fake_binary)


@pytest.mark.parametrize("query", ["tail=-1", "tail=abc", "follow=maybe"])
def test_bad_query_parameters_are_400(daemon, model_file, query):
    launch(daemon, model_file, name="q", wait=False)
    assert_error(*api(daemon, "GET", f"/api/v1/instances/q/logs?{query}"), 400)


def test_missing_and_non_gguf_model_files_are_400(daemon, tmp_path, fake_binary):
    err = assert_error(
        *api(daemon, "POST", "/api/v1/instances", {"model": str(tmp_path / "nope.gguf")}),
        400,
        "invalid_model",
    )
    assert "nope.gguf" in err["message"]
    text = tmp_path / "notes.gguf"
    text.write_text("hello, not a model")
    assert_error(
        *api(daemon, "POST", "/api/v1/instances", {"model": str(text)}), 400, "invalid_model"
    )
    _nothing_spawned(daemon, fake_binary)


def test_invalid_instance_name_is_400(daemon, model_file, fake_binary):
    assert_error(
        *api(
            daemon, "POST", "/api/v1/instances", {"model": str(model_file), "name": "bad name/../x"}
        ),
        400,
    )
    _nothing_spawned(daemon, fake_binary)


def test_unknown_flag_is_400_with_a_suggestion_and_spawns_nothing(daemon, model_file, fake_binary):
    status, body = api(
        daemon,
        "POST",
        "/api/v1/instances",
        {"model": str(model_file), "name": "x", "flags": ["--ctx-sise", "4096"]},
    )
    err = assert_error(status, body, 400, "unknown_flag")
    assert "--ctx-sise" in err["message"]
    assert "did you mean --ctx-size" in err["message"]
    _nothing_spawned(daemon, fake_binary)


@pytest.mark.parametrize(
    "flags",
    [
        ["--metrics=1"],  # a switch given a value
        ["--metrics", "yes"],  # a switch followed by a stray value
        ["--ctx-size"],  # a valued flag without its value
        ["-c"],
        ["--metrics", "-c"],
    ],
)
def test_flag_value_errors_are_400_and_spawn_nothing(daemon, model_file, fake_binary, flags):
    status, body = api(
        daemon, "POST", "/api/v1/instances", {"model": str(model_file), "name": "x", "flags": flags}
    )
    assert_error(status, body, 400, "flag_value")
    _nothing_spawned(daemon, fake_binary)


@pytest.mark.parametrize(
    "flags",
    [
        ["--model", "/tmp/other.gguf"],
        ["-m", "/tmp/other.gguf"],
        ["--port", "9999"],
        ["--port=9999"],
    ],
)
def test_owned_flags_are_400_and_spawn_nothing(daemon, model_file, fake_binary, flags):
    status, body = api(
        daemon, "POST", "/api/v1/instances", {"model": str(model_file), "name": "x", "flags": flags}
    )
    assert_error(status, body, 400, "owned_flag")
    _nothing_spawned(daemon, fake_binary)


def test_host_flag_is_taken_not_duplicated(daemon, model_file):
    inst = launch(daemon, model_file, name="h", flags=["--host", "127.0.0.1", "-c", "512"])
    assert inst["argv"].count("--host") == 1
    assert inst["flags"] == ["--ctx-size 512"]


# --------------------------------------------------------------------------- ports


def test_explicit_port_bound_by_another_process_is_409_port_in_use(daemon, model_file, fake_binary):
    with listening_socket() as sock:
        port = sock.getsockname()[1]
        status, body = api(
            daemon,
            "POST",
            "/api/v1/instances",
            {"model": str(model_file), "name": "p", "port": port},
        )
        err = assert_error(status, body, 409, "port_in_use")
        assert str(port) in err["message"]
    _nothing_spawned(daemon, fake_binary)


def test_port_assigned_to_another_instance_is_409(daemon, model_file, fake_binary):
    first = launch(daemon, model_file, name="first")
    api(daemon, "POST", "/api/v1/instances/first/stop")  # port stays assigned to it
    status, body = api(
        daemon,
        "POST",
        "/api/v1/instances",
        {"model": str(model_file), "name": "second", "port": first["port"]},
    )
    assert_error(status, body, 409)
    assert [i["name"] for i in api(daemon, "GET", "/api/v1/instances")[1]] == ["first"]
    assert fake_processes(fake_binary) == []


def test_duplicate_name_is_409(daemon, model_file, fake_binary):
    first = launch(daemon, model_file, name="dup")
    status, body = api(
        daemon, "POST", "/api/v1/instances", {"model": str(model_file), "name": "dup"}
    )
    assert_error(status, body, 409, "conflict")
    assert [p.pid for p in fake_processes(fake_binary)] == [first["pid"]]


def test_auto_allocation_skips_a_taken_port(daemon, model_file, fake_binary):
    low, high = (int(p) for p in daemon.env["CORRAL_PORT_RANGE"].split("-"))
    with listening_socket(low) as _taken:
        inst = launch(daemon, model_file, name="auto")
        assert low < inst["port"] <= high
        assert inst["port"] == low + 1
        assert [p.pid for p in fake_processes(fake_binary, port=inst["port"])] == [inst["pid"]]


# --------------------------------------------------------------------------- commands


def test_delete_stops_and_removes(daemon, model_file, fake_binary):
    inst = launch(daemon, model_file, name="doomed")
    status, body = api(daemon, "DELETE", "/api/v1/instances/doomed")
    assert status == 200 and body == {"removed": "doomed"}
    assert group_gone(inst["pid"])
    assert_error(*api(daemon, "GET", "/api/v1/instances/doomed"), 404, "not_found")
    assert api(daemon, "GET", "/api/v1/instances") == (200, [])
    assert _stored(daemon, "doomed") is None
    assert fake_processes(fake_binary) == []
    # the name and the port are free again
    again = launch(daemon, model_file, name="doomed", port=inst["port"])
    assert again["state"] == "ready"


def test_stop_start_restart_by_name(daemon, model_file, fake_binary):
    inst = launch(daemon, model_file, name="cycle")
    status, stopped = api(daemon, "POST", "/api/v1/instances/cycle/stop")
    assert status == 200 and stopped["state"] == "stopped" and stopped["pid"] is None
    assert group_gone(inst["pid"])
    assert _stored(daemon, "cycle").desired == "stopped"
    # stopping again is a no-op
    assert api(daemon, "POST", "/api/v1/instances/cycle/stop")[1]["state"] == "stopped"

    status, started = api(daemon, "POST", "/api/v1/instances/cycle/start?wait=true")
    assert status == 200 and started["state"] == "ready"
    assert started["pid"] not in (None, inst["pid"]) and started["port"] == inst["port"]
    assert _stored(daemon, "cycle").desired == "running"
    assert_error(*api(daemon, "POST", "/api/v1/instances/cycle/start"), 409, "conflict")

    status, restarted = api(daemon, "POST", "/api/v1/instances/cycle/restart?wait=true")
    assert status == 200 and restarted["state"] == "ready"
    assert restarted["pid"] != started["pid"]
    assert restarted["restarts"] == 1
    assert _stored(daemon, "cycle").restarts == 1
    assert [p.pid for p in fake_processes(fake_binary)] == [restarted["pid"]]


def test_start_without_wait_answers_starting(daemon, make_model):
    launch(daemon, make_model("slowish", load_seconds=1.5), name="lazy")
    api(daemon, "POST", "/api/v1/instances/lazy/stop")
    status, started = api(daemon, "POST", "/api/v1/instances/lazy/start")
    assert status == 200 and started["state"] == "starting" and started["pid"]
    wait_state(daemon, "lazy", "ready")


def test_stop_by_port(daemon, model_file, fake_binary):
    a = launch(daemon, model_file, name="a")
    b = launch(daemon, model_file, name="b")
    status, stopped = api(daemon, "POST", f"/api/v1/instances/{b['port']}/stop")
    assert status == 200 and stopped["name"] == "b" and stopped["state"] == "stopped"
    assert group_gone(b["pid"])
    assert get(daemon, "a")["state"] == "ready"
    assert [p.pid for p in fake_processes(fake_binary)] == [a["pid"]]
    assert _stored(daemon, "b").desired == "stopped"


def test_start_and_restart_by_port_are_persisted(daemon, model_file):
    """Instances can be addressed by port (the supervisor resolves it); what start and
    restart change must then be written to the right row of the store too."""
    inst = launch(daemon, model_file, name="byport")
    port = inst["port"]
    api(daemon, "POST", f"/api/v1/instances/{port}/stop")
    status, started = api(daemon, "POST", f"/api/v1/instances/{port}/start?wait=true")
    assert status == 200 and started["name"] == "byport" and started["state"] == "ready"
    assert _stored(daemon, "byport").desired == "running"  # else a new daemon stops it

    status, restarted = api(daemon, "POST", f"/api/v1/instances/{port}/restart?wait=true")
    assert status == 200 and restarted["restarts"] == 1
    assert _stored(daemon, "byport").restarts == 1


def test_start_by_port_survives_a_daemon_restart(daemon, spawn_daemon, model_file):
    inst = launch(daemon, model_file, name="byport")
    port = inst["port"]
    api(daemon, "POST", f"/api/v1/instances/{port}/stop")
    started = api(daemon, "POST", f"/api/v1/instances/{port}/start?wait=true")[1]
    daemon.kill9()
    d2 = spawn_daemon()
    time.sleep(0.5)
    now = get(d2, "byport")
    assert now["state"] == "ready" and now["pid"] == started["pid"], now
    assert pid_alive(started["pid"])


# --------------------------------------------------------------------------- logs


def test_logs_tail_returns_the_last_lines(daemon, model_file):
    launch(daemon, model_file, name="talky")
    path = daemon.settings.logs_dir / "talky.log"
    with open(path, "a") as fh:
        for i in range(30):
            fh.write(f"line {i}\n")
    status, body = api(daemon, "GET", "/api/v1/instances/talky/logs?tail=5")
    assert status == 200
    assert body["name"] == "talky"
    assert body["lines"] == [f"line {i}" for i in range(25, 30)]
    assert api(daemon, "GET", "/api/v1/instances/talky/logs?tail=0")[1]["lines"] == []
    everything = api(daemon, "GET", "/api/v1/instances/talky/logs?tail=100000")[1]["lines"]
    assert everything == path.read_text().splitlines()
    assert everything[0].startswith("--- corral ")  # the spawn marker
    assert any("listening on" in line for line in everything)  # the fake's own output


def test_logs_follow_streams_a_line_written_after_subscribing(daemon, model_file):
    launch(daemon, model_file, name="follow")
    path = daemon.settings.logs_dir / "follow.log"
    marker = f"written-after-subscribing-{uuid.uuid4().hex}"

    conn = http.client.HTTPConnection("127.0.0.1", daemon.settings.port, timeout=15)
    try:
        conn.request("GET", "/api/v1/instances/follow/logs?follow=true&tail=2")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("content-type", "").startswith("text/event-stream")
        # The two tail lines come first: after them we are subscribed.
        got = []
        while len(got) < 2:
            line = resp.readline().decode()
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
        assert got == path.read_text().splitlines()[-2:]
        with open(path, "a") as fh:
            fh.write(marker + "\n")
        while True:
            line = resp.readline().decode()
            assert line, "stream ended before the new line arrived"
            if line.startswith("data: ") and json.loads(line[6:]) == marker:
                break
    finally:
        conn.close()
    # The daemon is fine after the client went away.
    assert api(daemon, "GET", "/healthz")[0] == 200


@pytest.mark.parametrize("follower", ["gone", "connected"])
def test_daemon_stops_on_sigterm_with_log_followers(daemon, model_file, follower):
    launch(daemon, model_file, name="f")
    conn = http.client.HTTPConnection("127.0.0.1", daemon.settings.port, timeout=30)
    try:
        conn.request("GET", "/api/v1/instances/f/logs?follow=true&tail=1")
        resp = conn.getresponse()
        assert resp.readline().startswith(b"data: ")
        if follower == "gone":
            conn.close()
        daemon.stop()  # SIGTERM, SIGKILL only if it is still there after 10 s
    finally:
        conn.close()
    # uvicorn re-raises SIGTERM after its graceful shutdown: -15 is a clean exit here.
    assert daemon.proc.returncode in (0, -signal.SIGTERM), "daemon had to be SIGKILLed"


# --------------------------------------------------------------------------- flags


def test_flags_search(daemon):
    status, body = api(daemon, "GET", "/api/v1/flags?q=ctx")
    assert status == 200
    longs = [f["long"] for f in body["flags"]]
    assert "--ctx-size" in longs
    assert body["count"] == len(body["flags"])
    ctx = next(f for f in body["flags"] if f["long"] == "--ctx-size")
    assert "-c" in ctx["names"] and ctx["takes_value"] is True
    status, everything = api(daemon, "GET", "/api/v1/flags")
    assert status == 200 and everything["count"] > body["count"] > 0


# --------------------------------------------------------------------------- auth / binding


def test_api_key_is_required_except_on_healthz(spawn_daemon, model_file):
    d = spawn_daemon(CORRAL_API_KEY="s3cret-key")
    assert api(d, "GET", "/healthz")[0] == 200
    for method, path in (
        ("GET", "/api/v1/instances"),
        ("GET", "/api/v1/flags"),
        ("POST", "/api/v1/instances/x/stop"),
    ):
        assert_error(*api(d, method, path), 401, "unauthorized")
    assert_error(
        *api(d, "GET", "/api/v1/instances", headers={"Authorization": "Bearer wrong"}),
        401,
        "unauthorized",
    )
    assert_error(
        *api(d, "GET", "/api/v1/instances", headers={"Authorization": "s3cret-key"}),
        401,
        "unauthorized",
    )
    status, body = api(d, "POST", "/api/v1/instances", {"model": str(model_file)})
    assert_error(status, body, 401)
    good = {"Authorization": "Bearer s3cret-key"}
    assert api(d, "GET", "/api/v1/instances", headers=good) == (200, [])
    status, inst = api(
        d,
        "POST",
        "/api/v1/instances",
        {"model": str(model_file), "name": "k", "wait": True},
        headers=good,
    )
    assert status == 201 and inst["state"] == "ready"


def test_serve_on_all_interfaces_without_key_refuses(daemon_env):
    env = {**daemon_env, "CORRAL_PORT": str(free_port())}
    env.pop("CORRAL_API_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "corral", "serve", "--host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "CORRAL_API_KEY" in lines[0]
    assert "Traceback" not in proc.stderr


def test_second_daemon_on_the_same_home_refuses(daemon, daemon_env):
    env = {**daemon_env, "CORRAL_PORT": str(free_port())}
    env["CORRAL_URL"] = f"http://127.0.0.1:{env['CORRAL_PORT']}"
    proc = subprocess.run(
        [sys.executable, "-m", "corral", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "already runs" in proc.stderr
    assert str(daemon.proc.pid) in proc.stderr
    assert api(daemon, "GET", "/healthz")[0] == 200


def test_launch_wait_timeout_keeps_the_instance(daemon, make_model):
    """``wait`` with a short ``timeout`` answers an error, but the instance keeps loading."""
    model = make_model("slow", load_seconds=3)
    status, body = api(
        daemon,
        "POST",
        "/api/v1/instances",
        {"model": str(model), "name": "slow", "wait": True, "timeout": 0.3},
    )
    err = assert_error(status, body, 502, "launch_failed")
    assert "still starting" in err["message"]
    assert wait_state(daemon, "slow", "ready")["restarts"] == 0


# --------------------------------------------------------------------------- more bad input


def test_port_range_exhausted_is_409(spawn_daemon, model_file, fake_binary):
    port = free_port()
    d = spawn_daemon(CORRAL_PORT_RANGE=f"{port}-{port}")
    first = launch(d, model_file, name="only")
    assert first["port"] == port
    status, body = api(d, "POST", "/api/v1/instances", {"model": str(model_file), "name": "more"})
    err = assert_error(status, body, 409, "port_in_use")
    assert f"{port}-{port}" in err["message"]
    assert [p.pid for p in fake_processes(fake_binary)] == [first["pid"]]


def test_limits_on_request_fields_are_400(daemon, model_file, tmp_path, fake_binary):
    base = {"model": str(model_file)}
    assert_error(*api(daemon, "POST", "/api/v1/instances", {**base, "name": "n" * 65}), 400)
    assert_error(
        *api(daemon, "POST", "/api/v1/instances", {**base, "flags": ["--metrics"] * 513}), 400
    )
    assert_error(
        *api(daemon, "POST", "/api/v1/instances", {"model": str(tmp_path)}), 400, "invalid_model"
    )
    _nothing_spawned(daemon, fake_binary)


def test_missing_or_bogus_binary_is_424_not_500(daemon, model_file, tmp_path, fake_binary):
    status, body = api(
        daemon,
        "POST",
        "/api/v1/instances",
        {"model": str(model_file), "binary": str(tmp_path / "nope")},
    )
    assert_error(status, body, 424, "no_binary")
    bogus = tmp_path / "not-llama"
    bogus.write_text("#!/bin/sh\nexit 0\n")
    bogus.chmod(0o755)
    status, body = api(
        daemon, "POST", "/api/v1/instances", {"model": str(model_file), "binary": str(bogus)}
    )
    assert_error(status, body, 424, "no_binary")
    # GET /flags never executes a path the caller names: the parameter is not accepted.
    marker = tmp_path / "ran"
    spy = tmp_path / "spy"
    spy.write_text(f"#!/bin/sh\ntouch {marker}\n")
    spy.chmod(0o755)
    status, body = api(daemon, "GET", f"/api/v1/flags?binary={spy}")
    assert status == 200 and body["count"] > 200 and not marker.exists()
    assert_error(*api(daemon, "GET", "/api/v1/flags?build=99"), 404, "not_found")
    _nothing_spawned(daemon, fake_binary)


def test_builds_api_add_and_list(daemon, fake_binary):
    assert api(daemon, "GET", "/api/v1/builds") == (200, [])
    status, build = api(daemon, "POST", "/api/v1/builds", {"path": str(fake_binary)})
    assert status == 201, build
    assert build["id"] == 1 and build["is_default"] is True
    assert build["path"] == str(fake_binary.resolve())
    status, listed = api(daemon, "GET", "/api/v1/builds")
    assert [b["id"] for b in listed] == [1]


def test_builds_api_rejects_a_binary_without_flags_and_registers_nothing(daemon, tmp_path):
    """Like ``corral builds add``: a binary whose --help lists no flags is not registered."""
    script = tmp_path / "versions-only"
    script.write_text("#!/bin/sh\necho 'version: 1 (abcdef0)' >&2\n")
    script.chmod(0o755)
    status, body = api(daemon, "POST", "/api/v1/builds", {"path": str(script)})
    assert_error(status, body, 424, "no_binary")
    assert api(daemon, "GET", "/api/v1/builds") == (200, [])


def _raw(daemon, method: str, path: str, headers: dict[str, str]) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", daemon.settings.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_dns_rebinding_and_cross_origin_requests_are_refused(daemon, model_file):
    port = daemon.settings.port
    created = launch(daemon, model_file, name="victim")
    assert created["name"] == "victim"
    # A page on evil.example resolving to 127.0.0.1 sends its own Host: refused.
    assert _raw(daemon, "GET", "/api/v1/instances", {"Host": f"evil.example:{port}"}) == 403
    assert (
        _raw(daemon, "POST", "/api/v1/instances/victim/stop", {"Host": f"evil.example:{port}"})
        == 403
    )
    # A cross-site form or fetch carries its Origin: refused, and nothing stops.
    assert (
        _raw(
            daemon,
            "POST",
            "/api/v1/instances/victim/stop",
            {"Host": f"127.0.0.1:{port}", "Origin": "https://evil.example"},
        )
        == 403
    )
    assert get(daemon, "victim")["state"] in ("starting", "ready")
    # The daemon's own names and same-origin pages pass.
    assert _raw(daemon, "GET", "/api/v1/instances", {"Host": f"localhost:{port}"}) == 200
    assert (
        _raw(
            daemon,
            "GET",
            "/api/v1/instances",
            {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}"},
        )
        == 200
    )


@pytest.mark.parametrize(
    "body,code",
    [
        ({"model": "~nosuchuser-corral/m.gguf"}, "invalid_model"),
        ({"binary": "~nosuchuser-corral/llama-server"}, "no_binary"),
        ({"flags": ["--host", "bogus.invalid"]}, "bad_request"),
    ],
)
def test_odd_paths_and_hosts_are_4xx_not_500(daemon, model_file, fake_binary, body, code):
    req = {"model": str(model_file), **body}
    status, payload = api(daemon, "POST", "/api/v1/instances", req)
    assert 400 <= status < 500, payload
    assert payload["error"]["code"] == code
    _nothing_spawned(daemon, fake_binary)


def test_remove_racing_start_leaves_no_untracked_process(daemon, model_file, fake_binary):
    """DELETE while a start waits for the instance's lock: the start must not revive it."""
    import threading

    ignoring = model_file.with_name("slow-stop.gguf")
    ignoring.write_bytes(model_file.read_bytes())
    ignoring.with_name(ignoring.name + ".fake.json").write_text('{"ignore_sigterm": true}')
    inst = launch(daemon, ignoring, name="racer", wait=True)
    results = {}

    def delete():
        results["delete"] = api(daemon, "DELETE", "/api/v1/instances/racer")

    t = threading.Thread(target=delete)
    t.start()
    wait_for(lambda: get(daemon, "racer").get("state") == "stopping", timeout=10)
    results["start"] = api(daemon, "POST", "/api/v1/instances/racer/start")
    t.join(30)
    assert results["delete"][0] == 200
    assert results["start"][0] in (404, 409), results["start"]
    assert api(daemon, "GET", "/api/v1/instances")[1] == []
    wait_for(lambda: not fake_processes(fake_binary, port=inst["port"]), timeout=10)
