#!/usr/bin/env python3
"""Router: streaming chat completions through corral's daemon vs direct vs nginx.

One upstream for all three targets: ``bench/fast_upstream.py`` (asyncio, streams its N
tokens at once), launched **by corral** as the instance's ``llama-server`` (``corral run``
before any measurement, so no on-demand start is timed). The targets, measured in the
same run:

* direct -- the instance's own port (the reference);
* corral -- the daemon's ``POST /v1/chat/completions`` with ``model`` = the instance name
  (Host/Origin check, body parse, instance lookup, httpx to the upstream, relay);
* nginx -- Debian's nginx, one worker, as a reverse proxy to the same port
  (``proxy_buffering off; proxy_http_version 1.1;`` upstream ``keepalive``).

Load generator (in this process): asyncio workers, one persistent HTTP/1.1 keep-alive
connection each (opened before the clock starts), each sending streaming requests back to
back until the batch's count is used up; raw sockets by default (``--client httpx`` for
httpx, which costs the 2-core machine noticeably more CPU per request). Per request: time
to first token (request written -> first SSE event with a content delta), tokens
delivered, and an error when the status is not 200, the connection fails, or the stream
does not end with ``[DONE]`` after exactly N tokens.

Load generator and servers share the machine's cores, so the targets are interleaved: at
each concurrency the batch is split in rounds and each round runs direct, corral, nginx in
a rotated order, after one warm-up batch per target. Reported per concurrency and target:
TTFT p50/p99, the added TTFT vs direct (difference of those percentiles), delivered
tokens/s (tokens / batch wall time, summed over rounds) and its ratio to direct, errors,
and the proxy process's CPU time per request (psutil, noise-robust: it does not depend on
what else runs).

    python bench/router.py [--tokens 32] [--scale 1.0] [--levels 1,16,64,256]
                           [--client raw|httpx] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from fast_upstream import make_fast_binary  # noqa: E402

NAME = "bench-router"
#: concurrency -> (requests per round, rounds); batches are whole multiples of the
#: concurrency so every worker runs from the first to the last moment of a round.
PLAN = {1: (100, 4), 16: (160, 4), 64: (384, 3), 256: (768, 2)}
GOALS = {"added_p50_c1": 0.002, "ratio_c64": 0.9}
TARGETS = ("direct", "corral", "nginx")

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/tmp-body;
    proxy_temp_path {prefix}/tmp-proxy;
    fastcgi_temp_path {prefix}/tmp-fastcgi;
    uwsgi_temp_path {prefix}/tmp-uwsgi;
    scgi_temp_path {prefix}/tmp-scgi;
    upstream llama {{
        server 127.0.0.1:{upstream};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://llama;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


# -- load generator -----------------------------------------------------------------------
class SSECount:
    """Counts content tokens in an SSE byte stream, noting when the first one arrived."""

    def __init__(self) -> None:
        self.buf = b""
        self.tokens = 0
        self.first: float | None = None
        self.done = False

    def feed(self, data: bytes, now: float) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\n\n")
            if end < 0:
                return
            event, self.buf = self.buf[:end], self.buf[end + 2 :]
            if event.startswith(b"data: [DONE]"):
                self.done = True
            elif b'"content":"' in event:  # the role delta has "content":null
                self.tokens += 1
                if self.first is None:
                    self.first = now


@dataclass
class Result:
    ttft: float | None
    tokens: int
    error: str | None = None


@dataclass
class Batch:
    results: list[Result] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0  # CPU seconds of the proxy process (or the upstream, for direct)


def request_bytes(port: int, model: str) -> bytes:
    body = json.dumps(
        {
            "model": model,
            "stream": True,
            "messages": [{"role": "user", "content": "Say something."}],
        }
    ).encode()
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _read_stream(reader: asyncio.StreamReader, count: SSECount) -> tuple[int, bool]:
    """Read one response into ``count``; returns (status, connection reusable)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip().lower()
    if headers.get(b"transfer-encoding") == b"chunked":
        while True:
            size = int((await reader.readline()).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readline()
                break
            count.feed((await reader.readexactly(size + 2))[:-2], time.perf_counter())
    elif b"content-length" in headers:
        count.feed(await reader.readexactly(int(headers[b"content-length"])), time.perf_counter())
    else:
        count.feed(await reader.read(), time.perf_counter())
        return status, False
    return status, headers.get(b"connection") != b"close"


class RawWorker:
    """One keep-alive connection sending streaming requests back to back."""

    def __init__(self, port: int, request: bytes, tokens: int) -> None:
        self.port, self.request, self.tokens = port, request, tokens
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def one(self) -> Result:
        count = SSECount()
        try:
            if self.writer is None:
                await self.connect()
            t0 = time.perf_counter()
            self.writer.write(self.request)
            status, reusable = await _read_stream(self.reader, count)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
            IndexError,
        ) as exc:
            self.close()
            return Result(None, count.tokens, type(exc).__name__)
        if not reusable:
            self.close()
        return _check(status, count, t0, self.tokens)


def _check(status: int, count: SSECount, t0: float, tokens: int) -> Result:
    ttft = None if count.first is None else count.first - t0
    if status != 200:
        return Result(ttft, count.tokens, f"HTTP {status}")
    if not count.done or count.tokens != tokens:
        return Result(ttft, count.tokens, f"short stream ({count.tokens}/{tokens} tokens)")
    return Result(ttft, count.tokens)


async def _raw_batch(
    port: int, request: bytes, tokens: int, concurrency: int, n: int
) -> tuple[list[Result], float]:
    return await run_workers([RawWorker(port, request, tokens) for _ in range(concurrency)], n)


async def run_workers(workers: list, n: int) -> tuple[list, float]:
    """``n`` requests over ``workers`` (each: ``connect``, ``one``, ``close``), each sending
    its next as soon as its last is answered: (their results, the wall time)."""
    await asyncio.gather(*(w.connect() for w in workers))
    left = [n]
    results: list = []

    async def drive(w) -> None:
        while left[0] > 0:
            left[0] -= 1
            results.append(await w.one())

    t0 = time.perf_counter()
    await asyncio.gather(*(drive(w) for w in workers))
    wall = time.perf_counter() - t0
    for w in workers:
        w.close()
    return results, wall


async def _httpx_batch(
    port: int, request: bytes, tokens: int, concurrency: int, n: int
) -> tuple[list[Result], float]:
    import httpx

    head, body = request.split(b"\r\n\r\n", 1)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one() -> Result:
            count = SSECount()
            t0 = time.perf_counter()
            try:
                async with client.stream("POST", url, content=body, headers=headers) as resp:
                    async for chunk in resp.aiter_raw():
                        count.feed(chunk, time.perf_counter())
            except httpx.HTTPError as exc:
                return Result(None, count.tokens, type(exc).__name__)
            return _check(resp.status_code, count, t0, tokens)

        await asyncio.gather(*(one() for _ in range(concurrency)))  # open the pool, untimed
        left = [n]
        results: list[Result] = []

        async def drive() -> None:
            while left[0] > 0:
                left[0] -= 1
                results.append(await one())

        t0 = time.perf_counter()
        await asyncio.gather(*(drive() for _ in range(concurrency)))
        return results, time.perf_counter() - t0


def run_batch(target: "Target", concurrency: int, n: int, tokens: int, client: str) -> Batch:
    batch_fn = _raw_batch if client == "raw" else _httpx_batch
    cpu0 = target.cpu()
    results, wall = asyncio.run(batch_fn(target.port, target.request, tokens, concurrency, n))
    return Batch(results, wall, target.cpu() - cpu0)


# -- targets --------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    port: int
    model: str
    pids: list[int]  # whose CPU time counts for this target

    @property
    def request(self) -> bytes:
        return request_bytes(self.port, self.model)

    def cpu(self) -> float:
        import psutil

        total = 0.0
        for pid in self.pids:
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total


def nginx_exe() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


def start_nginx(prefix: Path, upstream: int, procs: list[subprocess.Popen]) -> tuple[int, int]:
    """nginx on a free port proxying to 127.0.0.1:upstream; returns (port, worker pid)."""
    import psutil

    exe = nginx_exe()
    if exe is None:
        raise SystemExit("bench: nginx not found (apt-get install nginx-light)")
    prefix.mkdir(parents=True)
    os.chmod(prefix, 0o755)
    port = C.free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, upstream=upstream))
    with open(prefix / "stderr.log", "ab") as log:
        proc = subprocess.Popen(
            [exe, "-p", str(prefix), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    procs.append(proc)
    deadline = time.monotonic() + 10
    while C.http_status(port, "/health") != 200:
        if proc.poll() is not None:
            raise RuntimeError(
                f"nginx exited {proc.returncode}: {(prefix / 'stderr.log').read_text()[-500:]}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError("nginx did not answer within 10 s")
        time.sleep(0.05)
    workers = psutil.Process(proc.pid).children()
    return port, (workers[0].pid if workers else proc.pid)


def stop_proc(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


# -- statistics ---------------------------------------------------------------------------
def percentile(xs: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(xs)
    k = q * (len(s) - 1)
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(batches: list[Batch]) -> dict:
    results = [r for b in batches for r in b.results]
    ttfts = [r.ttft for r in results if r.error is None]
    errors: dict[str, int] = {}
    for r in results:
        if r.error:
            errors[r.error] = errors.get(r.error, 0) + 1
    wall = sum(b.wall for b in batches)
    tokens = sum(r.tokens for r in results)
    return {
        "requests": len(results),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "ttft_p50": percentile(ttfts, 0.5) if ttfts else None,
        "ttft_p99": percentile(ttfts, 0.99) if ttfts else None,
        "tokens": tokens,
        "wall": wall,
        "tokens_per_s": tokens / wall if wall else 0.0,
        "round_tokens_per_s": [sum(r.tokens for r in b.results) / b.wall for b in batches],
        "cpu_per_request": sum(b.cpu for b in batches) / max(len(results), 1),
    }


def compare(level: dict) -> None:
    """Add each target's added TTFT and throughput ratio vs direct, in place."""
    d = level["direct"]
    for name, s in level.items():
        if name == "direct" or s["ttft_p50"] is None or d["ttft_p50"] is None:
            continue
        s["added_p50"] = s["ttft_p50"] - d["ttft_p50"]
        s["added_p99"] = s["ttft_p99"] - d["ttft_p99"]
        s["ratio"] = s["tokens_per_s"] / d["tokens_per_s"] if d["tokens_per_s"] else None


# -- the run -------------------------------------------------------------------------------
def scaled(concurrency: int, scale: float) -> tuple[int, int]:
    """(requests per round, rounds) at this concurrency, a whole multiple of it."""
    per_round, rounds = PLAN.get(concurrency, (concurrency * 4, 2))
    return max(concurrency, int(per_round * scale) // concurrency * concurrency), rounds


def upstream_files(tmp: Path, tokens: int) -> tuple[Path, Path]:
    """The fast upstream as a ``llama-server`` binary, and a model whose sidecar sets N."""
    binary = make_fast_binary(tmp / "bin")
    model = tmp / "models" / f"{NAME}-Q4_K_M.gguf"
    model.parent.mkdir()
    model.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    Path(str(model) + ".fake.json").write_text(json.dumps({"tokens": tokens}))
    return binary, model


def measure_level(
    targets: dict[str, Target],
    concurrency: int,
    per_round: int,
    rounds: int,
    tokens: int,
    client: str,
) -> dict:
    """One concurrency level: rounds of every target in rotated order, then the summary."""
    batches: dict[str, list[Batch]] = {name: [] for name in TARGETS}
    for r in range(rounds):
        for name in TARGETS[r % 3 :] + TARGETS[: r % 3]:
            batches[name].append(run_batch(targets[name], concurrency, per_round, tokens, client))
    level = {name: summarize(b) for name, b in batches.items()}
    compare(level)
    return level


def run(
    tokens: int = 32,
    scale: float = 1.0,
    levels: tuple[int, ...] = (1, 16, 64, 256),
    client: str = "raw",
    verbose: bool = True,
) -> dict:
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)
    if nginx_exe() is None:
        raise SystemExit("bench: nginx not found (apt-get install nginx-light)")
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-router-"))
    procs: list[subprocess.Popen] = []
    binary, model = upstream_files(tmp, tokens)
    levels_out: dict[int, dict] = {}
    plan = {c: scaled(c, scale) for c in levels}
    try:
        with C.isolated_corral("router", binary) as corral:
            corral.start_daemon()
            corral.cli("run", str(model), "--name", NAME)
            inst = next(i for i in corral.instances() if i["name"] == NAME)
            nginx_port, nginx_pid = start_nginx(tmp / "nginx", inst["port"], procs)
            targets = {
                "direct": Target("direct", inst["port"], NAME, [inst["pid"]]),
                "corral": Target("corral", corral.port, NAME, [corral.daemon.pid]),
                "nginx": Target("nginx", nginx_port, NAME, [nginx_pid]),
            }
            say(
                f"router: upstream pid {inst['pid']} port {inst['port']}, corral daemon pid "
                f"{corral.daemon.pid}, nginx worker pid {nginx_pid}; {tokens} tokens/response"
            )
            for t in targets.values():  # warm-up: pools, keep-alive upstreams, code paths
                warm = run_batch(t, 16, 160, tokens, client)
                bad = [r.error for r in warm.results if r.error]
                if bad:
                    raise RuntimeError(f"warm-up against {t.name} failed: {bad[:3]}")
            for c, (per_round, rounds) in plan.items():
                level = levels_out[c] = measure_level(targets, c, per_round, rounds, tokens, client)
                say(
                    f"router: c={c}: "
                    + "  ".join(
                        f"{n} p50 {C.ms(s['ttft_p50'] or 0)} {s['tokens_per_s']:.0f} tok/s "
                        f"{s['errors']} err"
                        for n, s in level.items()
                    )
                )
    finally:
        for proc in procs:
            stop_proc(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "bench": "router",
        "tokens": tokens,
        "client": client,
        "plan": plan,
        "scale": scale,
        "levels": levels_out,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }


# -- report --------------------------------------------------------------------------------
def _ms(x: float | None) -> str:
    return "" if x is None else f"{x * 1000:.2f} ms"


def _added(x: float | None) -> str:
    return "" if x is None else f"{x * 1000:+.2f} ms"


def verdicts(res: dict) -> list[tuple[str, bool | None, str]]:
    """(goal, met, measured) for corral; met is None when that level was not run."""
    lv = res["levels"]
    out = []
    c1 = lv.get(1, lv.get("1"))
    if c1:
        a = c1["corral"].get("added_p50")
        out.append(
            (
                "added TTFT p50 <= 2 ms at concurrency 1",
                a is not None and a <= GOALS["added_p50_c1"],
                _added(a),
            )
        )
    c64 = lv.get(64, lv.get("64"))
    if c64:
        r = c64["corral"].get("ratio")
        out.append(
            (
                ">= 0.9x direct tokens/s at concurrency 64",
                r is not None and r >= GOALS["ratio_c64"],
                f"{r:.2f}x" if r else "?",
            )
        )
    c256 = lv.get(256, lv.get("256"))
    if c256:
        e = c256["corral"]["errors"]
        out.append(("no errors at concurrency 256", e == 0, f"{e} errors"))
    return out


def table(res: dict) -> str:
    labels = {"direct": "direct (reference)", "corral": "corral daemon", "nginx": "nginx"}
    rounds = ", ".join(f"c={c}: {n} x {r}" for c, (n, r) in res["plan"].items())
    lines = [
        f"Streaming `POST /v1/chat/completions`, {res['tokens']} tokens per response written at "
        "once by `bench/fast_upstream.py` (one upstream, launched by corral, for all targets); "
        f"{res['client']} asyncio client in the benchmark process, one keep-alive connection per "
        f"concurrent stream; requests per round x rounds ({rounds}; scale {res['scale']:g}), "
        "targets interleaved in rotated order each round",
        "",
        "| concurrency | target | requests | TTFT p50 | TTFT p99 | added p50 | added p99 | "
        "tokens/s | vs direct | errors | CPU / request |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, level in res["levels"].items():
        for name, s in level.items():
            ratio = f"{s['ratio']:.2f}x" if s.get("ratio") else ""
            whose = "upstream" if name == "direct" else "proxy"
            lines.append(
                f"| {c} | {labels.get(name, name)} | {s['requests']} | {_ms(s['ttft_p50'])} | "
                f"{_ms(s['ttft_p99'])} | {_added(s.get('added_p50'))} | "
                f"{_added(s.get('added_p99'))} | {s['tokens_per_s']:.0f} | {ratio} | "
                f"{s['errors']} | {whose} {s['cpu_per_request'] * 1e6:.0f} us |"
            )
    lines += [
        "",
        "CPU / request: user+system CPU time of the proxy process (corral's daemon, nginx's "
        "worker; for direct, the upstream's) over its batches, divided by their requests (10 ms "
        "clock ticks); it "
        "does not depend on what else runs. Client, upstream and proxy share the machine's "
        "cores, so at high concurrency the direct reference is itself CPU-bound and a proxy "
        "that batches writes (nginx) can come out above 1.0x.",
        "",
    ]
    for goal, met, measured in verdicts(res):
        lines.append(f"- corral, {goal}: {measured} (**{'met' if met else 'NOT met'}**)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=32, help="tokens per response (default 32)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the request counts")
    ap.add_argument("--levels", default="1,16,64,256", help="concurrency levels")
    ap.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator HTTP client (default raw asyncio sockets)",
    )
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = ap.parse_args(argv)
    C.sigterm_as_interrupt()
    try:
        res = run(
            args.tokens, args.scale, tuple(int(x) for x in args.levels.split(",") if x), args.client
        )
    except KeyboardInterrupt:
        print("router: interrupted; cleaned up", file=sys.stderr)
        return 130
    print(json.dumps(res, indent=2) if args.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
