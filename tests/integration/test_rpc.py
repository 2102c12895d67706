"""corral rpc: supervised rpc-servers with a real daemon and a fake rpc-server
(tests/fakes/fake_rpc_server.py) beside the fake llama-server, on 127.0.0.1.

Start/ls/stop through the CLI, a killed server restarted, adoption by the next daemon
after ``kill -9`` (no second process), a server that vanished meanwhile restarted, the
bind refused for 0.0.0.0 (without --insecure), IPv6 and host names, a bad device failing
at once with its log, ``--node`` through a controller, and ``run --rpc`` turning a node
name into the node's endpoint (an rpc-server started there).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import DaemonProcess, wait_for
from tests.fakes.fake_rpc_server import make_fake_rpc_server
from tests.integration.conftest import (
    api,
    api_ok,
    assert_error,
    listening_socket,
    pid_alive,
)


@pytest.fixture
def rpc_binary(fake_binary: Path) -> Path:
    """A fake rpc-server beside the fake llama-server, where corral looks for it."""
    return make_fake_rpc_server(fake_binary.parent)


@pytest.fixture
def cleanup_pids():
    """Pids to SIGKILL after the test, whatever happened (rpc-servers outlive daemons)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def servers(d: DaemonProcess) -> list[dict]:
    return api_ok(d, "GET", "/api/v1/rpc")


def one(d: DaemonProcess, name: str) -> dict:
    return api_ok(d, "GET", f"/api/v1/rpc/{name}")


def wait_server(d: DaemonProcess, name: str, timeout: float = 30.0, **want) -> dict:
    def check():
        s = one(d, name)
        return s if all(s.get(k) == v for k, v in want.items()) else None

    return wait_for(check, timeout, interval=0.05, message=f"rpc-server {name} with {want}")


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def spawns(d: DaemonProcess, name: str) -> int:
    return (d.settings.logs_dir / "rpc" / f"{name}.log").read_text().count("--- corral ")


def start(d: DaemonProcess, pids: list[int], **body) -> dict:
    status, server = api(d, "POST", "/api/v1/rpc", body)
    assert status == 201, (status, server)
    pids.append(server["pid"])
    return server


def test_start_ls_ps_logs_stop_through_the_cli(daemon, rpc_binary, cleanup_pids):
    out = daemon.cli("rpc", "start", "--threads", "1")
    assert out.returncode == 0, out.stderr
    name, state, endpoint = out.stdout.split()
    assert state == "ready" and endpoint.startswith("127.0.0.1:")
    assert "--rpc " + endpoint in out.stderr  # how to use it
    port = int(endpoint.split(":")[1])

    [listed] = json.loads(daemon.cli("rpc", "ls", "--json").stdout)
    cleanup_pids.append(listed["pid"])
    assert listed["name"] == name and listed["state"] == "ready" and listed["cache"] is True
    assert listed["argv"] == [
        str(rpc_binary.resolve()), "-H", "127.0.0.1", "-p", str(port), "-t", "1", "-c"
    ]  # fmt: skip
    assert psutil.Process(listed["pid"]).cmdline()[-7:] == listed["argv"][1:]
    assert accepts(port)
    # the tensor cache is under CORRAL_HOME (LLAMA_CACHE), not the user's ~/.cache
    log = daemon.cli("rpc", "logs", name).stdout
    assert f"local cache    : {daemon.settings.home / 'rpc-cache' / 'rpc'}" in log

    ps = daemon.cli("ps").stdout
    assert "RPC SERVERS" in ps and endpoint in ps and name in ps

    out = daemon.cli("rpc", "stop", name)
    assert out.returncode == 0 and out.stdout.split() == [name, "stopped"], out.stderr
    assert not pid_alive(listed["pid"]) and not accepts(port)
    assert servers(daemon) == []
    assert "RPC SERVERS" not in daemon.cli("ps").stdout


def test_a_killed_server_is_restarted_on_its_port(daemon, rpc_binary, cleanup_pids):
    first = start(daemon, cleanup_pids, name="crashy")
    os.kill(first["pid"], signal.SIGKILL)
    again = wait_server(daemon, "crashy", state="ready", restarts=1)
    cleanup_pids.append(again["pid"])
    assert again["pid"] != first["pid"] and again["port"] == first["port"]
    assert again["exit_code"] == -signal.SIGKILL and "SIGKILL" in again["last_error"]
    assert accepts(first["port"])
    assert spawns(daemon, "crashy") == 2


def test_the_next_daemon_adopts_a_running_server_without_a_second_one(
    daemon, spawn_daemon, rpc_binary, cleanup_pids
):
    first = start(daemon, cleanup_pids, name="kept")
    daemon.kill9()
    assert pid_alive(first["pid"])  # servers outlive the daemon

    d2 = spawn_daemon()
    kept = one(d2, "kept")
    assert kept["pid"] == first["pid"] and kept["state"] == "ready" and kept["restarts"] == 0
    time.sleep(1.0)  # several supervision rounds: still the one process
    assert one(d2, "kept")["pid"] == first["pid"] and spawns(d2, "kept") == 1

    # the adopted one is still supervised: killed, it comes back
    os.kill(first["pid"], signal.SIGKILL)
    back = wait_server(d2, "kept", state="ready", restarts=1)
    cleanup_pids.append(back["pid"])
    # and stopped for good by the daemon that adopted it
    assert api(d2, "DELETE", "/api/v1/rpc/kept")[0] == 200
    assert not pid_alive(back["pid"]) and servers(d2) == []


def test_a_server_that_died_with_the_daemon_away_is_restarted(
    daemon, spawn_daemon, rpc_binary, cleanup_pids
):
    first = start(daemon, cleanup_pids, name="gone")
    daemon.kill9()
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(lambda: not pid_alive(first["pid"]), 10)

    d2 = spawn_daemon()
    back = wait_server(d2, "gone", state="ready")
    cleanup_pids.append(back["pid"])
    assert back["pid"] != first["pid"] and back["port"] == first["port"]
    assert back["restarts"] == 1 and accepts(back["port"])


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("0.0.0.0", "refusing to bind rpc-server to 0.0.0.0"),
        ("::", "IPv4"),
        ("::1", "IPv4"),
        ("gpu-box.lan", "must be an IP address"),
    ],
)
def test_addresses_refused_before_anything_runs(daemon, rpc_binary, host, says):
    out = daemon.cli("rpc", "start", "--host", host)
    assert out.returncode == 2 and says in out.stderr, out.stderr
    assert "no authentication" in out.stderr or host != "0.0.0.0"
    err = assert_error(*api(daemon, "POST", "/api/v1/rpc", {"host": host}), 400)
    assert says in err["message"]
    assert servers(daemon) == []


def test_insecure_lets_the_unspecified_address_through_the_check():
    from corral.supervisor.rpc import check_bind

    assert check_bind("0.0.0.0", insecure=True) == "0.0.0.0"
    assert check_bind("localhost") == "127.0.0.1"


def test_a_bad_device_fails_at_once_with_the_log_and_leaves_nothing(daemon, rpc_binary):
    out = daemon.cli("rpc", "start", "--device", "CUDA7")
    assert out.returncode == 6, out.stderr
    assert "did not start: exited with code 1" in out.stderr
    assert "unknown device: CUDA7" in out.stderr  # the log's tail, as detail
    assert servers(daemon) == []


def test_a_taken_port_is_refused(daemon, rpc_binary):
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        out = daemon.cli("rpc", "start", "--port", str(port))
        assert out.returncode == 4 and "taken" in out.stderr, out.stderr
    assert servers(daemon) == []


def test_no_rpc_server_beside_the_build_says_how_to_get_one(daemon):
    err = assert_error(*api(daemon, "POST", "/api/v1/rpc", {}), 424)
    assert "no rpc-server beside" in err["message"]


# --------------------------------------------------------------------------- nodes


@pytest.fixture
def pair(daemon_env, tmp_path):
    from tests.integration.test_nodes import env_of_node

    started: list[DaemonProcess] = []
    try:
        node = DaemonProcess(env_of_node(tmp_path, daemon_env)).start()
        started.append(node)
        controller = DaemonProcess({**daemon_env, "CORRAL_NODE_POLL_INTERVAL": "0.2"}).start()
        started.append(controller)
        made = node.cli("keys", "create", "controller")
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        status, _ = api(
            controller,
            "POST",
            "/api/v1/nodes",
            {"name": "box", "url": f"http://127.0.0.1:{node.settings.port}", "key": key},
        )
        assert status == 201
        yield controller, node, key
    finally:
        for d in started:
            try:
                body = api(d, "GET", "/api/v1/rpc", headers=_admin(d))[1]
                for s in body if isinstance(body, list) else []:
                    api(d, "DELETE", f"/api/v1/rpc/{s['name']}", headers=_admin(d))
            except OSError:
                pass
            d.stop()
        from corral.supervisor.offline import stop_all_offline

        for d in started:
            stop_all_offline(d.settings, timeout=1.0)


def _admin(d: DaemonProcess) -> dict[str, str]:
    token = (d.settings.home / "daemon.token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


def test_rpc_commands_with_node_act_on_the_node(pair, rpc_binary, cleanup_pids):
    controller, node, key = pair
    out = controller.cli("rpc", "start", "--node", "box", "--name", "lent", "--json")
    assert out.returncode == 0, out.stderr
    server = json.loads(out.stdout)
    cleanup_pids.append(server["pid"])
    assert server["name"] == "lent" and server["state"] == "ready"
    assert servers(controller) == []  # nothing here
    listed = json.loads(controller.cli("rpc", "ls", "--node", "box", "--json").stdout)
    assert [s["pid"] for s in listed] == [server["pid"]]
    log = controller.cli("rpc", "logs", "--node", "box", "lent")
    assert "fake rpc-server" in log.stdout, log.stderr
    out = controller.cli("rpc", "stop", "--node", "box", "lent")
    assert out.returncode == 0, out.stderr
    assert not pid_alive(server["pid"])


def test_run_with_rpc_node_names_starts_a_server_there_and_passes_endpoints(
    pair, rpc_binary, model_file, cleanup_pids
):
    controller, node, key = pair
    out = controller.cli(
        "run", str(model_file), "--name", "split", "--rpc", "box,10.9.9.9:50052", "--json"
    )
    assert out.returncode == 0, out.stderr
    [server] = api(node, "GET", "/api/v1/rpc", headers={"Authorization": f"Bearer {key}"})[1]
    cleanup_pids.append(server["pid"])
    assert server["host"] == "127.0.0.1" and server["state"] == "ready"
    assert f"rpc: started {server['name']} on node box" in out.stderr
    inst = json.loads(out.stdout)
    argv = api(controller, "GET", "/api/v1/instances/split")[1]["argv"]
    at = argv.index("--rpc")
    assert argv[at + 1] == f"{server['endpoint']},10.9.9.9:50052"  # host:port as typed
    ngl = [
        b
        for a, b in zip(argv, argv[1:], strict=False)
        if a in ("-ngl", "--gpu-layers", "--n-gpu-layers")
    ]
    # a planned launch: the CLI adds nothing (a fake rpc-server cannot be asked, so the
    # daemon launches it unplanned, as typed)
    assert ngl == [] and "-ngl 99" not in out.stderr, argv
    assert inst["name"] == "split"

    # a second run reuses the node's server
    again = controller.cli("run", str(model_file), "--name", "split2", "--rpc", "box", "--json")
    assert again.returncode == 0, again.stderr
    argv = api(controller, "GET", "/api/v1/instances/split2")[1]["argv"]
    assert argv[argv.index("--rpc") + 1] == server["endpoint"]
    assert len(api(node, "GET", "/api/v1/rpc", headers={"Authorization": f"Bearer {key}"})[1]) == 1

    # --no-fit: not planned, so every layer goes to the devices (llama.cpp's own split)
    bare = controller.cli(
        "run", str(model_file), "--name", "split3", "--rpc", "box", "--no-fit", "--json"
    )
    assert bare.returncode == 0, bare.stderr
    argv = api(controller, "GET", "/api/v1/instances/split3")[1]["argv"]
    ngl = [
        b
        for a, b in zip(argv, argv[1:], strict=False)
        if a in ("-ngl", "--gpu-layers", "--n-gpu-layers")
    ]
    assert ngl == ["99"] and "rpc: -ngl 99 added" in bare.stderr, argv


def test_run_with_an_unknown_node_name_says_so(daemon, model_file):
    out = daemon.cli("run", str(model_file), "--rpc", "nosuch")
    assert out.returncode == 2 and "no linked node" in out.stderr, out.stderr
