#!/usr/bin/env python3
"""Ollama translation: streamed ``POST /api/chat`` vs ``POST /v1/chat/completions``.

Both through the same corral daemon, to the same instance, measured in the same run: the
OpenAI request is relayed as it is (SSE passthrough, the reference); the Ollama request is
read and translated by ``corral.api.ollama`` (which calls ``corral.ollama``'s pure
functions), handed to the same relay in process, and its SSE answer turned into Ollama's
NDJSON line by line. What the Ollama path costs on top is the difference.

The upstream is the router benchmark's (``bench/fast_upstream.py``: asyncio, N
``chat.completion.chunk`` events written at once, so the daemon and not a model is
measured), launched by corral as the instance's ``llama-server`` (``corral run`` before
any timing), and the load generator is the router benchmark's too: asyncio on raw
sockets in this process, one keep-alive HTTP/1.1 connection per concurrent stream, each
sending streaming requests back to back.

Per request: the whole answer's latency (request written -> last byte of the response),
time to first token (-> first SSE event / NDJSON line with content), tokens delivered;
an error when the status is not 200 or the stream does not end (``[DONE]``, or Ollama's
``"done":true`` line) after exactly N tokens. Per batch: tokens / wall time, and the
daemon's CPU time (psutil, user + system) divided by its requests. At each concurrency
the batches are split in rounds, each running both targets in alternating order, after
a warm-up of each.

Also measured, in this process: the translation functions alone on the same bytes
(``chat_request`` + the JSON the relay is handed, and ``StreamTranslator`` over the
upstream's SSE stream, fed whole and event by event), so the daemon's added CPU can be
split into the pure translation and the rest (the ASGI layer, the route lookup).

    python bench/ollama.py [--runs 4] [--streams 1,64] [--tokens 64] [--scale 1] [--json]
    python bench/ollama.py --real --tokens 32 --runs 2   (the real llama-server and gemma)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import timeit
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import router as R  # noqa: E402  (the upstream files, the raw HTTP reader, percentiles)

NAME = "bench-ollama"
#: concurrency -> requests per round (a whole multiple of the concurrency).
PER_ROUND = {1: 100, 16: 160, 64: 384, 256: 768}
TARGETS = ("openai", "ollama")
LABELS = {"openai": "`/v1/chat/completions` (SSE passthrough)", "ollama": "`/api/chat` (NDJSON)"}
GOALS = {"added_p50": 0.001, "ratio": 0.9}
#: The real model: 8 slots (64 streams queue for them, as they would for a user), EOS
#: ignored so that each answer is exactly the asked length in both dialects.
REAL_FLAGS = ("--ignore-eos", "--parallel", "8", "--ctx-size", "8192")
REAL_PER_ROUND = {1: 8, 64: 64}
#: warm-up batch (concurrency, requests): fast upstream, real model
WARM = {False: (16, 160), True: (2, 4)}
PROMPT = [{"role": "user", "content": "Say something."}]


# -- load generator -----------------------------------------------------------------------
class NDJSONCount:
    """Counts content lines in an Ollama NDJSON byte stream (the same fields as
    ``router.SSECount``: tokens, first, done)."""

    def __init__(self) -> None:
        self.buf = b""
        self.tokens = 0
        self.first: float | None = None
        self.done = False

    def feed(self, data: bytes, now: float) -> None:
        self.buf += data
        end = self.buf.rfind(b"\n")
        if end < 0:
            return
        lines, self.buf = self.buf[:end].split(b"\n"), self.buf[end + 1 :]
        for line in lines:
            if b'"done":false' in line:
                if b'"content":""' in line:
                    continue
                self.tokens += 1
                if self.first is None:
                    self.first = now
            elif b'"done":true' in line:
                self.done = True


@dataclass
class Result:
    ttft: float | None
    total: float | None
    tokens: int
    error: str | None = None


@dataclass
class Batch:
    results: list[Result] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0  # CPU seconds of the daemon over the batch


def request_bytes(port: int, target: str, model: str, max_tokens: int | None = None) -> bytes:
    """The streaming request of ``target``; with ``max_tokens`` (the real model) each
    dialect's own length limit and greedy sampling, the same for both."""
    body: dict = {"model": model, "stream": True, "messages": PROMPT}
    if target == "openai":
        path, accept = "/v1/chat/completions", "text/event-stream"
        if max_tokens:
            body.update(max_tokens=max_tokens, temperature=0)
    else:
        path, accept = "/api/chat", "application/x-ndjson"
        if max_tokens:
            body["options"] = {"num_predict": max_tokens, "temperature": 0}
    body = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nAccept: {accept}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Worker:
    """One keep-alive connection sending streaming requests back to back."""

    def __init__(self, port: int, request: bytes, counter, tokens: int) -> None:
        self.port, self.request, self.counter, self.tokens = port, request, counter, tokens
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def one(self) -> Result:
        count = self.counter()
        try:
            if self.writer is None:
                await self.connect()
            t0 = time.perf_counter()
            self.writer.write(self.request)
            status, reusable = await R._read_stream(self.reader, count)
            total = time.perf_counter() - t0
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            self.close()
            return Result(None, None, count.tokens, type(e).__name__)
        if not reusable:
            self.close()
        checked = R._check(status, count, t0, self.tokens)
        return Result(checked.ttft, total, count.tokens, checked.error)


async def _batch(
    port: int, request: bytes, counter, tokens: int, concurrency: int, n: int
) -> tuple[list[Result], float]:
    workers = [Worker(port, request, counter, tokens) for _ in range(concurrency)]
    return await R.run_workers(workers, n)


@dataclass
class Target:
    name: str
    port: int
    model: str
    pid: int  # the daemon's
    max_tokens: int | None = None  # set for the real model (it is asked for N tokens)

    def cpu(self) -> float:
        import psutil

        t = psutil.Process(self.pid).cpu_times()
        return t.user + t.system

    def run(self, concurrency: int, n: int, tokens: int) -> Batch:
        request = request_bytes(self.port, self.name, self.model, self.max_tokens)
        counter = R.SSECount if self.name == "openai" else NDJSONCount
        cpu0 = self.cpu()
        results, wall = asyncio.run(_batch(self.port, request, counter, tokens, concurrency, n))
        return Batch(results, wall, self.cpu() - cpu0)


# -- statistics ---------------------------------------------------------------------------
def summarize(batches: list[Batch]) -> dict:
    results = [r for b in batches for r in b.results]
    ok = [r for r in results if r.error is None]
    errors: dict[str, int] = {}
    for r in results:
        if r.error:
            errors[r.error] = errors.get(r.error, 0) + 1
    wall = sum(b.wall for b in batches)
    tokens = sum(r.tokens for r in results)

    def pct(xs: list[float], q: float) -> float | None:
        return R.percentile(xs, q) if xs else None

    totals = [r.total for r in ok]
    ttfts = [r.ttft for r in ok]
    return {
        "requests": len(results),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "total_p50": pct(totals, 0.5),
        "total_p90": pct(totals, 0.9),
        "ttft_p50": pct(ttfts, 0.5),
        "ttft_p90": pct(ttfts, 0.9),
        "tokens": tokens,
        "wall": wall,
        "tokens_per_s": tokens / wall if wall else 0.0,
        "round_tokens_per_s": [sum(r.tokens for r in b.results) / b.wall for b in batches],
        "cpu_per_request": sum(b.cpu for b in batches) / max(len(results), 1),
    }


def compare(level: dict) -> None:
    """The Ollama path's added latency, CPU and throughput ratio vs the passthrough."""
    o, s = level["openai"], level["ollama"]
    for key in ("total_p50", "total_p90", "ttft_p50", "ttft_p90"):
        if o[key] is not None and s[key] is not None:
            s["added_" + key] = s[key] - o[key]
    s["added_cpu_per_request"] = s["cpu_per_request"] - o["cpu_per_request"]
    s["ratio"] = s["tokens_per_s"] / o["tokens_per_s"] if o["tokens_per_s"] else None


# -- the translation alone ------------------------------------------------------------------
def _dechunk(response: bytes) -> list[bytes]:
    """The chunks' payloads of a chunked HTTP/1.1 response."""
    rest = response.split(b"\r\n\r\n", 1)[1]
    out = []
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return out
        out.append(rest[:size])
        rest = rest[size + 2 :]


def isolated(tokens: int, model: str = NAME, number: int = 2000) -> dict:
    """Microseconds per request of the pure translation on the bench's own bytes."""
    from fast_upstream import Answers

    from corral import ollama

    events = _dechunk(Answers(model, tokens).stream(tokens))  # one SSE event per HTTP chunk
    sse = b"".join(events)
    raw = json.dumps({"model": model, "stream": True, "messages": PROMPT}).encode()

    def request() -> None:
        body = ollama.check_body(raw)
        ollama.model_of(body)
        ollama.keep_alive_seconds(body.get("keep_alive"))
        payload, _ = ollama.chat_request(body, model)
        ollama.num_ctx_of(body)
        ollama.is_empty("chat", body)
        json.dumps(payload).encode()

    def whole() -> None:
        t = ollama.StreamTranslator("chat", model, time.perf_counter())
        t.feed(sse)
        t.finish()

    def by_event() -> None:
        t = ollama.StreamTranslator("chat", model, time.perf_counter())
        for e in events:
            t.feed(e)
        t.finish()

    def check() -> int:
        t = ollama.StreamTranslator("chat", model, time.perf_counter())
        out = b"".join(t.feed(sse)) + t.finish()
        return out.count(b'"done":false')

    if check() != tokens:
        raise RuntimeError(f"isolated: the translator gave {check()} lines, not {tokens}")
    out = {}
    for name, fn in (("request", request), ("stream_whole", whole), ("stream_by_event", by_event)):
        best = min(timeit.repeat(fn, number=number // 4 or 1, repeat=5)) / (number // 4 or 1)
        out[name] = best
    out["events"] = len(events)
    return out


# -- the run -------------------------------------------------------------------------------
def measure_level(targets: dict[str, Target], c: int, per_round: int, runs: int, tokens: int):
    batches: dict[str, list[Batch]] = {name: [] for name in TARGETS}
    for r in range(runs):
        for name in TARGETS if r % 2 == 0 else TARGETS[::-1]:
            batches[name].append(targets[name].run(c, per_round, tokens))
    level = {name: summarize(b) for name, b in batches.items()}
    compare(level)
    return level


def run(
    runs: int = 4,
    streams: tuple[int, ...] = (1, 64),
    tokens: int = 64,
    scale: float = 1.0,
    verbose: bool = True,
    real: bool = False,
) -> dict:
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-ollama-"))
    if real:  # the real llama-server generating: what a user's tok/s becomes
        binary, model, flags, per = C.real_binary(), C.real_model(), REAL_FLAGS, REAL_PER_ROUND
    else:
        (binary, model), flags, per = R.upstream_files(tmp, tokens), (), PER_ROUND
    plan = {
        c: max(c, int(per.get(c, 4 * c) * scale) // c * c) for c in streams
    }  # requests per round
    levels: dict[int, dict] = {}
    try:
        with C.isolated_corral("ollama", binary) as corral:
            corral.start_daemon()
            corral.cli("run", str(model), "--name", NAME, *flags)
            inst = next(i for i in corral.instances() if i["name"] == NAME)
            pid = corral.daemon.pid
            asked = tokens if real else None
            targets = {t: Target(t, corral.port, NAME, pid, asked) for t in TARGETS}
            say(
                f"ollama: upstream pid {inst['pid']} port {inst['port']}, corral daemon pid "
                f"{pid} port {corral.port}; {tokens} tokens/response"
            )
            for t in targets.values():  # warm-up: the relay's pool, code paths
                bad = [r.error for r in t.run(*WARM[real], tokens).results if r.error]
                if bad:
                    raise RuntimeError(f"warm-up of {t.name} failed: {bad[:3]}")
            for c, per_round in plan.items():
                level = levels[c] = measure_level(targets, c, per_round, runs, tokens)
                o, s = level["openai"], level["ollama"]
                say(
                    f"ollama: c={c}: total p50 openai {_ms(o['total_p50'])} ollama "
                    f"{_ms(s['total_p50'])} ({_added(s.get('added_total_p50'))}); tok/s "
                    f"{o['tokens_per_s']:.0f} / {s['tokens_per_s']:.0f} ({s['ratio']:.2f}x); "
                    f"CPU/request {o['cpu_per_request'] * 1e6:.0f} / "
                    f"{s['cpu_per_request'] * 1e6:.0f} us; errors {o['errors']} / {s['errors']}"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()
    return {
        "bench": "ollama",
        "upstream": "real" if real else "fast",
        "tokens": tokens,
        "runs": runs,
        "plan": plan,
        "scale": scale,
        "levels": levels,
        "isolated": None if real else isolated(tokens),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }


# -- report --------------------------------------------------------------------------------
def _ms(x: float | None) -> str:
    return "" if x is None else f"{x * 1000:.2f} ms"


def _added(x: float | None) -> str:
    return "" if x is None else f"{x * 1000:+.2f} ms"


def _us(x: float | None) -> str:
    return "" if x is None else f"{x * 1e6:.0f} us"


def verdicts(res: dict) -> list[tuple[str, bool, str]]:
    out = []
    for c, level in res["levels"].items():
        s = level["ollama"]
        a, r = s.get("added_total_p50"), s.get("ratio")
        out.append(
            (
                f"added p50 (whole answer) <= 1 ms at {c} stream{'s' if int(c) > 1 else ''}",
                a is not None and a <= GOALS["added_p50"],
                _added(a),
            )
        )
        out.append(
            (
                f">= 0.9x the passthrough's tokens/s at {c} stream{'s' if int(c) > 1 else ''}",
                r is not None and r >= GOALS["ratio"],
                f"{r:.2f}x" if r else "?",
            )
        )
    return out


def table(res: dict) -> str:
    plan = ", ".join(f"c={c}: {n} x {res['runs']}" for c, n in res["plan"].items())
    la = lambda t: " / ".join(f"{x:.2f}" for x in t)  # noqa: E731
    if res.get("upstream") == "real":
        by = (
            "the real llama-server generating with the real gemma-3-270m Q4_K_M (greedy, "
            f"`{' '.join(REAL_FLAGS)}`, so both dialects get exactly that many tokens)"
        )
    else:
        by = "`bench/fast_upstream.py` written at once (launched by corral as the instance)"
    lines = [
        f"Streamed chat, {res['tokens']} tokens per answer from {by}, through one corral "
        "daemon: `POST /api/chat` (Ollama, NDJSON) against `POST /v1/chat/completions` (SSE "
        "passthrough, the reference) to the same instance; raw asyncio client, one "
        f"keep-alive connection per stream; requests per round x rounds ({plan}), the two "
        "interleaved in alternating order. Load average (1/5/15 min) "
        f"{la(res['loadavg_before'])} before, {la(res['loadavg_after'])} after.",
        "",
        "| streams | path | requests | answer p50 | answer p90 | added p50 | added p90 | "
        "TTFT p50 | added TTFT p50 | tokens/s | vs passthrough | errors | daemon CPU / request |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, level in res["levels"].items():
        for name, s in level.items():
            ratio = f"{s['ratio']:.2f}x" if s.get("ratio") else ""
            cpu = _us(s["cpu_per_request"])
            if "added_cpu_per_request" in s:
                cpu += f" (+{s['added_cpu_per_request'] * 1e6:.0f})"
            lines.append(
                f"| {c} | {LABELS[name]} | {s['requests']} | {_ms(s['total_p50'])} | "
                f"{_ms(s['total_p90'])} | {_added(s.get('added_total_p50'))} | "
                f"{_added(s.get('added_total_p90'))} | {_ms(s['ttft_p50'])} | "
                f"{_added(s.get('added_ttft_p50'))} | {s['tokens_per_s']:.0f} | {ratio} | "
                f"{s['errors']} | {cpu} |"
            )
    iso = res.get("isolated") or {}
    lines += [
        "",
        "answer: request written -> last byte of the response; TTFT: -> first content event "
        "or line. Daemon CPU / request: user+system CPU time of corral's daemon over a path's "
        "batches divided by their requests (10 ms clock ticks; it does not depend on what "
        "else runs). At 64 streams the daemon is CPU-bound, so the added latency there is "
        "mostly the added CPU of the 64 requests ahead in the queue, not one request's.",
    ]
    if iso:
        lines += [
            "",
            f"The pure translation alone (`corral.ollama`, in process, best of 5): request "
            f"(parse, `chat_request`, the relay's JSON) {_us(iso['request'])}, "
            f"`StreamTranslator` over the {res['tokens']}-token SSE answer "
            f"{_us(iso['stream_whole'])} fed whole, {_us(iso['stream_by_event'])} fed "
            f"event by event ({iso['events']} events).",
        ]
    lines.append("")
    for goal, met, measured in verdicts(res):
        lines.append(f"- `/api/chat`, {goal}: {measured} (**{'met' if met else 'NOT met'}**)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=4, help="interleaved rounds per level (4)")
    ap.add_argument("--streams", default="1,64", help="concurrent streams (1,64)")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per answer (64)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the requests per round")
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON")
    ap.add_argument(
        "--real",
        action="store_true",
        help="the real llama-server and gemma (CORRAL_TEST_LLAMA_SERVER, CORRAL_TEST_MODEL) "
        "instead of the fast fake upstream; use with --tokens 32",
    )
    args = ap.parse_args(argv)
    C.sigterm_as_interrupt()
    try:
        res = run(
            args.runs,
            tuple(int(x) for x in args.streams.split(",") if x),
            args.tokens,
            args.scale,
            real=args.real,
        )
    except KeyboardInterrupt:
        print("ollama: interrupted; cleaned up", file=sys.stderr)
        return 130
    print(json.dumps(res, indent=2) if args.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
