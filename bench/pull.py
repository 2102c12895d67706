#!/usr/bin/env python3
"""Pull: corral's ``Hub.download`` vs ``curl`` for one big file from a server on 127.0.0.1.

A file of ``--size-mb`` MiB (default 1024: a GGUF-looking header, then random bytes) is
written once into a temporary directory and served from 127.0.0.1 by

* the fake HuggingFace Hub of the tests (``tests/fakes/fake_hub.py``), run in its own
  Python process (so it does not share a GIL with the client), 1 MiB body chunks; and
* ``nginx`` (if installed), an unprivileged instance with its own temporary prefix and
  config, serving the same bytes at the same path shape ``/{repo}/resolve/{rev}/{file}``
  (sendfile on). Python cannot serve 1 GiB as fast as a client can take it, so this is
  the server that shows the client's own speed.

corral side: ``Hub(endpoint).download(plan, dest)`` in this process -- the library path
``corral pull`` and the daemon use: httpx streaming into ``.partial/<file>.part``, then
size + **sha256 verification** of the whole file, then the move into place. The plan
(file list, size, LFS sha256, commit) comes from the fake Hub's metadata API once,
outside the timing; against nginx the same plan is downloaded with
``Hub(endpoint=nginx_url)``, whose file URL is then the nginx one.

references, measured against the same server and URL: ``curl -s -o FILE URL`` (no
verification), and ``curl -s -o FILE URL && sha256sum FILE`` (the fair comparison: the
same work corral does).

Runs interleave corral, curl, curl+sha256sum per server and round, after one untimed
warm-up of each; the output file is deleted and ``sync`` run before every timed run.
Reported: median time and throughput (MiB/s of the file size over the median), corral's
split into fetch (streaming to disk) and verify (sha256 of the file) phases, the ratio of
the throughputs corral / curl (goal >= 0.8x), and one cProfile'd corral download against
the fastest server, top functions by own time.

    python bench/pull.py [--runs 3] [--size-mb 1024] [--servers fakehub,nginx] [--json]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

REPO_ID = "bench/big-GGUF"
FILENAME = "big-Q4_K_M.gguf"
MIB = 1 << 20

FAKEHUB_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from tests.fakes.fake_hub import FakeHub
    hub = FakeHub(cdn=False, chunk_size=1 << 20).start()
    hub.add_repo(sys.argv[1], files={sys.argv[2]: Path(sys.argv[3])})
    print(json.dumps({"url": hub.url, "commit": hub.commit(sys.argv[1]),
                      "sha256": hub.sha256(sys.argv[1], sys.argv[2])}), flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin (or kills us)
    hub.stop()
""")

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/tmp-body;
    proxy_temp_path {prefix}/tmp-proxy;
    fastcgi_temp_path {prefix}/tmp-fastcgi;
    uwsgi_temp_path {prefix}/tmp-uwsgi;
    scgi_temp_path {prefix}/tmp-scgi;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/www;
    }}
}}
"""


def make_file(path: Path, size_mb: int) -> None:
    """A GGUF-ish header (magic, version 3, no tensors, no KVs), then random bytes."""
    header = b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") * 2
    left = size_mb * MIB - len(header)
    with open(path, "wb") as out:
        out.write(header)
        block = os.urandom(16 * MIB)
        i = 0
        while left > 0:
            n = min(left, len(block))
            # Vary each block cheaply so the file is not one 16 MiB pattern repeated.
            out.write(i.to_bytes(8, "little") + block[8:n] if n > 8 else block[:n])
            left -= n
            i += 1


def start_fakehub(src: Path, procs: list[subprocess.Popen]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(C.REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKEHUB_SCRIPT, REPO_ID, FILENAME, str(src)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
        cwd=str(C.REPO),
    )
    procs.append(proc)
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"fake hub did not start (exit {proc.wait()})")
    return json.loads(line)


def start_nginx(prefix: Path, src: Path, commit: str, procs: list[subprocess.Popen]) -> str | None:
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not exe:
        return None
    target = prefix / "www" / REPO_ID / "resolve" / commit / FILENAME
    target.parent.mkdir(parents=True)
    try:
        os.link(src, target)
    except OSError:
        shutil.copyfile(src, target)
    # nginx workers may drop to an unprivileged user: the tree must be world-readable.
    for d in [prefix.parent, *[p for p in target.parents if str(p).startswith(str(prefix))]]:
        os.chmod(d, 0o755)
    os.chmod(target, 0o644)
    port = C.free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port))
    log = open(prefix / "stderr.log", "ab")
    proc = subprocess.Popen(
        [exe, "-p", str(prefix), "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    procs.append(proc)
    deadline = time.monotonic() + 10
    while C.http_status(port, "/") is None:
        if proc.poll() is not None:
            raise RuntimeError(
                f"nginx exited {proc.returncode}: {(prefix / 'stderr.log').read_text()[-500:]}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError("nginx did not answer within 10 s")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    if proc.stdin:
        try:
            proc.stdin.close()
        except OSError:
            pass
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


# -- one run of each side -----------------------------------------------------------------
def corral_once(hub, plan, dest: Path, phases: dict | None = None) -> dict:
    """``hub.download`` into a fresh dest; split into fetch and verify+move."""
    shutil.rmtree(dest, ignore_errors=True)
    os.sync()
    marks: dict[str, float] = {}
    inner = hub._fetch

    def fetch(*a, **kw):  # instance attribute: wraps, does not modify corral
        marks["fetch0"] = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            marks["fetch1"] = time.perf_counter()

    hub._fetch = fetch
    try:
        t0 = time.perf_counter()
        out = hub.download(plan, dest)
        t1 = time.perf_counter()
    finally:
        del hub._fetch
    f = plan.files[0]
    if len(out) != 1 or out[0].stat().st_size != f.size:
        raise RuntimeError(f"corral download produced {out}")
    res = {
        "total": t1 - t0,
        "fetch": marks["fetch1"] - marks["fetch0"],
        "verify": t1 - marks["fetch1"],
    }
    shutil.rmtree(dest, ignore_errors=True)
    return res


def curl_once(url: str, out: Path, sha: str | None = None) -> dict:
    out.unlink(missing_ok=True)
    os.sync()
    cmd = f"curl -s -f -o {out} {url}"
    if sha is not None:
        cmd += f" && sha256sum {out}"
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["sh", "-c", cmd], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd}: exit {proc.returncode}: {proc.stderr[-300:]}")
    if sha is not None and proc.stdout.split()[0] != sha:
        raise RuntimeError("sha256sum does not match the file's sha256")
    out.unlink(missing_ok=True)
    return {"total": elapsed}


def profile_once(hub, plan, dest: Path, top: int = 12) -> dict:
    shutil.rmtree(dest, ignore_errors=True)
    os.sync()
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    hub.download(plan, dest)
    prof.disable()
    elapsed = time.perf_counter() - t0
    shutil.rmtree(dest, ignore_errors=True)
    st = pstats.Stats(prof)
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _) in st.stats.items():  # type: ignore[attr-defined]
        short = f"{Path(file).name}:{line}({func})" if file != "~" else func
        rows.append({"func": short, "ncalls": nc, "tottime": tt, "cumtime": ct})
    rows.sort(key=lambda r: r["tottime"], reverse=True)
    total = sum(r["tottime"] for r in rows)
    return {"elapsed": elapsed, "total_tottime": total, "top": rows[:top]}


# -- the benchmark --------------------------------------------------------------------------
def run(
    runs: int = 3,
    size_mb: int = 1024,
    servers: tuple[str, ...] = ("fakehub", "nginx"),
    profile: bool = True,
    verbose: bool = True,
) -> dict:
    from huggingface_hub import hf_hub_url

    from corral.hub import Hub, parse_ref

    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)
    if not shutil.which("curl") or not shutil.which("sha256sum"):
        raise SystemExit("bench: pull needs curl and sha256sum")
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-pull-"))
    procs: list[subprocess.Popen] = []
    size = size_mb * MIB
    results: dict = {
        "bench": "pull",
        "runs": runs,
        "size_mb": size_mb,
        "servers": {},
        "skipped": {},
    }
    try:
        src = tmp / "src.gguf"
        say(f"pull: writing a {size_mb} MiB file")
        make_file(src, size_mb)
        info = start_fakehub(src, procs)
        plan = Hub(info["url"]).plan(parse_ref(f"{REPO_ID}:Q4_K_M"))
        f = plan.files[0]
        if f.size != size or f.sha256 != info["sha256"] or plan.revision != info["commit"]:
            raise RuntimeError(f"unexpected plan {plan}")
        endpoints = {}
        if "fakehub" in servers:
            endpoints["fakehub"] = info["url"]
        if "nginx" in servers:
            url = start_nginx(tmp / "nginx", src, plan.revision, procs)
            if url is None:
                results["skipped"]["nginx"] = "nginx not installed (apt-get install nginx-light)"
            else:
                endpoints["nginx"] = url
        hubs = {name: Hub(endpoint=url) for name, url in endpoints.items()}
        urls = {
            name: hf_hub_url(plan.repo, f.path, revision=plan.revision, endpoint=url)
            for name, url in endpoints.items()
        }
        results["urls"] = urls
        dest, out = tmp / "dl-corral", tmp / "dl-curl.gguf"
        sides = {
            "corral": lambda name: corral_once(hubs[name], plan, dest),
            "curl": lambda name: curl_once(urls[name], out),
            "curl_sha": lambda name: curl_once(urls[name], out, sha=f.sha256),
        }
        samples = {name: {side: [] for side in sides} for name in endpoints}
        say("pull: warm-up (one of each)")
        for name in endpoints:
            for fn in sides.values():
                fn(name)
        for i in range(runs):
            for name in endpoints:
                got = {side: fn(name) for side, fn in sides.items()}
                for side, r in got.items():
                    samples[name][side].append(r)
                say(
                    f"pull: {name} round {i + 1}/{runs}: "
                    + "  ".join(f"{side} {r['total']:.2f} s" for side, r in got.items())
                )
        for name, s in samples.items():
            res = {side: C.summary([r["total"] for r in rs]) for side, rs in s.items()}
            res["corral_fetch"] = C.summary([r["fetch"] for r in s["corral"]])
            res["corral_verify"] = C.summary([r["verify"] for r in s["corral"]])
            for side in ("corral", "curl", "curl_sha", "corral_fetch"):
                res[side]["mib_s"] = size_mb / res[side]["median"]
            res["ratio_curl"] = res["corral"]["mib_s"] / res["curl"]["mib_s"]
            res["ratio_curl_sha"] = res["corral"]["mib_s"] / res["curl_sha"]["mib_s"]
            res["ratio_fetch_curl"] = res["corral_fetch"]["mib_s"] / res["curl"]["mib_s"]
            results["servers"][name] = res
        # sha256 alone in this process, on the file (page cache warm), for the breakdown.
        from corral.hub import sha256_file

        hs = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sha256_file(src)
            hs.append(time.perf_counter() - t0)
        results["sha256_only"] = C.summary(hs)
        results["sha256_only"]["mib_s"] = size_mb / results["sha256_only"]["median"]
        if profile and endpoints:
            fastest = "nginx" if "nginx" in endpoints else next(iter(endpoints))
            say(f"pull: one cProfile'd corral download from {fastest}")
            results["profile"] = profile_once(hubs[fastest], plan, dest)
            results["profile"]["server"] = fastest
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    results["loadavg_before"] = load_before
    results["loadavg_after"] = os.getloadavg()
    return results


def table(res: dict) -> str:
    goal = 0.8
    n = res["runs"]
    lines = [
        f"Download of one {res['size_mb']} MiB file from 127.0.0.1, {n} interleaved runs "
        "each after a warm-up; throughput = file size / median time",
        "",
        "| server | client | median | p90 | MiB/s | corral / this (throughput) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    labels = {
        "corral": "corral `Hub.download` (stream + sha256 verify + move)",
        "corral_fetch": "... of which fetch (stream to `.part`)",
        "corral_verify": "... of which verify (sha256 of the file) + move",
        "curl": "`curl -s -o FILE URL` (no verification)",
        "curl_sha": "`curl -s -o FILE URL && sha256sum FILE`",
    }
    server_names = {"fakehub": "fake Hub (Python, tests/fakes)", "nginx": "nginx (sendfile)"}
    for name, s in res["servers"].items():
        for side, label in labels.items():
            x = s[side]
            mibs = f"{x['mib_s']:.0f}" if "mib_s" in x else ""
            ratio = {
                "curl": f"{s['ratio_curl']:.2f}x",
                "curl_sha": f"{s['ratio_curl_sha']:.2f}x",
            }.get(side, "")
            lines.append(
                f"| {server_names.get(name, name)} | {label} | {x['median']:.2f} s | "
                f"{x['p90']:.2f} s | {mibs} | {ratio} |"
            )
    sh = res["sha256_only"]
    lines += [
        "",
        f"Python `hashlib.sha256` of the file alone (page cache warm, 8 MiB reads): "
        f"{sh['median']:.2f} s, {sh['mib_s']:.0f} MiB/s.",
    ]
    for name, why in res.get("skipped", {}).items():
        lines.append(f"\n{name}: skipped ({why}).")
    lines.append("")
    for name, s in res["servers"].items():
        verdict = "met" if s["ratio_curl"] >= goal else "NOT met"
        lines.append(
            f"- {server_names.get(name, name)}: corral {s['ratio_curl']:.2f}x of plain "
            f"curl (goal >= {goal}x: **{verdict}**), {s['ratio_curl_sha']:.2f}x of "
            f"curl + sha256sum; corral's fetch phase alone "
            f"{s['ratio_fetch_curl']:.2f}x of curl."
        )
    prof = res.get("profile")
    if prof:
        lines += [
            "",
            f"One corral download from {prof['server']} under cProfile "
            f"({prof['elapsed']:.2f} s with profiling overhead), top functions by own time:",
            "",
            "| function | calls | own time | share |",
            "|---|---:|---:|---:|",
        ]
        for r in prof["top"][:8]:
            lines.append(
                f"| `{r['func']}` | {r['ncalls']} | {r['tottime']:.2f} s | "
                f"{100 * r['tottime'] / prof['total_tottime']:.0f}% |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="interleaved runs of each (default 3)")
    ap.add_argument("--size-mb", type=int, default=1024, help="file size in MiB (default 1024)")
    ap.add_argument(
        "--servers", default="fakehub,nginx", help="comma-separated: fakehub, nginx (default both)"
    )
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile'd download")
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = ap.parse_args(argv)
    C.sigterm_as_interrupt()
    try:
        res = run(
            args.runs,
            args.size_mb,
            tuple(s for s in args.servers.split(",") if s),
            profile=not args.no_profile,
        )
    except KeyboardInterrupt:
        print("pull: interrupted; cleaned up", file=sys.stderr)
        return 130
    print(json.dumps(res, indent=2) if args.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
