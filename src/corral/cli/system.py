"""corral gpus"""

from __future__ import annotations

import json

import click

from corral.cli.common import print_json, table
from corral.settings import load_settings


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024**3:.1f} GiB"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def gpus(as_json: bool) -> None:
    """Show the GPUs and CPU of this host and the backend corral would pick.

    \b
    Examples:
      corral gpus           table of GPUs plus the chosen backend
      corral gpus --json    everything detected, machine-readable
    """
    from corral.gpu import summary

    host, data = _detected()
    backend, why = data["backend"]["name"], data["backend"]["reason"]
    if as_json:
        print_json(data)
        return
    if host.gpus:
        rows = [
            [
                str(g.index),
                g.vendor,
                g.name,
                _gib(g.vram_total),
                _gib(g.vram_free),
                g.compute_capability or g.gfx_target or "-",
                g.driver_version or "-",
            ]
            for g in host.gpus
        ]
        click.echo(table(rows, ["IDX", "VENDOR", "NAME", "VRAM", "FREE", "ARCH", "DRIVER"]))
    elif host.metal:
        click.echo(f"Apple Metal GPU (unified memory): {host.cpu_model} ({summary(host)})")
    else:
        click.echo(f"no GPU found: CPU-only host ({summary(host)})")
    click.echo(
        f"CPU: {host.cpu_model}, {host.threads} threads"
        + ("; Vulkan loader present" if host.vulkan else "")
    )
    click.echo(f"backend: {backend} ({why})")
    for warning in host.warnings:
        click.echo(f"warning: {warning}", err=True)


def _detected():
    """(the host, its JSON): this machine's, or (``--node``) the node's ``/api/v1/system``,
    detected there now."""
    from corral.cli.common import node_client
    from corral.gpu import HostInfo, amdgpu_targets, best_backend, cuda_architectures, detect

    remote = node_client()
    if remote is not None:
        answer = remote.request("GET", "/api/v1/system", timeout=30)
        keys = (*HostInfo.__dataclass_fields__, "backend", "cuda_architectures", "amdgpu_targets")
        data = {k: answer[k] for k in keys if k in answer}
        return HostInfo.from_dict(data), data
    host = detect()
    backend, why = best_backend(host)
    data = host.to_dict()
    data["backend"] = {"name": backend, "reason": why}
    data["cuda_architectures"] = cuda_architectures(host)
    data["amdgpu_targets"] = amdgpu_targets(host)
    return host, data


COMMANDS = [gpus]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(as_json: bool) -> None:
    """Check that corral can run llama-server here: home, disk, binary, libraries,
    GPUs the build sees, daemon port. Exits 1 when a check fails."""
    from corral.client import Client
    from corral.doctor import run_checks

    s = load_settings()
    checks = run_checks(s, daemon_alive=Client(s).alive())
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        for c in checks:
            click.echo(f"{c.status.upper():4}  {c.name:12}  {c.detail}")
            if c.fix and c.status != "ok":
                click.echo(f"{'':4}  {'':12}  -> {c.fix}")
    if any(c.status == "fail" for c in checks):
        raise SystemExit(1)


COMMANDS.append(doctor)
