"""RPC for real: one model across two "hosts" made of network namespaces.

Three namespaces on a bridge, each with a veth pair and a private address (10.213.0.0/24;
the root namespace gets no address on it, so nothing here is reachable from outside nor
from this machine's own network): ``a`` and ``b`` lend their CPU through a real
``rpc-server`` that a corral daemon of their own runs (``corral rpc start --host
10.213.0.2``: supervised, bound to that address only), and ``c`` is the controller side,
whose corral daemon runs the real llama-server on the real gemma with ``-ngl 99 --rpc
a:50052,b:50052``, and a local instance of the same model beside it. The same greedy
request (temperature 0, fixed seed, 16 tokens) must give the same text through RPC as
locally. Traffic stays on 127.0.0.1 of each namespace and on the namespaces' own
addresses. Everything (daemons, processes, namespaces, the bridge) is removed in a
``finally``, also when the test fails.

Needs root (network namespaces) and a build with ``rpc-server`` beside llama-server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from corral.builds.tools import tools_beside

pytestmark = pytest.mark.real

SUBNET = "10.213.0"
PROMPT = "The three primary colours are"
ASK = (
    "import json, sys, urllib.request\n"
    "port, body = sys.argv[1], sys.argv[2].encode()\n"
    "req = urllib.request.Request(f'http://127.0.0.1:{port}/completion', data=body,\n"
    "    headers={'Content-Type': 'application/json'})\n"
    "print(json.dumps(json.load(urllib.request.urlopen(req, timeout=300))))\n"
)


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


class Hosts:
    """The namespaces, their addresses and the bridge; ``close`` removes them all."""

    def __init__(self, names: tuple[str, ...]) -> None:
        tag = uuid.uuid4().hex[:6]
        self.bridge = f"crlbr{tag}"
        self.ns = {n: f"crl-{n}-{tag}" for n in names}
        self.ip = {n: f"{SUBNET}.{i + 2}" for i, n in enumerate(names)}
        self.veths: list[str] = []

    def up(self) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "link", "set", self.bridge, "up")  # no address: the root ns stays out
        for i, (name, ns) in enumerate(self.ns.items()):
            outer, inner = f"{self.bridge}o{i}", f"{self.bridge}i{i}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            self.veths.append(outer)
            sh("ip", "link", "set", outer, "master", self.bridge)
            sh("ip", "link", "set", outer, "up")
            sh("ip", "link", "set", inner, "netns", ns)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.ip[name]}/24", "dev", inner)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")

    def close(self) -> None:
        for ns in self.ns.values():
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)
        for veth in self.veths:
            sh("ip", "link", "del", veth, check=False)
        sh("ip", "link", "del", self.bridge, check=False)


class Corral:
    """A corral CLI (and the daemon it starts) inside one namespace."""

    def __init__(self, hosts: Hosts, name: str, env: dict[str, str]) -> None:
        self.ns, self.env = hosts.ns[name], env

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        cmd = ["ip", "netns", "exec", self.ns, sys.executable, "-m", "corral", *args]
        return subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def ok(self, *args: str, timeout: float = 300) -> str:
        out = self(*args, timeout=timeout)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        return out.stdout

    def complete(self, port: int, body: dict) -> dict:
        cmd = ["ip", "netns", "exec", self.ns, sys.executable, "-c", ASK, str(port)]
        out = subprocess.run(
            [*cmd, json.dumps(body)], capture_output=True, text=True, timeout=300, check=True
        )
        return json.loads(out.stdout)


def _env(home: Path, binary: Path) -> dict[str, str]:
    home.mkdir(mode=0o700, parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "FAKE_"))}
    env.update(
        CORRAL_HOME=str(home),
        CORRAL_PORT="9380",  # each namespace has its own 127.0.0.1
        CORRAL_URL="http://127.0.0.1:9380",
        CORRAL_LLAMA_SERVER=str(binary),
        CORRAL_LOAD_TIMEOUT="240",
        CORRAL_PROBE_INTERVAL="1.0",
        CORRAL_PROBE_TIMEOUT="10.0",
        CORRAL_STOP_TIMEOUT="10",
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    return env


@pytest.fixture
def hosts():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` (iproute2) to make network namespaces")
    h = Hosts(("a", "b", "c"))
    try:
        try:
            h.up()
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot make network namespaces here: {exc.stderr.strip()}")
        yield h
    finally:
        h.close()


def test_gemma_across_two_rpc_servers_generates_what_it_generates_locally(
    hosts, real_binary, real_model, tmp_path
):
    if "rpc-server" not in tools_beside(real_binary):
        pytest.skip(f"the build at {real_binary.parent} has no rpc-server (GGML_RPC)")
    corral = {n: Corral(hosts, n, _env(tmp_path / n, real_binary)) for n in hosts.ns}
    try:
        # the lenders: a supervised rpc-server each, bound to its namespace's address
        endpoints = []
        for name in ("a", "b"):
            ip = hosts.ip[name]
            started = json.loads(
                corral[name].ok("rpc", "start", "--host", ip, "--port", "50052", "--json")
            )
            assert started["state"] == "ready" and started["endpoint"] == f"{ip}:50052"
            [listed] = json.loads(corral[name].ok("rpc", "ls", "--json"))
            assert listed["pid"] == started["pid"] and "-c" in listed["argv"]
            endpoints.append(started["endpoint"])
        # a 0.0.0.0 bind is refused there too, and nothing more runs for it
        refused = corral["a"]("rpc", "start", "--host", "0.0.0.0")
        assert refused.returncode == 2 and "--insecure" in refused.stderr

        # the controller side: the same model through the two servers, and locally
        c = corral["c"]

        def run(name: str, *flags: str) -> dict:
            common = ("--no-fit", "-c", "1024", "-t", "1")
            return json.loads(
                c.ok("run", str(real_model), "--name", name, *common, *flags, "--json")
            )

        split = run("split", "-ngl", "99", "--rpc", ",".join(endpoints), "-lv", "4")
        local = run("local", "-ngl", "0")
        assert split["state"] == local["state"] == "ready"

        body = {
            "prompt": PROMPT,
            "n_predict": 16,
            "temperature": 0,
            "seed": 42,
            "cache_prompt": False,
        }
        via_rpc = c.complete(split["port"], body)
        here = c.complete(local["port"], body)
        assert via_rpc["tokens_predicted"] == here["tokens_predicted"] == 16
        assert here["content"].strip(), here
        assert via_rpc["content"] == here["content"], (via_rpc["content"], here["content"])

        # the layers really went to the lenders (llama.cpp's -lv 4 buffer lines), each
        # of which served the client, with its tensor cache under its CORRAL_HOME
        split_log = c.ok("logs", "split", "-n", "100000")
        for endpoint in endpoints:  # llama.cpp numbers them in its own order
            held = re.search(
                rf"RPC\d+\[{re.escape(endpoint)}\] model buffer size = +([\d.]+) MiB", split_log
            )
            assert held and float(held.group(1)) > 10, [
                x for x in split_log.splitlines() if "buffer" in x
            ]
        for name in ("a", "b"):
            [server] = json.loads(corral[name].ok("rpc", "ls", "--json"))
            log = corral[name].ok("rpc", "logs", server["name"], "-n", "200")
            assert "Accepted client connection" in log, log
            assert f"local cache    : {tmp_path / name / 'rpc-cache' / 'rpc'}" in log, log
            assert server["restarts"] == 0 and server["state"] == "ready"
    finally:
        for name in ("c", "a", "b"):
            corral[name]("down", timeout=60)
