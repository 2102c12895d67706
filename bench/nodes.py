#!/usr/bin/env python3
"""Nodes: the controller's hop (``/v1/*`` relayed to a linked node) vs the node direct.

Two real daemons on 127.0.0.1, each with its own CORRAL_HOME: a **node**, which runs the
instance (``bench/fast_upstream.py`` as its ``llama-server``, streaming N tokens at once,
so the daemons' own cost is what shows), its API closed by a key made there; and a
**controller**, which has no model at all and links the node with that key
(``corral nodes add``). The targets, measured in the same run with the same load
generator as ``bench/router.py`` (raw asyncio sockets, one keep-alive connection per
stream, streamed chat completions, rounds interleaved in rotated order):

* instance -- the upstream's own port (for scale);
* node -- the node daemon's ``/v1/chat/completions`` (the reference: "talking to the
  node directly");
* controller -- the controller's ``/v1/chat/completions``: the model is only on the
  node, so every request takes the hop (node placement looked up, the node's key added,
  relayed over the controller's keep-alive pool to the node's daemon, which relays it
  to the instance).

Then the time the controller takes to notice a dead node: the node daemon is killed
(SIGKILL) and ``GET /api/v1/nodes`` on the controller is polled until the node is
``down``, at the default poll interval (10 s; ``--poll`` to change it).

    python bench/nodes.py [--tokens 32] [--levels 1,64] [--scale 1.0] [--poll 10] [--json]
    python bench/nodes.py --real      # the node runs the real llama-server and gemma
    python bench/nodes.py --hosts     # as on two hosts: each daemon on a CPU of its own

With ``--hosts`` the two daemons stop sharing the CPUs, as they would on two machines:
the node daemon and what it runs (the instance; the real llama-server with ``-t 1``) are
pinned to CPU 1, the controller daemon to CPU 0, with the load generator (the clients
then share the controller's CPU, which only makes the hop look worse). Without it every
process shares every CPU, so on a 2-core box the controller's CPU is taken from the node
and its llama-server.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import router as R  # noqa: E402

NAME = "bench-nodes"
TARGETS = ("instance", "node", "controller")
GOALS = {"added_p50_c1": 0.001, "ratio_c64": 0.9}


#: The real model: 8 slots (64 streams queue for them, as a user's would), EOS ignored
#: so every answer is exactly the asked length, greedy.
REAL_FLAGS = ("--ignore-eos", "--parallel", "8", "--ctx-size", "8192")
REAL_PLAN = {1: (12, 3), 64: (64, 3)}
PROMPT = [{"role": "user", "content": "Say something."}]


class Target(R.Target):
    """A router target whose requests carry a bearer key (and, for the real model, ask
    for exactly ``max_tokens`` greedy tokens)."""

    def __init__(self, name, port, model, pids, key: str, max_tokens: int | None = None):
        super().__init__(name, port, model, pids)
        self.key, self.max_tokens = key, max_tokens

    @property
    def request(self) -> bytes:
        body: dict = {"model": self.model, "stream": True, "messages": PROMPT}
        if self.max_tokens:
            body.update(max_tokens=self.max_tokens, temperature=0)
        data = json.dumps(body).encode()
        return (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {self.key}\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode() + data


def _get(port: int, path: str, key: str):
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def _listed_on(ctl: C.Corral, model: str, key: str) -> bool:
    data = _get(ctl.port, "/v1/models", key).get("data", [])
    return any(m["id"] == model and m.get("nodes") for m in data)


def measure_level(targets: dict, c: int, per_round: int, rounds: int, tokens: int) -> dict:
    names = [n for n in TARGETS if n in targets]
    batches: dict[str, list] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            batches[name].append(R.run_batch(targets[name], c, per_round, tokens, "raw"))
    level = {name: R.summarize(b) for name, b in batches.items()}
    ref = level["node"]
    for name, s in level.items():
        if name == "node" or s["ttft_p50"] is None or ref["ttft_p50"] is None:
            continue
        s["added_p50"] = s["ttft_p50"] - ref["ttft_p50"]
        s["added_p99"] = s["ttft_p99"] - ref["ttft_p99"]
        s["ratio"] = s["tokens_per_s"] / ref["tokens_per_s"] if ref["tokens_per_s"] else None
    return level


def notice_dead(ctl: C.Corral, node: C.Corral, admin: str, timeout: float = 180.0) -> float:
    """Seconds from the node daemon's SIGKILL to the controller saying it is down."""
    node.daemon.send_signal(signal.SIGKILL)
    node.daemon.wait(10)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        nodes = _get(ctl.port, "/api/v1/nodes", admin)
        if nodes and nodes[0]["state"] == "down":
            return time.monotonic() - t0
        time.sleep(0.05)
    raise RuntimeError(f"the controller did not notice the dead node in {timeout:g} s")


def run(
    tokens: int = 32,
    levels: tuple[int, ...] = (1, 64),
    scale: float = 1.0,
    poll: float = 10.0,
    verbose: bool = True,
    real: bool = False,
    hosts: bool = False,
) -> dict:
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-nodes-"))
    if real:  # the real llama-server generating: what a user's tok/s becomes
        binary, model, flags, asked = C.real_binary(), C.real_model(), REAL_FLAGS, tokens
        plan = {c: REAL_PLAN.get(c, (c, 2)) for c in levels}
    else:
        (binary, model), flags, asked = R.upstream_files(tmp, tokens), (), None
        plan = {c: R.scaled(c, scale) for c in levels}
    if hosts:
        if not {0, 1} <= os.sched_getaffinity(0):
            raise RuntimeError("--hosts needs CPUs 0 and 1")
        flags = (*flags, "--threads", "1") if real else flags
    out: dict[int, dict] = {}
    before = os.sched_getaffinity(0)
    try:
        with (
            C.isolated_corral("node", binary) as node,
            C.isolated_corral(
                "ctl", binary, extra_env={"CORRAL_NODE_POLL_INTERVAL": str(poll)}
            ) as ctl,
        ):
            if hosts:  # children inherit it: the node daemon, then what it spawns
                os.sched_setaffinity(0, {1})
            node.start_daemon()
            if hosts:
                os.sched_setaffinity(0, {0})
            ctl.start_daemon()
            node.cli("run", str(model), "--name", NAME, *flags)
            inst = next(i for i in node.instances() if i["name"] == NAME)  # before any key
            if hosts:
                pinned = {
                    who: os.sched_getaffinity(pid)
                    for who, pid in (
                        ("node", node.daemon.pid),
                        ("instance", inst["pid"]),
                        ("controller", ctl.daemon.pid),
                    )
                }
                if pinned != {"node": {1}, "instance": {1}, "controller": {0}}:
                    raise RuntimeError(f"pinning did not take: {pinned}")
            key = node.cli("keys", "create", "controller").stdout.strip()
            ctl.cli("nodes", "add", "box", node.url, "--key", key)
            # the controller's callers hold a key of its own, as beyond loopback they must
            mine = ctl.cli("keys", "create", "bench", "--scope", "inference").stdout.strip()
            deadline = time.monotonic() + 60
            while not _listed_on(ctl, NAME, mine):
                if time.monotonic() > deadline:
                    raise RuntimeError("the controller never listed the node's model")
                time.sleep(0.1)
            targets = {
                "instance": Target("instance", inst["port"], NAME, [inst["pid"]], key, asked),
                "node": Target("node", node.port, NAME, [node.daemon.pid], key, asked),
                "controller": Target("controller", ctl.port, NAME, [ctl.daemon.pid], mine, asked),
            }
            if real:  # llama-server's own HTTP server drops some pre-opened keep-alive
                del targets["instance"]  # connections (IncompleteRead): it is for scale only
            say(f"nodes: instance :{inst['port']}, node :{node.port}, controller :{ctl.port}")
            for t in targets.values():
                warm = R.run_batch(t, *((2, 4) if real else (16, 160)), tokens, "raw")
                bad = [r.error for r in warm.results if r.error]
                if bad:
                    raise RuntimeError(f"warm-up against {t.name} failed: {bad[:3]}")
            if [i for i in json.loads(ctl.cli("ps", "--json").stdout) if i.get("node") is None]:
                raise RuntimeError("the controller started an instance of its own")
            for c, (per_round, rounds) in plan.items():
                out[c] = measure_level(targets, c, per_round, rounds, tokens)
                say(
                    f"nodes: c={c}: "
                    + "  ".join(
                        f"{n} p50 {C.ms(s['ttft_p50'] or 0)} {s['tokens_per_s']:.0f} tok/s "
                        f"{s['errors']} err"
                        for n, s in out[c].items()
                    )
                )
            admin = ctl.cli("keys", "create", "bench-admin").stdout.strip()
            noticed = notice_dead(ctl, node, admin)
            say(f"nodes: dead node noticed after {noticed:.1f} s (poll interval {poll:g} s)")
    finally:
        os.sched_setaffinity(0, before)
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "bench": "nodes",
        "upstream": "real" if real else "fast",
        "hosts": hosts,
        "tokens": tokens,
        "plan": plan,
        "scale": scale,
        "levels": out,
        "poll_interval": poll,
        "noticed_dead_s": noticed,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }


def verdicts(res: dict) -> list[tuple[str, bool, str]]:
    out = []
    lv = res["levels"]
    one = lv.get(1) or lv.get("1")
    many = lv.get(64) or lv.get("64")
    if one:
        added = one["controller"]["added_p50"]
        out.append(
            (
                "added p50 of the hop at 1 stream <= 1 ms",
                added <= GOALS["added_p50_c1"],
                f"{added * 1000:+.2f} ms",
            )
        )
    if many:
        ratio = many["controller"]["ratio"]
        out.append(
            (
                "tok/s through the hop at 64 streams >= 0.9x",
                ratio >= GOALS["ratio_c64"],
                f"{ratio:.2f}x",
            )
        )
    return out


def table(res: dict) -> str:
    rounds = ", ".join(f"c={c}: {n} x {r}" for c, (n, r) in res["plan"].items())
    source = (
        "the real llama-server and gemma-3-270m Q4_K_M (greedy, --ignore-eos, 8 slots)"
        if res.get("upstream") == "real"
        else "`bench/fast_upstream.py` (all tokens written at once: the daemons' own cost)"
    )
    cpus = (
        "As on two hosts: the node daemon and its instance pinned to CPU 1"
        + (" (llama-server `-t 1`)" if res.get("upstream") == "real" else "")
        + ", the controller daemon and the load generator to CPU 0. "
        if res.get("hosts")
        else "Every process shares both CPUs (the controller's CPU is taken from the node). "
    )
    lines = [
        f"{cpus}Streaming `POST /v1/chat/completions`, {res['tokens']} tokens per response "
        f"from {source} run by the node; the controller has no model, so each of "
        f"its requests takes the hop; requests per round x rounds ({rounds}), targets "
        "interleaved in rotated order",
        "",
        "| concurrency | target | requests | TTFT p50 | TTFT p99 | added p50 vs node | "
        "added p99 | tokens/s | vs node | errors | CPU / request |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, level in res["levels"].items():
        for name, s in level.items():
            ratio = f"{s['ratio']:.2f}x" if s.get("ratio") else ""
            lines.append(
                f"| {c} | {name} | {s['requests']} | {R._ms(s['ttft_p50'])} | "
                f"{R._ms(s['ttft_p99'])} | {R._added(s.get('added_p50'))} | "
                f"{R._added(s.get('added_p99'))} | {s['tokens_per_s']:.0f} | {ratio} | "
                f"{s['errors']} | {s['cpu_per_request'] * 1e6:.0f} us |"
            )
    lines += [
        "",
        f"Dead node noticed (node daemon SIGKILLed -> `down` on the controller) after "
        f"**{res['noticed_dead_s']:.1f} s** at a {res['poll_interval']:g} s poll interval "
        "(3 missed polls). A request does not wait for that: a node that refuses the "
        "connection is skipped for the next that has the model at once.",
        "",
    ]
    for goal, met, measured in verdicts(res):
        lines.append(f"- {goal}: {measured} (**{'met' if met else 'NOT met'}**)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--levels", default="1,64")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--poll", type=float, default=10.0, help="the controller's poll interval")
    ap.add_argument("--real", action="store_true", help="the real llama-server and gemma")
    ap.add_argument(
        "--hosts", action="store_true", help="node on CPU 1, controller on CPU 0 (as 2 hosts)"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    C.sigterm_as_interrupt()
    try:
        levels = tuple(int(x) for x in args.levels.split(",") if x)
        res = run(args.tokens, levels, args.scale, args.poll, real=args.real, hosts=args.hosts)
    except KeyboardInterrupt:
        print("nodes: interrupted; cleaned up", file=sys.stderr)
        return 130
    print(json.dumps(res, indent=2) if args.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
