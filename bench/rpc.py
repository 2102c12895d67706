#!/usr/bin/env python3
"""RPC: tok/s of the real gemma run locally vs through one and two rpc-servers, on loopback.

For scale, not for a verdict: on one machine the rpc-servers compute on the same CPU
as a local run would, so what this shows is what the RPC hop costs (every layer's
activations over TCP, one round trip per graph split, per token), not what a second
machine's GPU would bring.

One isolated corral (temporary CORRAL_HOME, its own daemon on 127.0.0.1) runs two
supervised rpc-servers (``corral rpc start``, 127.0.0.1, ``--threads T``) and, one after
the other (an rpc-server serves one client at a time), three instances of the model:
``local`` (``-ngl 0``), ``rpc x1`` (``-ngl 99 --rpc A``), ``rpc x2`` (``-ngl 99 --rpc
A,B``, llama.cpp's own split by free memory), each with ``-t T -c 2048``. For each: the
load time (spawn to ready, the daemon's timestamps), one warm-up request, then ``--runs``
greedy completions of ``--tokens`` tokens; reported is llama-server's own generation and
prompt figures (``timings.predicted_per_second``, ``prompt_per_second``), median of the
runs, and whether the text equals the local one.

    python bench/rpc.py [--runs 5] [--tokens 64] [--threads 2] [--binary PATH] [--model GGUF]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def complete(port: int, tokens: int) -> dict:
    body = {
        "prompt": PROMPT,
        "n_predict": tokens,
        "temperature": 0,
        "seed": 1,
        "cache_prompt": False,
        "ignore_eos": True,
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", "/completion", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = json.loads(resp.read())
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"/completion answered {resp.status}: {data}")
    return data


def measure(corral: C.Corral, name: str, model: Path, flags: list[str], args) -> dict:
    out = corral.cli("run", str(model), "--name", name, "--no-fit", *flags, "--json")
    inst = json.loads(out.stdout)
    load = inst["ready_at"] - inst["started_at"]
    complete(inst["port"], 8)  # warm-up
    runs = [complete(inst["port"], args.tokens) for _ in range(args.runs)]
    corral.cli("delete", name)
    gen = [r["timings"]["predicted_per_second"] for r in runs]
    prompt = [r["timings"]["prompt_per_second"] for r in runs]
    return {
        "load_s": load,
        "gen_tps": statistics.median(gen),
        "gen_min": min(gen),
        "gen_max": max(gen),
        "prompt_tps": statistics.median(prompt),
        "text": runs[0]["content"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--binary", type=Path, default=C.real_binary())
    ap.add_argument("--model", type=Path, default=C.real_model())
    args = ap.parse_args()
    C.sigterm_as_interrupt()
    t = str(args.threads)
    common = ["-t", t, "-c", "2048"]
    results: dict[str, dict] = {}
    with C.isolated_corral("rpc", args.binary) as corral:
        corral.start_daemon()
        endpoints = []
        for _ in range(2):
            port = str(C.free_port())
            started = corral.cli("rpc", "start", "--port", port, "--threads", t, "--json")
            endpoints.append(json.loads(started.stdout)["endpoint"])
        results["local"] = measure(corral, "local", args.model, [*common, "-ngl", "0"], args)
        for label, rpc in (("rpc x1", endpoints[:1]), ("rpc x2", endpoints)):
            flags = [*common, "-ngl", "99", "--rpc", ",".join(rpc)]
            results[label] = measure(corral, label.replace(" ", "-"), args.model, flags, args)
        corral.cli("rpc", "stop", "--all")
    print(report(results, args))
    return 0


def report(results: dict[str, dict], args) -> str:
    base = results["local"]["gen_tps"]
    m = C.machine()
    lines = [
        f"{m['nproc']} × {m['cpu']}, load average {m['loadavg'][0]:.2f} at the end",
        "",
        f"gemma-3-270m Q4_K_M, `-t {args.threads} -c 2048`, {args.tokens} tokens greedy, "
        f"median of {args.runs} runs (llama-server's own timings); rpc-servers on 127.0.0.1 "
        f"with `--threads {args.threads}` and `-c` (tensor cache).",
        "",
        "| run | load (spawn → ready) | generation tok/s (min–max) | vs local | prompt tok/s "
        "| same text as local |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, r in results.items():
        lines.append(
            f"| {label} | {r['load_s']:.2f} s | {r['gen_tps']:.1f} ({r['gen_min']:.1f}–"
            f"{r['gen_max']:.1f}) | {r['gen_tps'] / base:.2f}x | {r['prompt_tps']:.1f} "
            f"| {'yes' if r['text'] == results['local']['text'] else 'no'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
