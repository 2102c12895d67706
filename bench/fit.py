#!/usr/bin/env python3
"""Memory estimator: speed on a 48-layer header, and accuracy against llama-server.

(a) Timing. A Qwen2.5-14B-shaped GGUF header (48 layers, 579 tensors, 152k-token
    vocabulary; data region sparse) written with gguf-py's ``GGUFWriter``
    (tests/fakes/gguf_shapes.py). Timed in this process after one warm-up: the
    uncached header parse + shape (``read_metadata`` + ``shape_from_info``, what
    ``load_model`` does on a cache miss), a cached ``load_model``, and ``project`` for
    a 2-GPU split with ``--tensor-split`` (what the planner calls in its search loop),
    ``--runs`` times each; median and p95. Target: the estimator ≤ 20 ms.

(b) End to end. ``corral fit HEADER --devices 12GiB,8GiB --json`` on the same header, a
    new process each time (the ``corral`` console script, a temporary ``CORRAL_HOME``,
    the flag catalog already cached), ``--e2e-runs`` times after one warm-up,
    interleaved with ``python -c pass`` as the reference for the interpreter's own
    start. Twice: with bytecode caches (as a pip install leaves them; written to a
    temporary ``PYTHONPYCACHEPREFIX``, not into the tree) and without
    (``PYTHONDONTWRITEBYTECODE=1``: every corral module compiled at each start).
    Target: ≤ 150 ms median with bytecode caches.

(c) Accuracy (``--accuracy``). The cases of tests/real/test_fit_accuracy.py: the real
    llama-server (``-lv 4 -t 2``) on gemma-3-270m Q4_K_M, started, waited for
    ``/health``, stopped with SIGINT; llama.cpp's buffer lines against corral's
    estimate for the same flags. Error = (corral − llama.cpp) / llama.cpp.

    python bench/fit.py [--runs 200] [--e2e-runs 10] [--accuracy] [--write]

``--write`` replaces this benchmark's section of docs/BENCHMARKS.md (between the
``bench:fit`` markers, appended when missing); nothing else in the file is touched. A
run without ``--accuracy`` keeps the accuracy table already there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

DOC = REPO / "docs" / "BENCHMARKS.md"
START, END = "<!-- bench:fit:start -->", "<!-- bench:fit:end -->"
ACCURACY = "### Memory estimate accuracy"
MiB = 1024 * 1024


def _stats(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, int(len(xs) * 0.95))]


def timing(runs: int) -> dict:
    from tests.fakes.gguf_shapes import dense_14b

    from corral.fit.estimate import Options, load_model, project, shape_from_info
    from corral.gguf import read_metadata

    with tempfile.TemporaryDirectory() as d:
        path = dense_14b(Path(d) / "qwen2-14b-shape.gguf")
        info = read_metadata(path)
        shape = shape_from_info(info)
        load_model(str(path))
        opts = Options(
            ctx=32768,
            tensor_split=[3.0, 1.0],
            cache_type_k="q8_0",
            cache_type_v="q8_0",
            flash_attn="on",
        )
        project(shape, opts, 2)
        parse, cached, proj = [], [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            shape_from_info(read_metadata(path))
            t1 = time.perf_counter()
            load_model(str(path))
            t2 = time.perf_counter()
            project(shape, opts, 2)
            t3 = time.perf_counter()
            parse.append(t1 - t0)
            cached.append(t2 - t1)
            proj.append(t3 - t2)
    return {
        "tensors": len(info.tensors),
        "layers": shape.n_layer,
        "runs": runs,
        "parse": _stats(parse),
        "cached": _stats(cached),
        "project": _stats(proj),
    }


def _llama_server() -> Path:
    """The binary whose flag catalog `corral fit` validates against: CORRAL_LLAMA_SERVER,
    else the one the venv was set up with, else the real test binary."""
    given = os.environ.get("CORRAL_LLAMA_SERVER")
    if given:
        return Path(given)
    recorded = Path(sys.executable).parent.parent / ".llama-server-path"
    if recorded.is_file():
        return Path(recorded.read_text().strip())
    return C.real_binary()


def end_to_end(runs: int) -> dict:
    """Medians (and the best run) of ``corral fit`` and of ``python -c pass``, both ways."""
    from tests.fakes.gguf_shapes import dense_14b

    binary = _llama_server()
    if not binary.is_file():
        raise SystemExit(f"bench: need a llama-server for the flag catalog ({binary})")
    out = {"runs": runs}
    with tempfile.TemporaryDirectory() as d:
        header = dense_14b(Path(d) / "dense-14b-shape.gguf")
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CORRAL_")
            and k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
        }
        base.update(CORRAL_HOME=str(Path(d) / "home"), CORRAL_LLAMA_SERVER=str(binary))
        fit_cmd = [C.corral_exe(), "fit", str(header), "--devices", "12GiB,8GiB", "--json"]
        ref_cmd = [sys.executable, "-c", "pass"]
        for label, extra in (
            ("bytecode", {"PYTHONPYCACHEPREFIX": str(Path(d) / "pyc")}),
            ("source", {"PYTHONDONTWRITEBYTECODE": "1"}),
        ):
            env = dict(base, **extra)
            _timed(fit_cmd, env, d)  # warm-up: the flag catalog, the bytecode caches
            ref, fit = [], []
            for _ in range(runs):
                ref.append(_timed(ref_cmd, env, d))
                fit.append(_timed(fit_cmd, env, d))
            out[label] = {
                "fit": statistics.median(fit),
                "fit_best": min(fit),
                "ref": statistics.median(ref),
            }
    return out


def _timed(argv: list[str], env: dict, cwd: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv)} failed: {proc.stderr.strip()[-300:]}")
    return elapsed


def accuracy(say=print) -> list:
    from tests.real.test_fit_accuracy import CASES, measure

    binary, model = C.real_binary(), C.real_model()
    if not binary.is_file() or not model.is_file():
        raise SystemExit(f"bench: need the real llama-server ({binary}) and model ({model})")
    out = []
    for i, flags in enumerate(CASES):
        m = measure(binary, model, flags)
        out.append(m)
        say(
            f"fit: {i + 1}/{len(CASES)} {' '.join(flags)}: total "
            f"{m.error(m.est_total, m.real_total):+.1%}"
        )
    return out


def render(t: dict, e2e: dict | None, acc: list | None) -> str:
    ms = 1000
    lines = [
        START,
        "",
        "### Memory estimate",
        "",
        f"`bench/fit.py`: the estimator on a Qwen2.5-14B-shaped header ({t['layers']} layers, "
        f"{t['tensors']} tensors, sparse data), {t['runs']} runs after a warm-up, median / p95.",
        "",
        "| step | median | p95 |",
        "|---|---:|---:|",
        f"| header parse + shape (`load_model` cache miss) | {t['parse'][0] * ms:.2f} ms "
        f"| {t['parse'][1] * ms:.2f} ms |",
        f"| `load_model` cached | {t['cached'][0] * ms:.3f} ms | {t['cached'][1] * ms:.3f} ms |",
        f"| `project` (2 GPUs, `-ts 3,1`, 32k, q8_0 KV) | {t['project'][0] * ms:.3f} ms "
        f"| {t['project'][1] * ms:.3f} ms |",
        "",
        f"- estimator (parse + project) ≤ 20 ms: "
        f"{(t['parse'][0] + t['project'][0]) * ms:.1f} ms "
        f"(**{'met' if t['parse'][0] + t['project'][0] <= 0.020 else 'not met'}**)",
        "",
    ]
    if e2e:
        bc, src = e2e["bytecode"], e2e["source"]
        lines += [
            f"`corral fit HEADER --devices 12GiB,8GiB --json` end to end on the same header: "
            f"a new process each run (the `corral` console script, flag catalog cached), "
            f"median of {e2e['runs']} runs after a warm-up, interleaved with `python -c pass`.",
            "",
            "| bytecode | `corral fit` median | best | `python -c pass` median |",
            "|---|---:|---:|---:|",
            f"| cached (as installed) | {bc['fit'] * ms:.0f} ms | {bc['fit_best'] * ms:.0f} ms "
            f"| {bc['ref'] * ms:.0f} ms |",
            f"| none (`PYTHONDONTWRITEBYTECODE=1`) | {src['fit'] * ms:.0f} ms "
            f"| {src['fit_best'] * ms:.0f} ms | {src['ref'] * ms:.0f} ms |",
            "",
            f"- `corral fit` end to end ≤ 150 ms (bytecode cached): {bc['fit'] * ms:.0f} ms "
            f"(**{'met' if bc['fit'] <= 0.150 else 'not met'}**)",
            "",
        ]
    if acc:
        lines += [
            ACCURACY,
            "",
            "corral's estimate against the real llama-server (b11434, CPU) on gemma-3-270m "
            "Q4_K_M: llama.cpp's `-lv 4` buffer lines (weights = CPU_Mapped + CPU_REPACK "
            "model buffers; context = KV + compute + output buffers), the same flags plus "
            "`-t 2`. Error = (corral − llama.cpp) / llama.cpp. Tolerances: weights ±2 %, "
            "context and total ±10 % (`tests/real/test_fit_accuracy.py`).",
            "",
            "| flags | llama.cpp weights | context | total | corral total "
            "| weights err | context err | total err |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        worst = 0.0
        for m in acc:
            errs = (
                m.error(m.est_weights, m.real_weights),
                m.error(m.est_context, m.real_context),
                m.error(m.est_total, m.real_total),
            )
            worst = max(worst, abs(errs[1]), abs(errs[2]))
            lines.append(
                f"| `{' '.join(m.flags)}` | {m.real_weights / MiB:.2f} MiB "
                f"| {m.real_context / MiB:.2f} MiB | {m.real_total / MiB:.2f} MiB "
                f"| {m.est_total / MiB:.2f} MiB "
                f"| {errs[0]:+.2%} | {errs[1]:+.2%} | {errs[2]:+.2%} |"
            )
        lines += [
            "",
            f"- worst context/total error: {worst:.2%} (**{'met' if worst <= 0.10 else 'not met'}**"
            " against ±10 %)",
            '- `-ctk q4_0 -ctv q4_0 -fa off`: refused by llama.cpp ("quantized V cache requires '
            "flash_attn\") and by corral's estimator alike.",
            "",
        ]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write(section: str) -> None:
    """Replace the section; a run without ``--accuracy`` keeps the accuracy table there."""
    text = DOC.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        old, tail = rest.split(END, 1)
        if ACCURACY not in section and ACCURACY in old:
            kept = ACCURACY + old.split(ACCURACY, 1)[1]
            section = section.replace(END, kept.rstrip("\n") + "\n\n" + END)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument(
        "--e2e-runs", type=int, default=10, help="runs of `corral fit` end to end (0: skip)"
    )
    ap.add_argument("--accuracy", action="store_true", help="also run the real llama-server")
    ap.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = ap.parse_args()
    t = timing(args.runs)
    e2e = end_to_end(args.e2e_runs) if args.e2e_runs > 0 else None
    acc = accuracy(lambda s: print(s, file=sys.stderr)) if args.accuracy else None
    section = render(t, e2e, acc)
    print(section)
    if args.write:
        write(section)


if __name__ == "__main__":
    main()
