#!/usr/bin/env python3
"""Models: GGUF metadata reading and ``corral ls`` with a populated index.

(a) Metadata of the real model (gemma-3-270m Q4_K_M, 253 MB): ``corral.gguf.read_metadata``
    (what ``corral import`` / ``corral show`` / the pull indexer use), one untimed warm-up
    then ``--meta-runs`` timed calls in this process, against gguf-py's ``GGUFReader``
    (the reference implementation in llama.cpp's repo) constructed on the same file,
    ``--reader-runs`` times (it takes seconds). Both read from a warm page cache. Reported:
    median of each and the ratio.

(b) ``corral ls`` wall time (CLI subprocess, fork to exit) with ``--models`` models in the
    index of a temporary ``CORRAL_HOME``: small GGUFs written with ``gguf.GGUFWriter``
    (llama architecture, a handful of keys, one tiny tensor) registered with
    ``corral.models.register_local``. References: ``python -c pass`` (the interpreter's
    start-up floor) and ``sqlite3 DB "SELECT * FROM models"`` (the same rows, no Python)
    when the sqlite3 CLI is installed. Runs interleave round-robin after one untimed round;
    ``corral ls --json`` is timed too.

    python bench/models.py [--meta-runs 20] [--reader-runs 1] [--ls-runs 10] [--models 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

QUANTS = ["Q4_K_M", "Q5_K_M", "Q8_0", "Q6_K", "F16"]


def metadata(model: Path, meta_runs: int = 20, reader_runs: int = 1, say=print) -> dict:
    from corral.gguf import read_metadata

    read_metadata(model)  # warm-up: page cache, imports
    ours = []
    for _ in range(meta_runs):
        t0 = time.perf_counter()
        info = read_metadata(model)
        ours.append(time.perf_counter() - t0)
    from gguf import GGUFReader

    theirs = []
    for i in range(reader_runs):
        t0 = time.perf_counter()
        reader = GGUFReader(str(model))
        theirs.append(time.perf_counter() - t0)
        say(f"models: GGUFReader run {i + 1}/{reader_runs}: {theirs[-1]:.2f} s")
    n_fields = len(reader.fields)
    n_tensors = len(reader.tensors)
    del reader
    return {
        "model": str(model),
        "size": model.stat().st_size,
        "corral": C.summary(ours),
        "gguf_py": C.summary(theirs),
        "ratio": C.median(theirs) / C.median(ours),
        "corral_keys": len(info.kv),
        "gguf_py_fields": n_fields,
        "tensors": n_tensors,
    }


def write_small_gguf(path: Path, i: int) -> None:
    import numpy as np
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), "llama")
    w.add_name(f"bench model {i}")
    w.add_size_label(f"{1 + i % 9}B")
    w.add_context_length(4096)
    w.add_block_count(2)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_file_type(15)  # MOSTLY_Q4_K_M
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def populate(home: Path, count: int) -> Path:
    from corral.models import register_local
    from corral.store.db import Store

    models = home / "bench-ggufs"
    models.mkdir(parents=True)
    store = Store(home / "corral.db")
    try:
        for i in range(count):
            p = models / f"bench-model-{i:03d}-{QUANTS[i % len(QUANTS)]}.gguf"
            write_small_gguf(p, i)
            register_local(store, p)
    finally:
        store.close()
    return home / "corral.db"


def ls(runs: int = 10, count: int = 200) -> dict:
    home = Path(tempfile.mkdtemp(prefix="corral-bench-models-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        env["CORRAL_HOME"] = str(home)
        # A daemon URL nobody listens on: `corral ls` must not need (or find) one.
        env["CORRAL_URL"] = f"http://127.0.0.1:{C.free_port()}"
        t0 = time.perf_counter()
        db = populate(home, count)
        populate_time = time.perf_counter() - t0
        exe = C.corral_exe()
        cmds = {
            "ls": [exe, "ls"],
            "ls_json": [exe, "ls", "--json"],
            "python": [sys.executable, "-c", "pass"],
        }
        sqlite = shutil.which("sqlite3")
        if sqlite:
            cmds["sqlite3"] = [sqlite, str(db), "SELECT * FROM models"]
        first = subprocess.run(cmds["ls"], env=env, capture_output=True, text=True)
        listed = len(first.stdout.strip().splitlines()) - 1
        if first.returncode != 0 or listed != count:
            raise RuntimeError(
                f"corral ls listed {listed} models (want {count}): {first.stderr[-300:]}"
            )
        for argv in cmds.values():  # untimed round
            C.run_timed(argv, env)
        samples: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(runs):
            for key, argv in cmds.items():
                t, proc = C.run_timed(argv, env)
                if proc.returncode != 0:
                    raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr[-300:]!r}")
                samples[key].append(t)
        return {
            "models": count,
            "runs": runs,
            "populate": populate_time,
            "sqlite3": bool(sqlite),
            **{k: C.summary(v) for k, v in samples.items()},
        }
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(
    meta_runs: int = 20,
    reader_runs: int = 1,
    ls_runs: int = 10,
    count: int = 200,
    model: Path | None = None,
    verbose: bool = True,
) -> dict:
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)
    model = Path(model or C.real_model()).resolve()
    if not model.is_file():
        raise SystemExit(f"bench: no model at {model} (set CORRAL_TEST_MODEL)")
    load_before = os.getloadavg()
    say("models: metadata")
    meta = metadata(model, meta_runs, reader_runs, say)
    say(f"models: corral ls with {count} models")
    listing = ls(ls_runs, count)
    return {
        "bench": "models",
        "metadata": meta,
        "ls": listing,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }


def table(res: dict) -> str:
    m, ls_ = res["metadata"], res["ls"]
    ms1 = lambda x: f"{x * 1000:.1f} ms"  # noqa: E731
    lines = [
        f"GGUF metadata of `{Path(m['model']).name}` ({m['size'] / 1e6:.0f} MB, "
        f"{m['tensors']} tensors), in-process, page cache warm",
        "",
        "| reader | runs | median | p90 |",
        "|---|---:|---:|---:|",
        f"| gguf-py `GGUFReader(path)` (reference) | {m['gguf_py']['n']} | "
        f"{m['gguf_py']['median']:.2f} s | {m['gguf_py']['p90']:.2f} s |",
        f"| corral `read_metadata(path)` | {m['corral']['n']} | {ms1(m['corral']['median'])} | "
        f"{ms1(m['corral']['p90'])} |",
        "",
        f"corral is **{m['ratio']:.0f}x** faster than gguf-py (ratio of medians).",
        "",
        f"`corral ls` with {ls_['models']} models in the index (small GGUFs registered with "
        f"`register_local`), CLI subprocess fork to exit, {ls_['runs']} interleaved runs each, "
        "no daemon",
        "",
        "| command | median | p90 | vs `python -c pass` |",
        "|---|---:|---:|---:|",
    ]
    floor = ls_["python"]["median"]
    rows = [
        ("ls", "`corral ls`"),
        ("ls_json", "`corral ls --json`"),
        ("python", "`python -c pass` (interpreter floor)"),
    ]
    if ls_.get("sqlite3"):
        rows.append(
            ("sqlite3", "`sqlite3 corral.db 'SELECT * FROM models'` (same rows, no Python)")
        )
    for key, label in rows:
        s = ls_[key]
        lines.append(
            f"| {label} | {C.ms(s['median'])} | {C.ms(s['p90'])} | "
            f"{(s['median'] - floor) * 1000:+.0f} ms |"
        )
    goal = 0.150
    ok = ls_["ls"]["median"] < goal
    lines += [
        "",
        f"Goal: `corral ls` well under 150 ms: {C.ms(ls_['ls']['median'])} "
        f"(**{'met' if ok else 'NOT met'}**). Writing and registering the {ls_['models']} "
        f"files took {ls_['populate']:.1f} s (not timed above).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meta-runs", type=int, default=20, help="read_metadata calls (default 20)")
    ap.add_argument(
        "--reader-runs",
        type=int,
        default=1,
        help="GGUFReader constructions (default 1; each takes seconds)",
    )
    ap.add_argument("--ls-runs", type=int, default=10, help="runs per command (default 10)")
    ap.add_argument("--models", type=int, default=200, help="models in the index (default 200)")
    ap.add_argument(
        "--model", type=Path, help="GGUF (default CORRAL_TEST_MODEL or the gemma cache)"
    )
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = ap.parse_args(argv)
    C.sigterm_as_interrupt()
    try:
        res = run(args.meta_runs, args.reader_runs, args.ls_runs, args.models, args.model)
    except KeyboardInterrupt:
        print("models: interrupted; cleaned up", file=sys.stderr)
        return 130
    print(json.dumps(res, indent=2) if args.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
