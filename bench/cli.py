#!/usr/bin/env python3
"""CLI latency: ``corral ps`` and ``corral --help`` with 20 instances running.

The 20 instances run the fake llama-server of tests/fakes (via ``CORRAL_LLAMA_SERVER``),
so they are cheap; they are started with ``corral run --detach`` and waited ready. Each
command is timed as a subprocess, fork to exit, and compared with a reference measured
in the same run, interleaved round-robin so all see the same load:

* ``corral ps``      vs ``curl -s $CORRAL_URL/api/v1/instances`` (the same data, no Python)
* ``corral --help``  vs ``python -c pass`` (the interpreter's floor: same venv Python)
* ``corral ps`` with no daemon (it reads the store and checks each pid) -- the daemon is
  stopped with SIGTERM, the 20 instances keep running, as they do in real life --
  vs ``python -c pass``.

Also reported: the cumulative import time of ``corral.cli`` (``python -X importtime``).

    python bench/cli.py [--runs 15] [--instances 20]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def fake_binary(directory: Path) -> Path:
    sys.path.insert(0, str(C.REPO))
    from tests.fakes import make_fake_binary

    return make_fake_binary(directory)


def interleaved(
    cmds: dict[str, list[str]],
    env: dict[str, str],
    runs: int,
    check: dict[str, object] | None = None,
) -> dict[str, list[float]]:
    """Each command ``runs`` times, round-robin; one untimed warm-up round first."""
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for i in range(runs + 1):
        for key, argv in cmds.items():
            elapsed, proc = C.run_timed(argv, env)
            if proc.returncode != 0:
                raise RuntimeError(f"{key}: exit {proc.returncode}: {proc.stderr[-300:]!r}")
            if check and key in check:
                check[key](proc)  # type: ignore[operator]
            if i:
                times[key].append(elapsed)
    return times


def import_time(env: dict[str, str], runs: int = 5) -> float:
    """Median cumulative import time of corral.cli, seconds."""
    vals = []
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import corral.cli"],
            env=env,
            capture_output=True,
            text=True,
        )
        for line in proc.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|\s*(\S+)$", line)
            if m and m.group(3) == "corral.cli":
                vals.append(int(m.group(2)) / 1e6)
    return C.median(vals)


def run(runs: int = 15, n_instances: int = 20, verbose: bool = True) -> dict:
    runs = max(runs, 10)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)
    load_before = os.getloadavg()
    # The fake lives in the home's bin/; the model is a file with the GGUF magic.
    placeholder = Path("/nonexistent")
    with C.isolated_corral("cli", placeholder, port_range_size=n_instances + 20) as corral:
        binary = fake_binary(corral.home / "fakebin")
        corral.env["CORRAL_LLAMA_SERVER"] = str(binary)
        model = corral.home / "models-bench" / "tiny-bench-Q4_K_M.gguf"
        model.parent.mkdir(parents=True)
        model.write_bytes(b"GGUF" + b"\0" * 60)
        corral.start_daemon()

        say(f"cli: starting {n_instances} fake instances")
        for i in range(n_instances):
            corral.cli("run", str(model), "-c", "512", "--name", f"fake-{i:02d}", "--detach")
        deadline = time.monotonic() + 120
        while True:
            insts = corral.instances()
            states = [i["state"] for i in insts]
            if len(states) == n_instances and all(s == "ready" for s in states):
                break
            bad = [i for i in insts if i["state"] in ("failed", "exited")]
            if time.monotonic() > deadline or bad:
                detail = "; ".join(
                    f"{i['name']}: {i['state']}: {i['last_error']}\n"
                    + (corral.home / "logs" / f"{i['name']}.log").read_text()[-1500:]
                    for i in bad
                )
                raise RuntimeError(f"instances not ready: {states}\n{detail}")
            time.sleep(0.1)

        def ps_lists_all(proc: subprocess.CompletedProcess) -> None:
            out = proc.stdout.decode()
            if out.count(" ready ") != n_instances:
                raise RuntimeError(f"corral ps did not list {n_instances} ready instances:\n{out}")

        py = [sys.executable, "-c", "pass"]
        say(f"cli: timing with the daemon up ({runs} runs each)")
        up = interleaved(
            {
                "corral ps": [corral.exe, "ps"],
                "curl instances": ["curl", "-s", "-f", f"{corral.url}/api/v1/instances"],
                "corral --help": [corral.exe, "--help"],
                "python -c pass": py,
            },
            corral.env,
            runs,
            check={"corral ps": ps_lists_all},
        )
        imports = import_time(corral.env)

        say("cli: stopping the daemon only (instances keep running); timing ps from the store")
        corral.stop_daemon_only()
        down = interleaved(
            {"corral ps (no daemon)": [corral.exe, "ps"], "python -c pass": py},
            corral.env,
            runs,
            check={"corral ps (no daemon)": ps_lists_all},
        )
        say("cli: corral down")
    return {
        "bench": "cli",
        "runs": runs,
        "instances": n_instances,
        "daemon_up": {k: C.summary(v) for k, v in up.items()},
        "no_daemon": {k: C.summary(v) for k, v in down.items()},
        "import_corral_cli": imports,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }


def table(res: dict) -> str:
    up, down = res["daemon_up"], res["no_daemon"]
    rows = [
        ("`corral ps`", up["corral ps"], "`curl -s .../api/v1/instances`", up["curl instances"]),
        ("`corral --help`", up["corral --help"], "`python -c pass`", up["python -c pass"]),
        (
            "`corral ps`, no daemon (store + pid checks)",
            down["corral ps (no daemon)"],
            "`python -c pass`",
            down["python -c pass"],
        ),
    ]
    lines = [
        f"CLI wall time with {res['instances']} instances (fake llama-server), "
        f"{res['runs']} runs each, subprocess fork to exit",
        "",
        "| command | median | p90 | reference | ref. median | ref. p90 | ratio (medians) | "
        "above ref. | goal < 150 ms |",
        "|---|---:|---:|---|---:|---:|---:|---:|:---:|",
    ]
    for label, s, ref_label, r in rows:
        ok = "yes" if s["median"] < 0.150 and s["p90"] < 0.150 else "no"
        lines.append(
            f"| {label} | {C.ms(s['median'])} | {C.ms(s['p90'])} | {ref_label} | "
            f"{C.ms(r['median'])} | {C.ms(r['p90'])} | {s['median'] / r['median']:.1f}x | "
            f"+{C.ms(s['median'] - r['median'])} | {ok} |"
        )
    lines += [
        "",
        f"`import corral.cli` (cumulative, `python -X importtime`, median of 5): "
        f"{C.ms(res['import_corral_cli'])}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15, help="runs per command (min 10, default 15)")
    ap.add_argument("--instances", type=int, default=20, help="fake instances (default 20)")
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = ap.parse_args(argv)
    C.sigterm_as_interrupt()
    try:
        res = run(args.runs, args.instances)
    except KeyboardInterrupt:
        print("cli: interrupted; cleaned up", file=sys.stderr)
        return 130
    print(json.dumps(res, indent=2) if args.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
