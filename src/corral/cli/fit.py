"""corral fit — the memory plan of a launch, without launching (no daemon needed).

Read-only: the model is resolved through the index as ``corral show`` does, the flags
are validated by the catalog of the build ``run`` would use, and the ``*`` defaults
preset applies as it does for a launch. With ``--node NAME`` the node plans it through
its ``POST /api/v1/fit`` (relayed by the daemon): its index, build, devices and instances.
"""

from __future__ import annotations

import click

from corral.cli.common import (
    local_model,
    node_client,
    print_json,
    settings,
    split_own_options,
    table,
)
from corral.cli.terminal import printable
from corral.errors import UsageError

# corral's own options of `fit`, also recognised after MODEL (llama flags come there too).
FIT_VALUED = {"--devices", "--margin", "--binary", "--build"}
FIT_SWITCHES = {"--json"}


def _split_args(args: tuple[str, ...]) -> tuple[dict, list[str]]:
    return split_own_options(args, FIT_VALUED, FIT_SWITCHES)


class _Local:
    """The flag catalogs ``corral fit`` needs, from the store alone (no daemon)."""

    def __init__(self, s, store) -> None:
        self.settings, self.store = s, store
        self._catalogs: dict[tuple, object] = {}

    def catalog(self, binary=None, build_id=None):
        """The flag catalog of that build, read once (compose asks, then the planner)."""
        from corral.builds.catalog import load_catalog
        from corral.builds.resolve import resolve_binary

        key = (binary, build_id)
        if key not in self._catalogs:
            resolved = resolve_binary(self.settings, self.store, binary, build_id)
            self._catalogs[key] = load_catalog(resolved.path, self.settings.cache_dir)
        return self._catalogs[key]


def _resolve(store, text: str) -> tuple[str, str | None]:
    """(GGUF path, its mmproj) for MODEL: a model of the index, else a .gguf path."""
    from corral import models
    from corral.errors import NotFound
    from corral.launchspec import check_model_file

    try:
        rec = models.resolve(store, text)
    except NotFound:
        if text.lower().endswith(".gguf"):
            return str(check_model_file(text)), None
        raise NotFound(f"no model {text!r}: not a file, and not in the index (corral ls)")
    return str(check_model_file(rec.path)), rec.mmproj


def plan_local(
    model: str,
    flags: list[str],
    *,
    devices: str | None,
    margin_mib: float | None,
    binary: str | None = None,
    build: int | None = None,
    probe=None,
):
    """(plan, devices) for ``corral fit``: store, catalog and planner, no daemon."""
    from corral import presets
    from corral.fit.devices import MiB
    from corral.fit.planner import fit, owned_and_mmproj
    from corral.store.db import Store

    s = settings()
    s.ensure_dirs()
    store = Store(s.db_path)
    try:
        local = _Local(s, store)
        spec = presets.compose_sync(
            store, local.catalog, model=model, flags=flags, binary=binary, build_id=build
        )
        catalog = local.catalog(spec.binary, spec.build_id)
        path, mmproj = _resolve(store, spec.model)
    finally:
        store.close()
    pairs = owned_and_mmproj(catalog, catalog.normalize(list(spec.flags)), mmproj)
    margin = None if margin_mib is None else int(margin_mib * MiB)
    return fit(path, pairs, catalog=catalog, devices_spec=devices, margin=margin, probe=probe)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}G" if n else "-"


def render(view: dict) -> str:
    """The table, the flags and the notes, as ``corral fit`` prints them, from the plan's
    JSON (``corral fit --json``, a node's ``POST /api/v1/fit``) plus, where known,
    ``over_bytes`` per device and ``env`` (see :func:`_shown`)."""
    import shlex

    rows = []
    for d in view["devices"]:
        # A node's answer carries no over_bytes: over is then past the device's free memory.
        over = d.get("over_bytes", max(0, d["used_bytes"] - d["free_bytes"]))
        rows.append(
            [
                printable(f"{d['id']} {d['name']}"),
                str(d["layers"]),
                _gib(d["weights_bytes"]),
                _gib(d["kv_bytes"]),
                _gib(d["compute_bytes"]),
                f"{_gib(d['used_bytes'])} / {_gib(d['free_bytes'])}" + ("  OVER" if over else ""),
            ]
        )
    out = [table(rows, ["DEVICE", "LAYERS", "WEIGHTS", "KV", "COMPUTE", "USED/FREE"]), ""]
    head = "fits" if view["fits"] else "does not fit"
    kv = f"{view['cache_type_k']}/{view['cache_type_v']}"
    out.append(f"{head}: context {view['context']}, KV cache {kv}")
    out.append("flags: " + printable(" ".join(shlex.quote(f) for f in view["flags"])))
    if view.get("env"):
        out.append(
            "or select the GPUs with: "
            + " ".join(f"{k}={v}" for k, v in view["env"].items())
            + " (instead of --device)"
        )
    out += [f"  - {printable(n)}" for n in view["notes"]]
    return "\n".join(out)


def _shown(plan) -> dict:
    """A local plan's JSON with what :func:`render` also shows: each device's bytes past
    what may be used (margin and running instances counted) and the GPU-selecting env."""
    view = plan.view()
    view["devices"] = [{**d.view(), "over_bytes": d.over_bytes} for d in plan.devices]
    return {**view, "env": dict(plan.env)}


def plan_on_node(remote, model: str, flags: list[str], **options) -> dict:
    """The plan's JSON made by the node (``POST /api/v1/fit``): its index or a GGUF path
    of the node's, its build's flags, its devices (or ``devices``), what its instances
    hold. ``options``: devices, margin_mib, binary, build (None: the node's default)."""
    body = {"model": model, "flags": flags, **{k: v for k, v in options.items() if v is not None}}
    return remote.request("POST", "/api/v1/fit", body, timeout=120)


@click.command(
    context_settings={
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
        "help_option_names": ["--help"],
    }
)
@click.option(
    "--devices",
    metavar="SPEC",
    help="Simulate devices: 12GiB,8GiB | 4x8GiB | none (CPU only); "
    "host=64GiB sets the RAM. Default: the GPUs detected now.",
)
@click.option(
    "--margin",
    type=float,
    metavar="MiB",
    help="Memory kept free on each device (default 1024, or --fit-target).",
)
@click.option("--binary", help="llama-server whose flags to validate against.")
@click.option("--build", type=int, help="Registered build id.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.argument("model")
@click.argument("llama_flags", nargs=-1, type=click.UNPROCESSED)
def fit(devices, margin, binary, build, as_json, model, llama_flags) -> None:
    """Plan the memory of a launch: which GPUs, -ngl, -ts, context and KV cache fit.

    MODEL is a GGUF path or a model of the index; the llama-server flags are those you
    would give `corral run`. Flags you set (-ngl, -ts, --device, -c, -ctk, -ctv, -fa,
    --n-cpu-moe) are kept as given; the rest is chosen to fit free memory minus a
    margin on every device. Nothing is started and no daemon is needed.

    With --node NAME the node makes the plan: MODEL is a model of its index or a GGUF
    path there, and its devices, its build and what its instances hold count.

    \b
    Examples:
      corral fit qwen3-14b                     on the GPUs of this machine
      corral fit model.gguf -c 32768           this context: KV type and layers to fit it
      corral fit model.gguf --devices 12GiB,8GiB --json
      corral fit model.gguf --devices none     CPU only
      corral fit qwen3-14b --node gpu-box      on that node's GPUs
    """
    own, flags = _split_args(llama_flags)
    devices = own.get("--devices", devices)
    binary = own.get("--binary", binary)
    as_json = bool(own.get("--json", as_json))
    try:
        margin = float(own["--margin"]) if "--margin" in own else margin
        build = int(own["--build"]) if "--build" in own else build
    except ValueError:
        raise UsageError("--margin and --build need a number") from None
    if margin is not None and not 0 <= margin <= 2**30:
        raise UsageError("--margin is MiB from 0 up")
    if model.startswith("-"):
        raise UsageError("give MODEL first (a GGUF path or a model of the index)")
    remote = node_client()
    if remote is not None:
        view = plan_on_node(
            remote, model, flags, devices=devices, margin_mib=margin, binary=binary, build=build
        )
        print_json(view) if as_json else click.echo(render(view))
        return
    plan, _ = plan_local(
        local_model(model) or model,
        flags,
        devices=devices,
        margin_mib=margin,
        binary=binary,
        build=build,
    )
    print_json(plan.view()) if as_json else click.echo(render(_shown(plan)))


COMMANDS = [fit]
