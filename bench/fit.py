#!/usr/bin/env python3
"""Memory estimator: speed on a 48-layer header, and accuracy against llama-server.

(a) Timing. A Qwen2.5-14B-shaped GGUF header (48 layers, 579 tensors, 152k-token
    vocabulary; data region sparse) written with gguf-py's ``GGUFWriter``
    (tests/fakes/gguf_shapes.py). Timed in this process after one warm-up: the
    uncached header parse + shape (``read_metadata`` + ``shape_from_info``, what
    ``load_model`` does on a cache miss), a cached ``load_model``, and ``project`` for
    a 2-GPU split with ``--tensor-split`` (what the planner calls in its search loop),
    ``--runs`` times each; median and p95. Target: the estimator ≤ 20 ms.

(b) Accuracy (``--accuracy``). The cases of tests/real/test_fit_accuracy.py: the real
    llama-server (``-lv 4 -t 2``) on gemma-3-270m Q4_K_M, started, waited for
    ``/health``, stopped with SIGINT; llama.cpp's buffer lines against corral's
    estimate for the same flags. Error = (corral − llama.cpp) / llama.cpp.

    python bench/fit.py [--runs 200] [--accuracy] [--write]

``--write`` replaces this benchmark's section of docs/BENCHMARKS.md (between the
``bench:fit`` markers, appended when missing); nothing else in the file is touched.
"""

from __future__ import annotations

import argparse
import statistics
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
MiB = 1024 * 1024


def _stats(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, int(len(xs) * 0.95))]


def timing(runs: int) -> dict:
    from corral.fit.estimate import Options, load_model, project, shape_from_info
    from corral.gguf import read_metadata
    from tests.fakes.gguf_shapes import dense_14b

    with tempfile.TemporaryDirectory() as d:
        path = dense_14b(Path(d) / "qwen2-14b-shape.gguf")
        info = read_metadata(path)
        shape = shape_from_info(info)
        load_model(str(path))
        opts = Options(ctx=32768, tensor_split=[3.0, 1.0], cache_type_k="q8_0",
                       cache_type_v="q8_0", flash_attn="on")
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
    return {"tensors": len(info.tensors), "layers": shape.n_layer, "runs": runs,
            "parse": _stats(parse), "cached": _stats(cached), "project": _stats(proj)}


def accuracy(say=print) -> list:
    from tests.real.test_fit_accuracy import CASES, measure

    binary, model = C.real_binary(), C.real_model()
    if not binary.is_file() or not model.is_file():
        raise SystemExit(f"bench: need the real llama-server ({binary}) and model ({model})")
    out = []
    for i, flags in enumerate(CASES):
        m = measure(binary, model, flags)
        out.append(m)
        say(f"fit: {i + 1}/{len(CASES)} {' '.join(flags)}: total "
            f"{m.error(m.est_total, m.real_total):+.1%}")
    return out


def render(t: dict, acc: list | None) -> str:
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
    if acc:
        lines += [
            "### Memory estimate accuracy",
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
            errs = (m.error(m.est_weights, m.real_weights), m.error(m.est_context, m.real_context),
                    m.error(m.est_total, m.real_total))
            worst = max(worst, abs(errs[1]), abs(errs[2]))
            lines.append(
                f"| `{' '.join(m.flags)}` | {m.real_weights / MiB:.2f} MiB "
                f"| {m.real_context / MiB:.2f} MiB | {m.real_total / MiB:.2f} MiB "
                f"| {m.est_total / MiB:.2f} MiB | {errs[0]:+.2%} | {errs[1]:+.2%} | {errs[2]:+.2%} |")
        lines += [
            "",
            f"- worst context/total error: {worst:.2%} (**{'met' if worst <= 0.10 else 'not met'}**"
            " against ±10 %)",
            "- `-ctk q4_0 -ctv q4_0 -fa off`: refused by llama.cpp (\"quantized V cache requires "
            "flash_attn\") and by corral's estimator alike.",
            "",
        ]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write(section: str) -> None:
    text = DOC.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--accuracy", action="store_true", help="also run the real llama-server")
    ap.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = ap.parse_args()
    t = timing(args.runs)
    acc = accuracy(lambda s: print(s, file=sys.stderr)) if args.accuracy else None
    section = render(t, acc)
    print(section)
    if args.write:
        write(section)


if __name__ == "__main__":
    main()
