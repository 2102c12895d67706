"""corral rpc start | ls | stop | logs: llama.cpp rpc-servers, for one model across hosts.

Also the two helpers ``corral ps`` and ``corral run --rpc`` use: :func:`rpc_servers`
(this machine's, from the daemon or the store) and :func:`resolve_rpc` (node names in a
``--rpc`` list made ``HOST:PORT`` endpoints, starting an rpc-server where a node has none).
"""

from __future__ import annotations

import click

from corral.cli.common import (
    PORT,
    RESTART,
    WHOLE,
    ago,
    node_client,
    print_json,
    print_log,
    print_remote_log,
    settings,
    table,
)
from corral.cli.terminal import printable
from corral.errors import NotFound, UsageError

#: States in which an rpc-server's process is meant to exist.
_LIVE = ("starting", "ready", "backoff", "stopping")


def _client():
    from corral.client import ensure_daemon

    return ensure_daemon(settings())


@click.group()
def rpc() -> None:
    """llama.cpp rpc-servers: lend this machine's devices to a llama-server elsewhere.

    rpc-server has NO authentication: whoever reaches its port can use (and crash)
    this machine's devices. corral binds it to the address you name (default
    127.0.0.1) and refuses 0.0.0.0 without --insecure. Put it on a private network
    (WireGuard, Tailscale), never on an open one.

    \b
    Examples:
      corral rpc start --host 10.0.0.2            on the machine lending its GPU
      corral rpc start --node gpu-box             the same, from the controller
      corral run MODEL --rpc gpu-box,10.0.0.3:50052
      corral rpc ls
      corral rpc stop rpc-50052
    """


@rpc.command("start")
@click.option("--host", default="127.0.0.1", show_default=True, help="IPv4 address to bind.")
@click.option("--port", type=PORT, help="Port (default: the first free from 50052).")
@click.option(
    "--device",
    "devices",
    multiple=True,
    metavar="DEV",
    help="Device(s) to expose (-d; repeatable).",
)
@click.option("--threads", type=WHOLE, help="CPU threads (-t).")
@click.option("--no-cache", is_flag=True, help="No tensor cache (-c under CORRAL_HOME/rpc-cache).")
@click.option("--insecure", is_flag=True, help="Allow --host 0.0.0.0 (no authentication!).")
@click.option("--name", help="Name (default: rpc-PORT).")
@click.option("--binary", help="rpc-server binary (default: the one beside llama-server).")
@click.option("--build", type=WHOLE, help="Registered build id whose rpc-server to run.")
@click.option("--restart", type=RESTART, default=None, help="Restart policy (default on-failure).")
@click.option("--json", "as_json", is_flag=True, help="Print the server as JSON.")
def start(**opts) -> None:
    """Start a supervised rpc-server (restarted on a crash, kept across daemon restarts)."""
    devices = [d for item in opts["devices"] for d in item.split(",") if d]
    body = {
        "host": opts["host"],
        "port": opts["port"],
        "devices": devices,
        "threads": opts["threads"],
        "cache": not opts["no_cache"],
        "insecure": opts["insecure"],
        "name": opts["name"],
        "binary": opts["binary"],
        "build": opts["build"],
        "restart": opts["restart"],
    }
    from corral.supervisor.rpc import check_bind

    check_bind(body["host"], body["insecure"])  # before a daemon is started for it
    server = _client().request("POST", "/api/v1/rpc", body, timeout=120)
    if opts["as_json"]:
        print_json(server)
        return
    click.echo(f"{server['name']}  {server['state']}  {server['endpoint']}")
    click.echo(f"use it with: corral run MODEL --rpc {server['endpoint']}", err=True)


def rpc_servers() -> list[dict]:
    """This machine's rpc-servers: from the daemon, else from the store (a server whose
    process is gone shows ``exited``). With ``--node``, that node's, through the relay."""
    from corral.client import Client

    remote = node_client()
    if remote is not None:
        return remote.request("GET", "/api/v1/rpc", timeout=10)
    s = settings()
    try:
        return Client(s).request("GET", "/api/v1/rpc", timeout=5)
    except (ConnectionRefusedError, OSError):
        pass
    if not s.db_path.exists():
        return []
    from corral.store import rpc as rpc_table
    from corral.store.db import Store
    from corral.supervisor.process import same_process

    store = Store(s.db_path)
    try:
        records = rpc_table.list_all(store)
    finally:
        store.close()
    out = []
    for rec in records:
        view = rec.to_dict()
        if view["state"] in _LIVE and not same_process(rec.pid or 0, rec.create_time):
            view.update(state="exited", pid=None)
        out.append(view)
    return out


def rpc_rows(servers: list[dict]) -> tuple[list[list], list[str]]:
    """The table of ``rpc ls`` and of ``ps``'s RPC section."""
    rows = [
        [
            printable(str(r["name"])),
            printable(str(r["state"])),
            r["pid"] or "-",
            printable(str(r["endpoint"])),
            printable(",".join(r.get("devices") or []) or "auto"),
            r["restarts"],
            ago(r["ready_at"] if r["state"] == "ready" else None),
        ]
        for r in servers
    ]
    return rows, ["NAME", "STATE", "PID", "ENDPOINT", "DEVICES", "RESTARTS", "UP"]


@rpc.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(as_json: bool) -> None:
    """List rpc-servers: name, state, pid, endpoint (HOST:PORT for --rpc), devices."""
    servers = rpc_servers()
    if as_json:
        print_json(servers)
        return
    if not servers:
        click.echo("no rpc-servers (start one with: corral rpc start --host IP)", err=True)
        return
    click.echo(table(*rpc_rows(servers)))


@rpc.command("stop")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Stop every rpc-server.")
def stop(names: tuple[str, ...], all_: bool) -> None:
    """Stop rpc-servers by NAME (SIGTERM, then SIGKILL) and forget them."""
    client = _client()
    if all_:
        names = tuple(r["name"] for r in client.request("GET", "/api/v1/rpc"))
    elif not names:
        raise UsageError("name an rpc-server (corral rpc ls), or pass --all")
    for name in names:
        done = client.request("DELETE", f"/api/v1/rpc/{name}", timeout=60)
        click.echo(f"{done['name']}  stopped")


@rpc.command("logs")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", default=50, show_default=True, help="How many last lines.")
def logs(name: str, follow: bool, lines: int) -> None:
    """Print an rpc-server's log (its stdout and stderr)."""
    remote = node_client()
    if remote is not None:
        print_remote_log(remote, f"/api/v1/rpc/{name}/logs", follow, lines)
        return
    from corral.types import check_name

    path = settings().logs_dir / "rpc" / f"{check_name(name, 'rpc-server name')}.log"
    if not path.exists():
        raise NotFound(f"no log of an rpc-server named {name!r}")
    print_log(path, follow, lines)


# --------------------------------------------------------------------------- run --rpc


def resolve_rpc(value: str) -> tuple[str, list[str]]:
    """A ``--rpc`` list made endpoints: ``HOST:PORT`` entries as typed, node names (of
    ``corral nodes ls``) each the endpoint of that node's rpc-server, started there on
    the node URL's address when it has none. Returns the list and notes for stderr."""
    from corral.client import Client, ensure_daemon

    entries = [e.strip() for e in value.split(",")]
    if not all(entries):
        raise UsageError(f"--rpc takes node names or HOST:PORT, comma-separated, got {value!r}")
    if all(":" in e for e in entries):
        return value, []
    s = settings()
    controller = ensure_daemon(s)
    controller.node = None  # node names are this daemon's, whatever --node says
    nodes = {n["name"]: n for n in controller.request("GET", "/api/v1/nodes")}
    endpoints, notes = [], []
    for entry in entries:
        if ":" in entry:
            endpoints.append(entry)
            continue
        node = nodes.get(entry)
        if node is None:
            raise UsageError(
                f"--rpc {entry}: no linked node of that name (corral nodes ls); "
                "give a node name or HOST:PORT"
            )
        there = Client(s)
        there.node = entry
        endpoint, note = _node_endpoint(there, entry, node["url"])
        endpoints.append(endpoint)
        if note:
            notes.append(note)
    return ",".join(endpoints), notes


def _node_endpoint(there, name: str, url: str) -> tuple[str, str | None]:
    """``HOST:PORT`` of node ``name``'s rpc-server on the address of its URL."""
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    for server in there.request("GET", "/api/v1/rpc", timeout=10):
        if server["state"] in ("ready", "starting") and server["host"] in (host, "0.0.0.0"):
            return f"{host}:{server['port']}", None
    try:
        from corral.supervisor.rpc import check_bind

        check_bind(host)
    except UsageError:
        raise UsageError(
            f"--rpc {name}: its URL {url} names no IPv4 address to bind an rpc-server to; "
            f"start one there (corral rpc start --node {name} --host IP) and pass --rpc IP:PORT"
        ) from None
    server = there.request("POST", "/api/v1/rpc", {"host": host}, timeout=120)
    return server[
        "endpoint"
    ], f"rpc: started {server['name']} on node {name} ({server['endpoint']})"


COMMANDS = [rpc]
