"""corral pull | search | quants"""

from __future__ import annotations

import json
import sys
import time

import click

from corral.cli.common import print_json, settings, table
from corral.cli.terminal import printable


def human(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class _Progress:
    """A bar on a TTY, plain lines every few seconds otherwise, JSON lines with --json."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.tty = sys.stderr.isatty() and not as_json
        self.last_plain = 0.0

    def show(self, ev: dict) -> None:
        if self.as_json:
            click.echo(json.dumps(ev))
            return
        total, done = ev.get("total") or 0, ev.get("done") or 0
        pct = 100.0 * done / total if total else 0.0
        current = next(
            (
                f"  {name.rsplit('/', 1)[-1]} {human(st['done'])}/{human(st['total'])}"
                for name, st in (ev.get("files") or {}).items()
                if st.get("total") and st["done"] < st["total"]
            ),
            "",
        )
        line = (
            f"{ev['ref']}  {pct:5.1f}%  {human(done)}/{human(total)}  "
            f"{human(ev.get('speed') or 0)}/s  ETA {_eta(ev.get('eta'))}{current}"
        )
        if self.tty:
            width = 24
            fill = int(width * pct / 100)
            sys.stderr.write("\r[" + "#" * fill + "." * (width - fill) + "] " + line + "\033[K")
            sys.stderr.flush()
        elif time.monotonic() - self.last_plain >= 2.0 or ev["state"] not in ("queued", "running"):
            self.last_plain = time.monotonic()
            click.echo(line, err=True)

    def end(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


@click.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Progress and result as JSON lines.")
@click.option("--detach", is_flag=True, help="Start the pull in the daemon and return.")
def pull(ref: str, as_json: bool, detach: bool) -> None:
    """Download a GGUF model from HuggingFace (resumable, verified) into the index.

    \b
    REF forms:
      org/repo                      the Q4_K_M quant (default)
      org/repo:Q5_K_M | hf.co/org/repo:IQ4_XS | org/repo@REVISION:Q8_0
      org/repo/path/file.gguf | https://huggingface.co/org/repo/resolve/main/file.gguf
    Split models bring every part; a repo with mmproj-*.gguf brings the projector too.
    Interrupted pulls (Ctrl-C, kill, network) resume from the bytes on disk.
    """
    from corral.client import ensure_daemon
    from corral.errors import Cancelled, CorralError, by_code

    client = ensure_daemon(settings())
    job = client.request("POST", "/api/v1/pulls", {"ref": ref})
    if detach:
        print_json(job) if as_json else click.echo(f"pull {job['id']} started: {job['ref']}")
        return
    bar = _Progress(as_json)
    final = job
    try:
        for ev in client.stream_lines(f"/api/v1/pulls/{job['id']}/events"):
            final = ev
            bar.show(ev)
            if ev["state"] not in ("queued", "running"):
                break
    except KeyboardInterrupt:
        bar.end()
        client.request("DELETE", f"/api/v1/pulls/{job['id']}", timeout=15)
        raise Cancelled("pull cancelled; run the same command again to resume")
    bar.end()
    if final["state"] == "done":
        if not as_json:
            click.echo(f"pulled {final['model']} ({human(final['total'])})")
        return
    cls = by_code().get(final.get("error_code") or "", CorralError)
    raise cls(final.get("error") or f"pull ended: {final['state']}")


@click.command()
@click.argument("text")
@click.option("--limit", default=20, show_default=True, help="How many repos.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def search(text: str, limit: int, as_json: bool) -> None:
    """Search HuggingFace for GGUF repos (most downloaded first)."""
    from corral.hub import Hub

    s = settings()
    found = Hub(s.hf_endpoint, s.hf_token or None).search(text, limit)
    if as_json:
        print_json(found)
        return
    rows = [
        [m["id"], m.get("downloads") or 0, m.get("likes") or 0, (m.get("updated") or "")[:10]]
        for m in found
    ]
    rows = [[printable(c) for c in row] for row in rows]  # Hub/file text: inert
    click.echo(
        table(rows, ["REPO", "DOWNLOADS", "LIKES", "UPDATED"]) if rows else "no GGUF repos found"
    )


@click.command()
@click.argument("repo")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def quants(repo: str, as_json: bool) -> None:
    """List the quants a HuggingFace repo offers, with total sizes (split parts grouped)."""
    from corral.hub import Hub, parse_ref

    s = settings()
    ref = parse_ref(repo)
    groups = Hub(s.hf_endpoint, s.hf_token or None).quants(ref.repo, ref.revision)
    if as_json:
        print_json([g.to_dict() for g in groups])
        return
    rows = [[g.quant, human(g.total_size), len(g.files), g.files[0].path] for g in groups]
    rows = [[printable(c) for c in row] for row in rows]  # Hub/file text: inert
    click.echo(
        table(rows, ["QUANT", "SIZE", "PARTS", "FILE"]) if rows else f"{ref.repo} has no GGUF files"
    )


COMMANDS = [pull, search, quants]
