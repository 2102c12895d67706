"""corral nodes add | ls | rm

The daemon (the controller) holds the nodes: these commands go through its API, which
checks a node before it stores it and polls it after. The key is sent once, to the
controller, and never printed again.
"""

from __future__ import annotations

import sys

import click

from corral.cli.common import ago, print_json, settings, table


@click.group()
def nodes() -> None:
    """Link other corral daemons (nodes) to this one, and see them.

    \b
    On the node (corral serve --host IP there), make an admin key:
      KEY=$(corral keys create controller)
    Here, link it (the key read from stdin stays out of the shell history):
      echo "$KEY" | corral nodes add gpu-box http://192.168.1.20:9380 --key -
      corral nodes ls
      corral nodes rm gpu-box

    A node is polled every node_poll_interval seconds (default 10); three missed
    polls in a row make it down, its first answer up again.

    \b
    Then act on a node with --node NAME, anywhere after the command:
      corral run MODEL --node gpu-box
      corral logs NAME -f --node gpu-box
    (also start, stop, restart, delete, pull, ls, show, rm, import, gpus, flags,
    builds, update, fit and rpc).
    ps lists every node's instances; /v1 on this daemon routes to the nodes' models.
    """


def _client():
    from corral.client import ensure_daemon

    return ensure_daemon(settings())


def _read_key(key: str) -> str:
    """``--key``'s value, or the first line of stdin for ``--key -``."""
    from corral.errors import UsageError

    if key != "-":
        return key
    line = sys.stdin.readline().strip()
    if not line:
        raise UsageError("--key -: no key on stdin")
    return line


@nodes.command("add")
@click.argument("name")
@click.argument("url")
@click.option(
    "--key",
    required=True,
    help="An admin key made on the node (corral keys create); '-' reads it from stdin.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the node as JSON.")
def add(name: str, url: str, key: str, as_json: bool) -> None:
    """Link the node NAME at URL (http(s)://host:port), checked with KEY first.

    The node is called once with the key: it is stored only when it answers as a
    corral daemon and takes the key as an admin key.
    """
    body = {"name": name, "url": url, "key": _read_key(key)}
    node = _client().request("POST", "/api/v1/nodes", body, timeout=60)
    if as_json:
        print_json(node)
        return
    click.echo(
        f"added node {node['name']} ({node['url']}): corral {node.get('corral_version') or '?'}, "
        f"{_gpus(node.get('gpus') or [])}"
    )


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024**3:.1f}"


def _gpus(gpus: list[dict]) -> str:
    """``0: 10.2/12.0 GiB free, 1: ...`` or ``no GPU``."""
    if not gpus:
        return "no GPU"
    return ", ".join(
        f"{g.get('index', '?')}: {_gib(g.get('vram_free'))}/{_gib(g.get('vram_total'))} GiB free"
        for g in gpus
    )


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


@nodes.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(as_json: bool) -> None:
    """List linked nodes: state (up, down; unknown before the first poll), versions,
    GPUs with free memory, instances and models, last seen."""
    found = _client().request("GET", "/api/v1/nodes")
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("no nodes (corral nodes add NAME URL --key KEY)", err=True)
        return
    rows = [
        [
            n["name"],
            n["url"],
            n["state"],
            n.get("corral_version") or "-",
            n.get("llama_cpp_version") or "-",
            _gpus(n.get("gpus") or []) if n.get("corral_version") else "-",
            _count(n.get("instances")),
            _count(n.get("models")),
            ago(n.get("last_seen")),
        ]
        for n in found
    ]
    headers = ["NAME", "URL", "STATE", "CORRAL", "LLAMA.CPP", "GPUS", "INSTANCES", "MODELS"]
    click.echo(table(rows, [*headers, "LAST SEEN"]))


@nodes.command("rm")
@click.argument("name")
def rm(name: str) -> None:
    """Unlink the node NAME: no more polls; the node and its instances run on."""
    _client().request("DELETE", f"/api/v1/nodes/{name}")
    click.echo(f"removed node {name}")


COMMANDS = [nodes]
