"""corral nodes with two real daemons on 127.0.0.1: a controller and a node, each with
its own CORRAL_HOME, the node's API closed by an admin key made with `corral keys create`.

The controller polls every 0.2 s (CORRAL_NODE_POLL_INTERVAL); waits are generous
wait-untils, never timing thresholds.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from corral import __version__
from tests.conftest import DaemonProcess, free_port, free_port_range, wait_for
from tests.integration.conftest import api, assert_error


def env_of_node(
    tmp_path: Path, daemon_env: dict[str, str], name: str = "node", **extra: str
) -> dict[str, str]:
    """Another daemon's environment: its own home (``NAME-home``), port and instance ports."""
    home = tmp_path / f"{name}-home"
    home.mkdir(mode=0o700)
    port = free_port()
    return {
        **daemon_env,
        "CORRAL_HOME": str(home),
        "CORRAL_PORT": str(port),
        "CORRAL_URL": f"http://127.0.0.1:{port}",
        "CORRAL_PORT_RANGE": free_port_range(),
        **extra,
    }


@pytest.fixture
def node_env(tmp_path: Path, daemon_env: dict[str, str]) -> dict[str, str]:
    return env_of_node(tmp_path, daemon_env)


@pytest.fixture
def pair(daemon_env: dict[str, str], node_env: dict[str, str]):
    """(controller, node, the node's admin key); both stopped, with their instances, after."""
    from corral.supervisor.offline import stop_all_offline

    started: list[DaemonProcess] = []
    try:
        node = DaemonProcess(node_env).start()
        started.append(node)
        controller = DaemonProcess({**daemon_env, "CORRAL_NODE_POLL_INTERVAL": "0.2"}).start()
        started.append(controller)
        made = node.cli("keys", "create", "controller")
        assert made.returncode == 0, made.stderr
        yield controller, node, made.stdout.strip()
    finally:
        for d in started:
            d.stop()
            stop_all_offline(d.settings, timeout=1.0)


def url_of(d: DaemonProcess) -> str:
    return f"http://127.0.0.1:{d.settings.port}"


def cli(d: DaemonProcess, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return d.cli(*args, stdin=stdin)


def nodes_of(controller: DaemonProcess) -> list[dict]:
    status, body = api(controller, "GET", "/api/v1/nodes")
    assert status == 200, (status, body)
    return body


def wait_node(controller: DaemonProcess, name: str, timeout: float = 60.0, **want) -> dict:
    def check():
        found = [n for n in nodes_of(controller) if n["name"] == name]
        if found and all(found[0].get(k) == v for k, v in want.items()):
            return found[0]
        return None

    return wait_for(check, timeout, interval=0.05, message=f"node {name} with {want}")


def node_api(node: DaemonProcess, key: str, method: str, path: str, body=None):
    return api(node, method, path, body, headers={"Authorization": f"Bearer {key}"})


def furnish(node: DaemonProcess, key: str, fake_binary: Path, model: Path) -> dict:
    """Give the node a default build, one model and one running instance."""
    status, build = node_api(node, key, "POST", "/api/v1/builds", {"path": str(fake_binary)})
    assert status == 201, (status, build)
    status, _ = node_api(node, key, "POST", f"/api/v1/builds/{build['id']}/default")
    assert status == 200
    status, imported = node_api(node, key, "POST", "/api/v1/models/import", {"path": str(model)})
    assert status == 200, (status, imported)
    status, inst = node_api(node, key, "POST", "/api/v1/instances", {"model": str(model)})
    assert status == 201, (status, inst)
    return build


def every_log(d: DaemonProcess) -> str:
    home = d.settings.home
    paths = [home / "daemon-test.log", *sorted((home / "logs").glob("*.log*"))]
    return "".join(p.read_text(errors="replace") for p in paths if p.is_file())


def test_add_ls_rm_through_the_cli_and_the_key_is_never_shown(pair, fake_binary, model_file):
    controller, node, key = pair
    build = furnish(node, key, fake_binary, model_file)
    added = cli(controller, "nodes", "add", "box-1", url_of(node), "--key", "-", stdin=key + "\n")
    assert added.returncode == 0, added.stderr
    assert "added node box-1" in added.stdout and __version__ in added.stdout

    listed = json.loads(cli(controller, "nodes", "ls", "--json").stdout)
    assert [n["name"] for n in listed] == ["box-1"]
    box = listed[0]
    assert box["url"] == url_of(node) and box["state"] == "up"
    assert box["corral_version"] == __version__
    assert box["llama_cpp_version"] == build["version"].splitlines()[0].removeprefix("version: ")
    assert (box["instances"], box["models"]) == (1, 1)
    assert isinstance(box["gpus"], list) and box["last_seen"] > 0
    assert "key" not in box

    shown = cli(controller, "nodes", "ls")
    assert shown.returncode == 0, shown.stderr
    head, row = shown.stdout.splitlines()
    assert head.split()[:5] == ["NAME", "URL", "STATE", "CORRAL", "LLAMA.CPP"]
    assert row.split()[:4] == ["box-1", url_of(node), "up", __version__]

    removed = cli(controller, "nodes", "rm", "box-1")
    assert removed.returncode == 0 and "removed node box-1" in removed.stdout
    assert nodes_of(controller) == []
    gone = cli(controller, "nodes", "rm", "box-1")
    assert gone.returncode == 3 and gone.stderr.startswith("error: no node 'box-1'")
    outputs = [added, shown, removed, gone]
    text = "".join(p.stdout + p.stderr for p in outputs) + json.dumps(listed)
    assert key not in text
    assert key not in every_log(controller)


class NotCorral(http.server.BaseHTTPRequestHandler):
    """An HTTP server that is not corral: 404 for everything."""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def not_corral():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotCorral)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def add(controller, name, url, key):
    return api(controller, "POST", "/api/v1/nodes", {"name": name, "url": url, "key": key})


def test_add_refuses_what_it_cannot_use_and_stores_nothing_then(pair, not_corral):
    controller, node, key = pair
    made = node.cli("keys", "create", "reader", "--scope", "inference")
    inference_key = made.stdout.strip()
    wrong = "crl_" + "x" * 43
    for bad_key in (wrong, inference_key):
        err = assert_error(*add(controller, "box", url_of(node), bad_key), 400, "bad_request")
        assert "refused the key" in err["message"] and bad_key not in err["message"]
    err = assert_error(*add(controller, "box", f"http://127.0.0.1:{free_port()}", key), 502)
    assert "unreachable" in err["message"]
    err = assert_error(*add(controller, "box", not_corral, key), 502, "upstream_error")
    assert "not a corral daemon" in err["message"]
    for bad_name in ("", "-x", "a/b", "x" * 65, "..", "ü"):
        assert_error(*add(controller, bad_name, url_of(node), key), 400, "bad_request")
    port = node.settings.port
    for bad_url in (
        "ftp://127.0.0.1:1",
        "127.0.0.1:9380",
        "http://",
        f"http://user:pw@127.0.0.1:{port}",
        f"http://127.0.0.1:{port}/../api",
        f"http://127.0.0.1:{port}/x",
        f"http://127.0.0.1:{port}?a=1",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:0",
        "http://bad host:1",
    ):
        err = assert_error(*add(controller, "box", bad_url, key), 400, "bad_request")
        assert "pw" not in err["message"] or "credentials" in err["message"]
    assert nodes_of(controller) == []

    status, body = add(controller, "box", url_of(node), key)
    assert status == 201 and body["state"] == "up", body
    assert_error(*add(controller, "box", url_of(node), key), 409, "conflict")
    assert [n["name"] for n in nodes_of(controller)] == ["box"]

    refused = cli(controller, "nodes", "add", "box2", url_of(node), "--key", wrong)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "refused the key" in refused.stderr
    assert_error(*api(controller, "DELETE", "/api/v1/nodes/nope"), 404, "not_found")
    texts = [json.dumps(nodes_of(controller)), refused.stderr, every_log(controller)]
    assert key not in "".join(texts) and wrong not in "".join(texts)


@contextlib.contextmanager
def node_events(controller):
    """The controller's ``event: node`` payloads, read from /api/v1/events in a thread
    (the list yielded grows as they come)."""
    import http.client

    seen: list[dict] = []
    conn = http.client.HTTPConnection("127.0.0.1", controller.settings.port, timeout=120)
    conn.request("GET", "/api/v1/events", headers={"Accept": "text/event-stream"})
    resp = conn.getresponse()
    assert resp.status == 200

    def read() -> None:
        topic = None
        try:
            for raw in resp:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    topic = line[7:]
                elif line.startswith("data: ") and topic == "node":
                    seen.append(json.loads(line[6:]))
        except Exception:  # noqa: BLE001 -- closed under it at the end of the test
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield seen
    finally:
        conn.sock.shutdown(2)  # wakes the reader up
        resp.close()
        conn.close()
        reader.join(10)


def test_a_stopped_node_goes_down_and_is_up_again_when_it_answers(pair):
    controller, node, key = pair
    status, body = add(controller, "box", url_of(node), key)
    assert status == 201, body
    wait_node(controller, "box", state="up", misses=0)
    with node_events(controller) as events:
        _down_and_up(controller, node, key, events)


def _down_and_up(controller, node, key, events) -> None:
    node.stop()
    down = wait_node(controller, "box", state="down")
    assert down["misses"] >= 3 and down["error"]
    assert "down" in cli(controller, "nodes", "ls").stdout
    # nothing local waits for the dead node
    assert api(controller, "GET", "/api/v1/instances", timeout=10) == (200, [])

    again = DaemonProcess(node.env).start()  # the same home and port
    try:
        up = wait_node(controller, "box", state="up", misses=0)
        assert up["error"] is None and up["corral_version"] == __version__
        assert up["last_seen"] > down["last_seen"]
        wait_for(lambda: [e["state"] for e in events] == ["down", "up"], timeout=30)
        assert [(e["node"], e["previous"]) for e in events] == [("box", "up"), ("box", "down")]
    finally:
        again.stop()
    assert key not in every_log(controller)


def test_nodes_are_kept_across_a_controller_restart_and_polled_again(pair):
    controller, node, key = pair
    status, body = add(controller, "box", url_of(node), key)
    assert status == 201, body
    controller.stop()
    again = DaemonProcess(controller.env).start()
    try:
        first = nodes_of(again)
        assert [(n["name"], n["url"]) for n in first] == [("box", url_of(node))]
        assert first[0]["state"] in ("unknown", "up") and first[0]["last_seen"] > 0
        up = wait_node(again, "box", state="up")
        assert up["corral_version"] == __version__
    finally:
        again.stop()
    assert key not in every_log(again)


def test_ps_lists_every_nodes_instances_with_a_node_column(pair, fake_binary, model_file):
    controller, node, key = pair
    furnish(node, key, fake_binary, model_file)
    status, body = add(controller, "box", url_of(node), key)
    assert status == 201, body
    [remote] = node_api(node, key, "GET", "/api/v1/instances")[1]

    rows = json.loads(cli(controller, "ps", "--json").stdout)
    assert [(r["node"], r["name"]) for r in rows] == [("box", remote["name"])]
    assert rows[0]["port"] == remote["port"] and rows[0]["model"] == remote["model"]
    shown = cli(controller, "ps")
    assert shown.returncode == 0, shown.stderr
    head, line = shown.stdout.splitlines()
    assert head.split()[:2] == ["NODE", "NAME"] and line.split()[:2] == ["box", remote["name"]]

    node.stop()  # its instance runs on, but the node does not answer: said, not listed
    wait_node(controller, "box", state="down")
    gone = cli(controller, "ps", "--json")
    assert gone.returncode == 0 and json.loads(gone.stdout) == []
    assert gone.stderr.startswith("warning: node box: not listed: node box is down")
    assert key not in gone.stderr + shown.stdout


def test_commands_act_on_a_node_through_the_controller(pair, fake_binary, model_file):
    """``--node NAME`` on run/stop/start/restart/delete: the controller relays the CLI's
    calls to the node's own REST API with the node's key; the node does the work."""
    controller, node, key = pair
    furnish(node, key, fake_binary, model_file)
    assert add(controller, "box", url_of(node), key)[0] == 201
    [first] = node_api(node, key, "GET", "/api/v1/instances")[1]
    [model] = node_api(node, key, "GET", "/api/v1/models")[1]

    def on_node(*args: str) -> subprocess.CompletedProcess:
        out = cli(controller, *args)
        assert out.returncode == 0, out.stderr
        return out

    ran = on_node("run", model["name"], "--node", "box", "--name", "second", "--json")
    assert json.loads(ran.stdout)["name"] == "second"
    names = lambda: sorted(i["name"] for i in node_api(node, key, "GET", "/api/v1/instances")[1])  # noqa: E731
    assert names() == sorted([first["name"], "second"])
    assert api(controller, "GET", "/api/v1/instances") == (200, [])  # nothing ran here

    on_node("stop", "--node=box", "second")
    state = lambda n: node_api(node, key, "GET", f"/api/v1/instances/{n}")[1]["state"]  # noqa: E731
    assert state("second") == "stopped"
    on_node("start", "second", "--node", "box")
    wait_for(lambda: state("second") == "ready", timeout=30)
    on_node("restart", "--node", "box", "second")
    local = (node.settings.home / "logs" / "second.log").read_text().splitlines()
    shown = on_node("logs", "second", "--node", "box", "-n", "5").stdout.splitlines()
    assert shown and shown == local[-len(shown) :] and len(shown) <= 5
    follow = subprocess.Popen(
        [sys.executable, "-m", "corral", "logs", "second", "--node", "box", "-f", "-n", "3"],
        env=controller.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout.readline().rstrip("\n") in local  # the followed stream is relayed
    finally:
        follow.kill()
        follow.communicate(timeout=10)
    on_node("delete", "--node", "box", "second")
    assert names() == [first["name"]]

    # refused: a command that does not go through the API yet, an unknown node, paths
    # that would leave the node's API, a node behind a node
    setup = cli(controller, "setup", "--yes", "--node", "box")
    assert setup.returncode == 2 and "--node is not supported by `corral setup` yet" in setup.stderr
    unknown = cli(controller, "stop", "--node", "nope", "x")
    assert unknown.returncode == 3 and "no node 'nope'" in unknown.stderr
    for path in ("/api/v1/nodes/box/api/v1/%2e%2e/keys", "/api/v1/nodes/box/api/v1/nodes"):
        assert_error(*api(controller, "GET", path), 400, "bad_request")
    node.stop()
    down = cli(controller, "stop", "--node", "box", first["name"])
    assert down.returncode == 14 and "node box" in down.stderr and key not in down.stderr


def test_the_index_commands_act_on_a_node(pair, fake_binary, model_file, tmp_path):
    """ls, show, import and rm with ``--node``: the node's index and files, not ours."""
    controller, node, key = pair
    assert add(controller, "box", url_of(node), key)[0] == 201
    there = tmp_path / "on-the-node"
    there.mkdir()
    copy = there / "other-Q8_0.gguf"
    copy.write_bytes(model_file.read_bytes())

    imported = cli(controller, "import", str(there), "--node", "box", "--json")
    assert imported.returncode == 0, imported.stderr
    [made] = json.loads(imported.stdout)
    assert made["path"] == str(copy)
    assert cli(controller, "ls", "--json").stdout.strip() in ("", "[]")  # not here

    listed = json.loads(cli(controller, "ls", "--node", "box", "--json").stdout)
    assert listed == node_api(node, key, "GET", "/api/v1/models")[1]
    table_ = cli(controller, "ls", "--node", "box").stdout
    assert made["name"] in table_ and "QUANT" in table_
    shown = cli(controller, "show", made["name"], "--node", "box")
    assert shown.returncode == 0 and str(copy) in shown.stdout
    missing = cli(controller, "show", "nope", "--node", "box")
    assert missing.returncode == 3 and missing.stderr.startswith("error: ")

    removed = cli(controller, "rm", made["name"], "--node", "box")
    assert removed.returncode == 0, removed.stderr
    assert "imported files are never deleted" in removed.stdout
    assert copy.exists() and node_api(node, key, "GET", "/api/v1/models")[1] == []
