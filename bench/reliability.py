#!/usr/bin/env python3
"""Reliability figures of a real ``corral serve``: stops that end, kill -9 that leaves
nothing behind, a daemon that does not grow under load.

Like the tables supervisors publish, three measurements against a real daemon over its
HTTP API, with the fake llama-server of tests/fakes (these are about supervision, not
inference: the fake loads in a settable time, answers /health and /v1/*):

1. **Stop/start/restart/delete cycles** at random moments while instances load (slow
   load, fast probes: the setting that wedged a stop before issue 10). Reported: cycles,
   each operation's count, median and slowest time. Goal: no stop over 15 s.
2. **kill -9 of the daemon at random moments** (during launches, stops, starts,
   deletes), then a new daemon; after each round, the processes of this CORRAL_HOME are
   compared with the instance records. Orphan: a fake llama-server no record owns.
   Duplicate: two servers for one instance. Goal: 0 and 0.
3. **Memory and fds of the daemon** (psutil RSS and open descriptors) before and after
   N routed chat requests and N management calls. Goal: no growth beyond noise.

    python bench/reliability.py [--cycles 200] [--kills 30] [--requests 2000] [--json]

Every run uses its own temporary CORRAL_HOME and ports on 127.0.0.1 and kills what it
started (see _common.isolated_corral).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common as C  # noqa: E402
from tests.fakes import make_fake_binary  # noqa: E402

FAST = {
    "CORRAL_PROBE_INTERVAL": "0.05",
    "CORRAL_PROBE_TIMEOUT": "0.3",
    "CORRAL_PROBE_FAILURES": "3",
    "CORRAL_BACKOFF_INITIAL": "0.05",
    "CORRAL_BACKOFF_MAX": "0.2",
    "CORRAL_STOP_TIMEOUT": "2",
    "CORRAL_LOAD_TIMEOUT": "30",
}


def call(port: int, method: str, path: str, body=None, timeout: float = 60.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else None)
    finally:
        conn.close()


def fake_model(home: Path, name: str, **knobs) -> Path:
    path = home.parent / f"{home.name}-models" / f"{name}-Q4_K_M.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    if knobs:
        (path.parent / f"{path.name}.fake.json").write_text(json.dumps(knobs))
    return path


def start(c: C.Corral) -> None:
    """Start the daemon; when it refuses, show why (its log goes with the temp home)."""
    try:
        c.start_daemon()
    except RuntimeError:
        tail = []
        for name in ("bench-daemon.log", "daemon.log"):
            log = c.home / "logs" / name
            tail += log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        raise RuntimeError("daemon did not start:\n" + "\n".join(tail)) from None


def fake_servers(c: C.Corral, binary: Path) -> list[psutil.Process]:
    """Fake llama-servers whose environment carries this corral's CORRAL_HOME."""
    out = []
    for pid in c.our_processes():
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE and str(binary) in proc.cmdline():
                out.append(proc)
        except psutil.Error:
            continue
    return out


def cycles(binary: Path, n: int, rng: random.Random) -> dict:
    times: dict[str, list[float]] = {}
    with C.isolated_corral("rel-cycles", binary, extra_env=FAST) as c:
        start(c)
        names = ["alpha", "beta"]
        models = {nm: fake_model(c.home, nm, load_seconds=0.6) for nm in names}
        alive = set()
        for _i in range(n):
            nm = rng.choice(names)
            if nm not in alive:
                op, req = (
                    "launch",
                    (
                        "POST",
                        "/api/v1/instances",
                        {"model": str(models[nm]), "name": nm, "restart": "always"},
                    ),
                )
            else:
                op = rng.choices(["stop", "start", "restart", "delete"], [4, 3, 2, 1])[0]
                req = {
                    "stop": ("POST", f"/api/v1/instances/{nm}/stop", None),
                    "start": ("POST", f"/api/v1/instances/{nm}/start", None),
                    "restart": ("POST", f"/api/v1/instances/{nm}/restart", None),
                    "delete": ("DELETE", f"/api/v1/instances/{nm}", None),
                }[op]
            t0 = time.monotonic()
            status, body = call(c.port, *req)
            took = time.monotonic() - t0
            if op == "start" and status == 409:
                op = "start (already running)"
            elif status >= 400:
                raise SystemExit(f"{op} {nm}: HTTP {status} {body}")
            times.setdefault(op, []).append(took)
            if op == "launch":
                alive.add(nm)
            elif op == "delete":
                alive.discard(nm)
            time.sleep(rng.choice([0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8]))
        for nm in list(alive):
            t0 = time.monotonic()
            call(c.port, "POST", f"/api/v1/instances/{nm}/stop")
            times.setdefault("stop", []).append(time.monotonic() - t0)
    return {
        op: {"count": len(v), "median_s": statistics.median(v), "max_s": max(v)}
        for op, v in sorted(times.items())
    }


PULL_REPO, PULL_FILE = "acme/kill-GGUF", "kill-Q4_K_M.gguf"


def _hub_file(size: int) -> bytes:
    """A minimal valid GGUF header (v3, no tensors, no metadata) padded to ``size``."""
    head = b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") * 2
    return head + random.Random(7).randbytes(size - len(head))


def kills(binary: Path, rounds: int, rng: random.Random) -> dict:
    from tests.fakes.fake_hub import FakeHub, Fault

    orphans = duplicates = 0
    worst: list[str] = []
    ops_seen: dict[str, int] = {}
    hub = FakeHub(cdn=True, chunk_size=64 * 1024).start()
    blob = _hub_file(6 * 2**20)
    hub.add_repo(PULL_REPO, files={PULL_FILE: blob})
    # ~1 s per download: a kill lands in the middle of it
    hub.faults[PULL_FILE] = Fault(delay=0.01, times=None)
    env = dict(FAST, CORRAL_HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1")
    pulls = {"started": 0, "verified_after": False, "partials_left": 0, "indexed": 0}
    with C.isolated_corral("rel-kill", binary, extra_env=env) as c:
        c.env["HF_HOME"] = str(c.home / "hf")
        models = {nm: fake_model(c.home, nm, load_seconds=0.3) for nm in ("k1", "k2", "k3")}
        for r in range(rounds):
            start(c)
            insts = {i["name"]: i for i in c.instances()}
            nm = rng.choice(list(models) + ["pull"])
            if nm == "pull":
                op, req = "pull", ("POST", "/api/v1/pulls", {"ref": f"{PULL_REPO}:Q4_K_M"})
                pulls["started"] += 1
            elif nm not in insts:
                op, req = (
                    "launch",
                    ("POST", "/api/v1/instances", {"model": str(models[nm]), "name": nm}),
                )
            else:
                op = rng.choice(["stop", "start", "restart", "delete"])
                req = {
                    "stop": ("POST", f"/api/v1/instances/{nm}/stop", None),
                    "start": ("POST", f"/api/v1/instances/{nm}/start", None),
                    "restart": ("POST", f"/api/v1/instances/{nm}/restart", None),
                    "delete": ("DELETE", f"/api/v1/instances/{nm}", None),
                }[op]
            ops_seen[op] = ops_seen.get(op, 0) + 1
            # Fire the request, and kill -9 the daemon a random moment later.
            conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=30)
            data = json.dumps(req[2]).encode() if req[2] is not None else None
            conn.request(
                req[0],
                req[1],
                body=data,
                headers={"Content-Type": "application/json"} if data else {},
            )
            time.sleep(rng.uniform(0, 0.4))
            os.kill(c.daemon.pid, signal.SIGKILL)
            c.daemon.wait(10)
            conn.close()
            c.daemon = None
            C.wait_port_free(c.port)
            # A new daemon re-adopts; give it time to settle (loads take 0.3 s).
            start(c)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                insts = c.instances()
                if all(i["state"] in ("ready", "stopped", "exited", "failed") for i in insts):
                    break
                time.sleep(0.1)
            records = {i["pid"]: i["name"] for i in c.instances() if i["pid"]}
            procs = fake_servers(c, binary)
            by_port: dict[str, int] = {}
            for p in procs:
                if p.pid not in records:
                    orphans += 1
                    worst.append(f"round {r} ({op}): orphan pid {p.pid}")
                cmd = p.cmdline()
                port = cmd[cmd.index("--port") + 1] if "--port" in cmd else "?"
                by_port[port] = by_port.get(port, 0) + 1
            dup = sum(n - 1 for n in by_port.values() if n > 1)
            if dup:
                duplicates += dup
                worst.append(f"round {r} ({op}): {dup} duplicate(s)")
            c.stop_daemon_only()
        # Every pull killed mid-way: a new pull resumes, verifies and indexes once.
        start(c)
        status, job = call(c.port, "POST", "/api/v1/pulls", {"ref": f"{PULL_REPO}:Q4_K_M"})
        deadline = time.monotonic() + 120
        while status < 400 and time.monotonic() < deadline:
            status, job = call(c.port, "GET", f"/api/v1/pulls/{job['id']}")
            if job["state"] not in ("queued", "running"):
                break
            time.sleep(0.2)
        files = [p for p in (c.home / "models").rglob(PULL_FILE)]
        pulls["verified_after"] = (
            job.get("state") == "done" and len(files) == 1 and files[0].read_bytes() == blob
        )
        pulls["partials_left"] = len(list((c.home / "models").rglob("*.part")))
        _, listed = call(c.port, "GET", "/api/v1/models")
        pulls["indexed"] = sum(1 for m in listed if PULL_FILE.split("-Q")[0] in m.get("name", ""))
        c.stop_daemon_only()
    hub.stop()
    return {
        "rounds": rounds,
        "operations": ops_seen,
        "orphans": orphans,
        "duplicates": duplicates,
        "pulls": pulls,
        "notes": worst[:10],
    }


def growth(binary: Path, n: int) -> dict:
    with C.isolated_corral("rel-mem", binary, extra_env=FAST) as c:
        start(c)
        model = fake_model(c.home, "mem", load_seconds=0.1, tokens=4, token_delay=0)
        status, _ = call(
            c.port, "POST", "/api/v1/instances", {"model": str(model), "name": "mem", "wait": True}
        )
        assert status == 201, status
        daemon = psutil.Process(c.daemon.pid)

        def sample():
            return daemon.memory_info().rss, daemon.num_fds()

        def load(k):
            for i in range(k):
                call(
                    c.port,
                    "POST",
                    "/v1/chat/completions",
                    {"model": "mem", "messages": [{"role": "user", "content": f"hi {i}"}]},
                )
                call(c.port, "GET", "/api/v1/instances")

        load(100)  # warm-up: caches, pools, lazily imported modules
        rss0, fds0 = sample()
        load(n)
        rss1, fds1 = sample()
    return {
        "requests": n * 2,
        "rss_before_mb": rss0 / 2**20,
        "rss_after_mb": rss1 / 2**20,
        "fds_before": fds0,
        "fds_after": fds1,
    }


def report(res: dict) -> str:
    lines = ["| measurement | result |", "|---|---|"]
    cyc = res.get("cycles")
    if cyc:
        total = sum(v["count"] for v in cyc.values())
        stop = cyc.get("stop", {})
        lines.append(
            f"| stop/start/restart/delete cycles while loading | {total} operations; "
            f"slowest stop {stop.get('max_s', 0):.2f} s (median "
            f"{stop.get('median_s', 0) * 1000:.0f} ms, goal < 15 s) |"
        )
        for op, v in cyc.items():
            lines.append(
                f"| &nbsp;&nbsp;{op} | {v['count']}×, median {v['median_s'] * 1000:.0f} ms, "
                f"max {v['max_s'] * 1000:.0f} ms |"
            )
    k = res.get("kills")
    if k:
        ops = ", ".join(f"{o} {n}" for o, n in sorted(k["operations"].items()))
        lines.append(
            f"| kill -9 of the daemon at random moments | {k['rounds']} rounds ({ops}): "
            f"{k['orphans']} orphans, {k['duplicates']} duplicates (goal 0, 0) |"
        )
        p = k.get("pulls")
        if p and p["started"]:
            lines.append(
                f"| &nbsp;&nbsp;pulls killed mid-download, then pulled again | "
                f"{p['started']} killed; afterwards verified byte-exact: "
                f"{'yes' if p['verified_after'] else 'NO'}, indexed {p['indexed']}×, "
                f"partial files left {p['partials_left']} |"
            )
    g = res.get("growth")
    if g:
        lines.append(
            f"| daemon RSS over {g['requests']} requests | {g['rss_before_mb']:.1f} MB → "
            f"{g['rss_after_mb']:.1f} MB |"
        )
        lines.append(
            f"| daemon open fds over {g['requests']} requests | {g['fds_before']} → "
            f"{g['fds_after']} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    C.sigterm_as_interrupt()
    rng = random.Random(args.seed)
    binary = make_fake_binary(Path(os.environ.get("TMPDIR", "/tmp")) / f"corral-rel-{os.getpid()}")
    res = {}
    if args.cycles:
        res["cycles"] = cycles(binary, args.cycles, rng)
    if args.kills:
        res["kills"] = kills(binary, args.kills, rng)
    if args.requests:
        res["growth"] = growth(binary, args.requests)
    print(json.dumps(res, indent=2) if args.json else report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
