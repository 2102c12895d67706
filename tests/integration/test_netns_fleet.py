"""Several machines for real on one machine: three network namespaces on a bridge (a
controller ``ctl`` and two nodes ``a`` and ``b``, private addresses inside them only),
each running its own ``corral serve`` bound to its own address, with its own
CORRAL_HOME and keys. Fake llama-servers keep it fast; the network, the daemons, the
keys and the openai client are real.

Every request is made from inside a namespace (``ip netns exec``): the root namespace
has no address on the bridge. The namespaces and the bridge are removed after each
test, and anything still running in them killed, however the test ended. Skipped with
the reason where namespaces cannot be made (not root); CI runs as root.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests import netns
from tests.conftest import FAST, REPO, wait_for
from tests.integration.test_nodes_routing import make_gguf

WHY_NOT = netns.skip_reason()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")

PORT = 9380  # the same port on every host: each namespace has its own
SUBNET = "10.214.0"

#: Run inside a namespace: one HTTP call, its status and JSON body printed as JSON.
CALL = """
import json, sys, urllib.request, urllib.error
method, url, key, body = sys.argv[1:5]
req = urllib.request.Request(url, method=method, data=body.encode() if body else None)
req.add_header("Content-Type", "application/json")
if key:
    req.add_header("Authorization", "Bearer " + key)
try:
    with urllib.request.urlopen(req, timeout=60) as resp:
        status, data = resp.status, resp.read()
except urllib.error.HTTPError as exc:
    status, data = exc.code, exc.read()
except OSError as exc:
    status, data = 0, json.dumps(str(exc)).encode()
print(json.dumps({"status": status, "body": json.loads(data or b"null")}))
"""

#: Run inside a namespace: a fake Hub on its loopback with one repo, its URL printed.
HUB = """
import sys, time
from pathlib import Path
from tests.fakes.fake_hub import FakeHub
hub = FakeHub(cdn=True).start()
hub.add_repo("acme/tiny-GGUF", files={"tiny-Q4_K_M.gguf": Path(sys.argv[1])})
print(hub.url, flush=True)
time.sleep(3600)
"""

#: Run inside a namespace: a chat through the official openai client, its text printed.
CHAT = """
import sys, openai
url, key, model = sys.argv[1:4]
c = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)
r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
print(r.choices[0].message.content)
"""


class HostDaemon:
    """``corral serve`` inside one namespace, bound to that host's address."""

    def __init__(self, hosts: netns.Hosts, name: str, home: Path, env: dict[str, str]):
        self.hosts, self.name, self.home = hosts, name, home
        home.mkdir(mode=0o700)
        self.url = f"http://{hosts.ip[name]}:{PORT}"
        self.env = {
            **env,
            "CORRAL_HOME": str(home),
            "CORRAL_HOST": hosts.ip[name],
            "CORRAL_PORT": str(PORT),
            "CORRAL_URL": self.url,
            # bound beyond loopback, a daemon wants a key before it listens: its admin key
            "CORRAL_API_KEY": secrets.token_urlsafe(32),
        }
        self.proc: subprocess.Popen | None = None

    def start(self) -> HostDaemon:
        with open(self.home / "daemon-test.log", "ab") as log:
            self.proc = subprocess.Popen(
                self.hosts.exec_args(self.name, sys.executable, "-m", "corral", "serve"),
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for(
            lambda: self.call("GET", "/healthz", key="")["status"] == 200,
            30,
            interval=0.2,
            message=f"daemon on {self.name}",
        )
        return self

    @property
    def token(self) -> str:
        return self.env["CORRAL_API_KEY"]

    def call(self, method: str, path: str, body=None, key: str | None = None, via=None) -> dict:
        """One request to this daemon, made from host ``via`` (default: its own)."""
        key = self.token if key is None else key
        data = json.dumps(body) if body is not None else ""
        out = self.hosts.run(
            via or self.name,
            sys.executable,
            "-c",
            CALL,
            method,
            self.url + path,
            key,
            data,
            env=self.env,
        )
        return json.loads(out.stdout)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return self.hosts.run(
            self.name,
            sys.executable,
            "-m",
            "corral",
            *args,
            check=False,
            env=self.env,
            input=stdin,
        )

    def chat(self, model: str, key: str, via: str | None = None) -> subprocess.CompletedProcess:
        return self.hosts.run(
            via or self.name,
            sys.executable,
            "-c",
            CHAT,
            self.url,
            key,
            model,
            check=False,
            env=self.env,
        )

    def instances(self) -> dict[str, dict]:
        got = self.call("GET", "/api/v1/instances")
        assert got["status"] == 200, got
        return {i["name"]: i for i in got["body"]}

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # `ip netns exec` execs the daemon: this is its pid
        self.proc.wait(10)


@pytest.fixture
def lan(tmp_path, daemon_env):
    """(hosts, {name: HostDaemon}) for ctl, a and b, all up, the nodes linked."""
    hosts = netns.Hosts(["ctl", "a", "b"], SUBNET)
    daemons: dict[str, HostDaemon] = {}
    hubs: list[subprocess.Popen] = []
    try:
        env = {
            **daemon_env,
            **FAST,
            "CORRAL_NODE_POLL_INTERVAL": "0.3",
            "PYTHONPATH": str(REPO),
        }
        # host a has a Hub of its own (on its loopback: only a reaches it)
        hub_model = make_gguf(tmp_path / "hub" / "tiny-Q4_K_M.gguf")
        hub = subprocess.Popen(
            hosts.exec_args("a", sys.executable, "-c", HUB, str(hub_model)),
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        hubs.append(hub)
        a_env = {
            **env,
            "CORRAL_HF_ENDPOINT": hub.stdout.readline().strip(),
            "HF_HUB_DISABLE_XET": "1",
        }
        for name in ("ctl", "a", "b"):
            mine = a_env if name == "a" else env
            daemons[name] = HostDaemon(hosts, name, tmp_path / f"{name}-home", mine).start()
        yield hosts, daemons
    finally:
        from corral.settings import load_settings
        from corral.supervisor.offline import stop_all_offline

        hosts.close()  # kills every daemon, instance and hub inside the namespaces
        for hub in hubs:
            hub.wait(10)
            hub.stdout.close()
        for d in daemons.values():
            if d.proc is not None:
                d.proc.wait(10)  # killed by hosts.close(): reaped here
            settings = load_settings()
            settings.home = d.home
            stop_all_offline(settings, timeout=1.0)


def link(ctl: HostDaemon, node: HostDaemon) -> None:
    made = node.cli("keys", "create", "controller")
    assert made.returncode == 0, made.stderr
    added = ctl.cli("nodes", "add", node.name, node.url, "--key", "-", stdin=made.stdout)
    assert added.returncode == 0, added.stderr


def node_state(ctl: HostDaemon, name: str) -> str:
    got = ctl.call("GET", "/api/v1/nodes")
    return next(n["state"] for n in got["body"] if n["name"] == name)


def test_a_controller_routes_to_two_hosts_survives_a_cut_link_and_its_own_death(lan, tmp_path):
    hosts, d = lan
    ctl, a, b = d["ctl"], d["a"], d["b"]
    alpha = make_gguf(tmp_path / "m" / "alpha-Q4_K_M.gguf")
    beta = make_gguf(tmp_path / "m" / "beta-Q4_K_M.gguf")
    shared = make_gguf(tmp_path / "m" / "shared-Q4_K_M.gguf")
    for node, models in ((a, (alpha, shared)), (b, (beta, shared))):
        for model in models:
            assert node.cli("import", str(model)).returncode == 0
        link(ctl, node)
    listed = json.loads(ctl.cli("nodes", "ls", "--json").stdout)
    assert {n["name"]: n["state"] for n in listed} == {"a": "up", "b": "up"}
    assert {n["url"] for n in listed} == {a.url, b.url}
    key = ctl.cli("keys", "create", "app", "--scope", "inference").stdout.strip()

    # the controller's /v1 through the openai client, from the controller's host:
    # each model is started and served on the host that has it
    for model, home in (("alpha-q4_k_m", a), ("beta-q4_k_m", b)):
        wait_for(lambda m=model: _listed(ctl, m), 30, interval=0.2)
        out = ctl.chat(model, key)
        assert out.returncode == 0 and out.stdout.strip(), out.stderr
        assert list(home.instances()) == [model]
    assert ctl.instances() == {}
    models = {m["id"]: m for m in ctl.call("GET", "/v1/models")["body"]["data"]}
    assert models["shared-q4_k_m"]["nodes"] == ["a", "b"]

    # commands on a node through the controller: run, logs, stop
    ran = ctl.cli("run", str(alpha), "--name", "pinned-alpha", "--node", "a", "--json")
    assert ran.returncode == 0, ran.stderr
    wait_for(lambda: a.instances()["pinned-alpha"]["state"] == "ready", 30, interval=0.2)
    logs = ctl.cli("logs", "pinned-alpha", "--node", "a", "-n", "3")
    assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr
    assert ctl.cli("stop", "pinned-alpha", "--node", "a").returncode == 0
    assert a.instances()["pinned-alpha"]["state"] == "stopped"
    # a pull on a node: a downloads from the Hub only it reaches, the controller follows
    pulled = ctl.cli("pull", "acme/tiny-GGUF:Q4_K_M", "--node", "a", "--json")
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout.splitlines()[-1])["state"] == "done"
    on_a = a.call("GET", "/api/v1/models")["body"]
    assert "acme/tiny-GGUF:Q4_K_M" in {m["id"] for m in on_a}
    assert ctl.call("GET", "/api/v1/models")["body"] == []

    # a's link is cut: a is down within a few polls, and what both have is served by b
    hosts.cut("a")
    wait_for(lambda: node_state(ctl, "a") == "down", 60, interval=0.3, message="a down")
    assert node_state(ctl, "b") == "up"
    out = ctl.chat("shared-q4_k_m", key)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    assert "shared-q4_k_m" in b.instances() and "shared-q4_k_m" not in a.instances()
    # only a has alpha: 503 with the reason, not a hang
    got = ctl.call("POST", "/v1/chat/completions", _chat_body("alpha-q4_k_m"))
    assert got["status"] == 503 and "a: down" in got["body"]["error"]["message"], got
    hosts.mend("a")
    wait_for(lambda: node_state(ctl, "a") == "up", 60, interval=0.3, message="a up again")
    assert ctl.chat("alpha-q4_k_m", key).returncode == 0

    # the controller is killed: every node keeps serving on its own address
    ctl.kill9()
    node_key = b.cli("keys", "create", "direct", "--scope", "inference").stdout.strip()
    out = b.chat("beta-q4_k_m", node_key, via="a")  # from another host, straight to b
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    ctl.start()
    wait_for(lambda: node_state(ctl, "b") == "up", 30, interval=0.3)
    # rm: the controller forgets b; b and its instances run on
    removed = ctl.cli("nodes", "rm", "b")
    assert removed.returncode == 0, removed.stderr
    assert [n["name"] for n in json.loads(ctl.cli("nodes", "ls", "--json").stdout)] == ["a"]
    assert b.instances()["beta-q4_k_m"]["state"] == "ready"


def test_a_node_daemon_killed_is_restarted_with_its_instances_adopted(lan, tmp_path):
    hosts, d = lan
    ctl, a = d["ctl"], d["a"]
    alpha = make_gguf(tmp_path / "m" / "alpha-Q4_K_M.gguf")
    assert a.cli("import", str(alpha)).returncode == 0
    link(ctl, a)
    key = ctl.cli("keys", "create", "app", "--scope", "inference").stdout.strip()
    wait_for(lambda: _listed(ctl, "alpha-q4_k_m"), 30, interval=0.2)
    assert ctl.chat("alpha-q4_k_m", key).returncode == 0
    before = a.instances()["alpha-q4_k_m"]
    a.kill9()
    wait_for(lambda: node_state(ctl, "a") == "down", 60, interval=0.3)
    a.start()
    after = a.instances()["alpha-q4_k_m"]
    assert after["pid"] == before["pid"] and after["state"] == "ready"  # adopted, not relaunched
    wait_for(lambda: node_state(ctl, "a") == "up", 30, interval=0.3)
    seen = ctl.call("GET", "/api/v1/nodes/instances")["body"]["instances"]
    assert [(i["node"], i["name"], i["pid"]) for i in seen] == [
        ("a", "alpha-q4_k_m", before["pid"])
    ]
    out = ctl.chat("alpha-q4_k_m", key)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    assert a.instances()["alpha-q4_k_m"]["pid"] == before["pid"]


def _listed(ctl: HostDaemon, model: str) -> bool:
    data = ctl.call("GET", "/v1/models")["body"]["data"]
    return any(m["id"] == model and m["nodes"] for m in data)


def _chat_body(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def test_hosts_are_removed_after_use():
    hosts = netns.Hosts(["x"], "10.214.9")
    ns = hosts.ns["x"]
    sleeper = subprocess.Popen(hosts.exec_args("x", "sleep", "60"))
    hosts.close()
    assert ns not in netns.sh("ip", "netns", "list").stdout
    assert hosts.bridge not in netns.sh("ip", "link", "show").stdout
    assert sleeper.wait(10) != 0
