"""corral run | ps | stop | start | restart | rm | logs"""

from __future__ import annotations

import click

from corral.cli.common import (
    PORT,
    RESTART,
    SECONDS,
    WHOLE,
    ago,
    local_model,
    node_client,
    print_json,
    print_log,
    print_remote_log,
    settings,
    split_own_options,
    table,
)
from corral.cli.terminal import printable
from corral.errors import NotFound, UsageError
from corral.types import DEFAULT_RESTART, check_port, check_restart, to_int, to_seconds

# corral's own options of `run`, also recognised after MODEL (llama flags come there too):
# option -> (parameter of run(), the check of its value).
RUN_OPTIONS = {
    "--name": ("name", None),
    "--port": ("port", check_port),
    "--restart": ("restart", check_restart),
    "--binary": ("binary", None),
    "--build": ("build", to_int),
    "--timeout": ("timeout", to_seconds),
    "--preset": ("preset", None),
    "--env": ("env", None),
    "--idle-ttl": ("idle_ttl", to_seconds),
    "--detach": ("detach", None),
    "--json": ("as_json", None),
    "--pin": ("pin", None),
    "--no-fit": ("no_fit", None),
}
RUN_REPEATED = {"--env"}
RUN_SWITCHES = {"--detach", "--json", "--pin", "--no-fit"}
RUN_VALUED = set(RUN_OPTIONS) - RUN_SWITCHES


def Client(s):  # noqa: N802 - lazy: `corral --help` must not pay for the client
    from corral.client import Client as _Client

    return _Client(s)


def ensure_daemon(s):
    from corral.client import ensure_daemon as _ensure

    return _ensure(s)


def env_pairs(items) -> dict[str, str]:
    """``["K=V", ...]`` as a dict (``--env`` of run and preset save)."""
    env = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--env takes NAME=VALUE, got {item!r}")
        env[key] = value
    return env


@click.command(
    context_settings={
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
        "help_option_names": ["--help"],
    }
)
@click.option("--name", help="Instance name (default: from the model file name).")
@click.option("--port", type=PORT, help="Port for llama-server (default: first free in 8081-8999).")
@click.option(
    "--restart",
    "restart",
    type=RESTART,
    default=None,
    help=f"Restart policy (default: the preset's, else {DEFAULT_RESTART}).",
)
@click.option("--binary", help="llama-server binary to run.")
@click.option("--build", type=WHOLE, help="Registered build id to run.")
@click.option("--preset", help="Start from this preset (corral preset ls).")
@click.option(
    "--env",
    "env",
    multiple=True,
    metavar="K=V",
    help="Environment variable for llama-server (repeatable).",
)
@click.option("--pin", is_flag=True, default=None, help="Never stop it when idle nor evict it.")
@click.option(
    "--idle-ttl", type=SECONDS, metavar="SECONDS", help="Stop after this long unused (0 = never)."
)
@click.option("--detach", is_flag=True, help="Return once spawned, without waiting for ready.")
@click.option("--timeout", type=SECONDS, help="Seconds to wait for ready (default: load_timeout).")
@click.option(
    "--no-fit",
    "no_fit",
    is_flag=True,
    help="Launch exactly the flags given: no memory plan, nothing added.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the instance as JSON.")
@click.argument("model", required=False)
@click.argument("llama_flags", nargs=-1, type=click.UNPROCESSED)
def run(**opts) -> None:
    """Launch llama-server on MODEL with any llama-server flags.

    MODEL is a GGUF path, or a model of the index (`corral ls`): its id, short name,
    an alias, or a unique prefix. A model pulled with a vision projector gets --mmproj.
    With --preset NAME, MODEL may be left out when the preset names one.

    Every flag of the selected llama-server build passes through, validated against
    its own --help first (see `corral flags`). corral sets --model and --port, and
    --host 127.0.0.1 unless you pass --host. The defaults preset ('*'), then --preset,
    then the flags given here apply: for each flag the later value wins.

    Unless you fix -ngl, -ts or --device yourself, the launch is planned on the
    devices' free memory (see `corral fit`): the flags the plan adds are shown as
    `placed: ...` on stderr; a launch that does not fit is refused (exit 4).
    --no-fit launches exactly what you typed.

    \b
    Examples:
      corral run ./gemma-3-270m-Q4_K_M.gguf
      corral run gemma-3-270m          (after corral pull / corral import)
      corral run model.gguf --name chat -c 8192 -ngl 99 -fa on
      corral run model.gguf --port 8090 --restart always --ctx-size=4096
      corral run --preset chat -c 2048 --env CUDA_VISIBLE_DEVICES=1
      corral run model.gguf --no-fit -ngl 0
    """
    opts = _run_options(opts)
    opts["flags"] = _with_rpc(opts["flags"], planned=not opts["no_fit"])
    body = _launch_body(opts)  # checked before a daemon is started for it
    inst = ensure_daemon(settings()).request("POST", "/api/v1/instances", body, timeout=None)
    _print_launched(inst, opts["as_json"])


def _run_options(opts: dict) -> dict:
    """click's values, overridden by corral's options typed after MODEL (checked alike)."""
    model, tokens = opts["model"], opts["llama_flags"]
    if model is not None and model.startswith("-"):
        # `run --preset P -c 2048`: no MODEL, the first token is already a llama flag.
        model, tokens = None, (model, *tokens)
    own, flags = split_own_options(tokens, RUN_VALUED, RUN_SWITCHES, RUN_REPEATED)
    opts = {**opts, "model": model, "flags": flags}
    for option, value in own.items():
        param, check = RUN_OPTIONS[option]
        if option in RUN_REPEATED:
            opts[param] = (*opts[param], *value)
        else:
            opts[param] = check(value, option) if check else value
    if opts["model"] is None and opts["preset"] is None:
        raise UsageError("give MODEL (a GGUF path or a model of the index), or --preset NAME")
    return opts


#: llama-server's flags that place layers (then ``--rpc`` adds no ``-ngl``).
_PLACING = ("-ngl", "--gpu-layers", "--n-gpu-layers", "-ts", "--tensor-split", "-dev", "--device")


def _with_rpc(flags: list[str], *, planned: bool = True) -> list[str]:
    """``--rpc`` (llama-server's own flag) with node names made ``HOST:PORT`` endpoints
    (an rpc-server started on a node that has none); ``HOST:PORT`` entries pass as typed.

    A planned launch gets its ``--gpu-layers`` and ``--tensor-split`` from the planner,
    which asks each rpc-server its memory (:mod:`corral.fit.rpc_devices`). One that is
    not planned (``--no-fit``) and places nothing itself gets ``-ngl 99``: every layer on
    the GPU-type devices, the RPC ones included, split by llama.cpp by free memory."""
    at = next((i for i, f in enumerate(flags) if f == "--rpc" or f.startswith("--rpc=")), None)
    if at is None:
        return flags
    flags = list(flags)
    if flags[at] == "--rpc":
        if at + 1 >= len(flags):
            raise UsageError("--rpc needs node names or HOST:PORT endpoints")
        value, end = flags[at + 1], at + 2
    else:
        value, end = flags[at].split("=", 1)[1], at + 1
    from corral.cli.rpc import resolve_rpc

    endpoints, notes = resolve_rpc(value)
    flags[at:end] = ["--rpc", endpoints]
    for note in notes:
        click.echo(note, err=True)
    if not planned and not any(f.split("=", 1)[0] in _PLACING for f in flags):
        flags += ["-ngl", "99"]
        click.echo("rpc: -ngl 99 added (llama.cpp splits layers by free memory)", err=True)
    return flags


def _launch_body(opts: dict) -> dict:
    """The ``POST /api/v1/instances`` body of a run."""
    from pathlib import Path

    binary = opts["binary"]
    return {
        "model": local_model(opts["model"]),
        "preset": opts["preset"],
        "flags": opts["flags"],
        "name": opts["name"],
        "port": opts["port"],
        "restart": opts["restart"],
        "env": env_pairs(opts["env"]),
        "pinned": opts["pin"],
        "idle_ttl": opts["idle_ttl"],
        "binary": str(Path(binary).expanduser().resolve()) if binary else None,
        "build": opts["build"],
        "wait": not opts["detach"],
        "timeout": opts["timeout"],
        "fit": not opts["no_fit"],
    }


def _print_launched(inst: dict, as_json: bool) -> None:
    if as_json:
        print_json(inst)
        return
    click.echo(f"{inst['name']}  {inst['state']}  port {inst['port']}  {inst['url']}")
    line = placement_line(inst)
    if line:  # stderr: stdout stays the one line scripts read
        click.echo(line, err=True)


# --------------------------------------------------------------------------- placement


def _gib(n) -> str:
    return f"{n / 2**30:.1f}G"


def _placed_devices(placement: dict) -> list[dict]:
    """The devices a plan puts something on (a device with nothing on it is left out)."""
    devices = placement.get("devices") if isinstance(placement, dict) else None
    return [d for d in devices or [] if isinstance(d, dict) and (d.get("used_bytes") or 0) > 0]


def placement_line(inst: dict) -> str | None:
    """``placed: gpu0 18 layers 2.1 GiB, host 0.3 GiB (ctx 32768, KV f16/f16)``; None when
    the launch was not planned (``--no-fit``, -ngl/-ts/--device fixed, model not estimable)."""
    placement = inst.get("placement")
    if not isinstance(placement, dict):
        return None
    from corral.fit.placement import summary

    return printable(f"placed: {summary(placement)}")


def devices_cell(placement) -> str:
    """``gpu0:2.1G,host:0.3G`` (projected bytes per device) for ``ps``; ``-`` when unplanned."""
    if not isinstance(placement, dict):
        return "-"
    cells = [f"{d.get('id', '?')}:{_gib(d['used_bytes'])}" for d in _placed_devices(placement)]
    return printable(",".join(cells)) or "-"


def _instances(with_nodes: bool = False) -> list[dict]:
    """This machine's instances (from the daemon, else from the store), then, with
    ``with_nodes``, those of the linked nodes (``node`` set; local ones have ``node:
    None``). A node that does not answer is one line on stderr."""
    s = settings()
    client = Client(s)
    try:
        items = client.request("GET", "/api/v1/instances", timeout=5)
    except (ConnectionRefusedError, OSError):
        from corral.store.instances import view
        from corral.supervisor.offline import offline_records

        return [{**view(r), "node": None} for r in offline_records(s)]
    items = [{**i, "node": None} for i in items]
    if with_nodes:
        remote = client.request("GET", "/api/v1/nodes/instances", timeout=10)
        for name, why in sorted(remote["unreachable"].items()):
            click.echo(f"warning: node {name}: not listed: {printable(why)}", err=True)
        items += remote["instances"]
    return items


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ps(as_json: bool) -> None:
    """List instances: name, state, pid, port, model, devices, restarts, uptime.

    DEVICES is the memory plan of the launch, projected bytes per device
    (``gpu0:2.1G,host:0.3G``); ``-`` when it was not planned. ``--json`` has the whole
    ``placement`` (and ``placement.real``: what llama-server reported once loaded)."""
    items = _instances(with_nodes=True)
    if as_json:
        keys = (
            "node",
            "name",
            "state",
            "pid",
            "port",
            "url",
            "model",
            "build",
            "version",
            "flags",
            "restarts",
            "started_at",
            "ready_at",
            "restart_policy",
            "last_error",
            "placement",
        )
        print_json([{k: i.get(k) for k in keys} for i in items])
        return
    if not items:
        click.echo("no instances (start one with: corral run MODEL.gguf)", err=True)
        _print_rpc_section(bool(items))
        return
    rows = [
        [
            printable(str(i["name"])),  # a node's answer is anyone's text too
            printable(str(i["state"])),
            i["pid"] or "-",
            i["port"],
            printable(str(i["model"]).rsplit("/", 1)[-1]),  # a file name: anyone's text
            devices_cell(i.get("placement")),
            i["restarts"],
            ago(i["ready_at"] if i["state"] == "ready" else None),
        ]
        for i in items
    ]
    head = ["NAME", "STATE", "PID", "PORT", "MODEL", "DEVICES", "RESTARTS", "UP"]
    if any(i["node"] for i in items):  # linked nodes: whose each instance is
        rows = [[printable(i["node"] or "-"), *row] for i, row in zip(items, rows, strict=True)]
        head = ["NODE", *head]
    click.echo(table(rows, head))
    _print_rpc_section(bool(items))


def _print_rpc_section(after_table: bool) -> None:
    """This machine's rpc-servers under the instances, as a table of their own: they
    have no model, devices plan nor URL (``ps --json`` stays the list of instances;
    ``rpc ls --json`` has the servers)."""
    from corral.cli.rpc import rpc_rows, rpc_servers

    servers = rpc_servers()
    if not servers:
        return
    if after_table:
        click.echo("")
    click.echo("RPC SERVERS")
    click.echo(table(*rpc_rows(servers)))


def _target_names(client, targets: tuple[str, ...], all_: bool) -> list[str]:
    if all_:
        return [i["name"] for i in client.request("GET", "/api/v1/instances")]
    if not targets:
        raise UsageError("name an instance (or a port), or pass --all")
    return list(targets)


@click.command()
@click.argument("targets", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Stop every instance.")
def stop(targets: tuple[str, ...], all_: bool) -> None:
    """Stop instances by NAME or PORT (SIGTERM, then SIGKILL after stop_timeout)."""
    client = ensure_daemon(settings())
    for target in _target_names(client, targets, all_):
        inst = client.request("POST", f"/api/v1/instances/{target}/stop", timeout=None)
        click.echo(f"{inst['name']}  {inst['state']}")


def _control(action: str, name: str, detach: bool) -> None:
    client = ensure_daemon(settings())
    inst = client.request(
        "POST",
        f"/api/v1/instances/{name}/{action}",
        params={"wait": "false" if detach else "true"},
        timeout=None,
    )
    click.echo(f"{inst['name']}  {inst['state']}  port {inst['port']}  {inst['url']}")


@click.command()
@click.argument("name")
@click.option("--detach", is_flag=True, help="Do not wait for ready.")
def start(name: str, detach: bool) -> None:
    """Start a stopped, exited or failed instance again with the same flags."""
    _control("start", name, detach)


@click.command()
@click.argument("name")
@click.option("--detach", is_flag=True, help="Do not wait for ready.")
def restart(name: str, detach: bool) -> None:
    """Stop and start an instance."""
    _control("restart", name, detach)


@click.command("delete")
@click.argument("names", nargs=-1, required=True)
def delete(names: tuple[str, ...]) -> None:
    """Stop instances and forget them (their logs stay in CORRAL_HOME/logs).

    (`corral rm` removes models; `corral delete` removes instances.)"""
    client = ensure_daemon(settings())
    for name in names:
        client.request("DELETE", f"/api/v1/instances/{name}", timeout=None)
        click.echo(f"removed {name}")


@click.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", default=50, show_default=True, help="How many last lines.")
def logs(name: str, follow: bool, lines: int) -> None:
    """Print an instance's log (stdout and stderr of llama-server)."""
    remote = node_client()
    if remote is not None:  # a node's instance: through its REST API, relayed
        print_remote_log(remote, f"/api/v1/instances/{name}/logs", follow, lines)
        return
    from corral.store import instances as inst_table
    from corral.store.db import Store

    s = settings()
    if not s.db_path.exists():
        raise NotFound(f"no instance named {name!r}")
    store = Store(s.db_path)
    try:
        rec = inst_table.get(store, name)
    finally:
        store.close()
    print_log(s.logs_dir / f"{rec.name}.log", follow, lines)


COMMANDS = [run, ps, stop, start, restart, delete, logs]
