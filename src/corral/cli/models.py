"""corral ls | show | rm | import — the local model index.

These read and write the store directly (no daemon needed; the store is WAL-mode
SQLite, so the CLI and a running daemon may both write). With ``--node NAME`` they call
that node's REST API instead, relayed by the daemon (its index, its files).
"""

from __future__ import annotations

import click

from corral.cli.common import node_client, print_json, settings, table
from corral.cli.terminal import printable


def _store():
    from corral.store.db import Store

    s = settings()
    s.ensure_dirs()
    return s, Store(s.db_path)


def human_size(n: int | None) -> str:
    """``253.0 MB``-style sizes (decimal units, like HuggingFace shows them)."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def _params(view: dict) -> str:
    if view.get("size_label"):
        return view["size_label"]
    count = view.get("parameter_count")
    if not count:
        return "-"
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= div:
            return f"{count / div:.3g}{unit}"
    return str(count)


@click.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(as_json: bool) -> None:
    """List the models corral knows (downloaded and imported)."""
    views = _views()
    if as_json:
        print_json(views)
        return
    if not views:
        click.echo("no models (corral import PATH, or corral pull REPO)", err=True)
        return
    rows = [
        [
            printable(c)
            for c in (
                v["name"],
                v["quantization"] or "-",
                _params(v),
                v["architecture"] or "-",
                human_size(v["size"]),
                v["source"],
            )
        ]
        for v in views
    ]
    click.echo(table(rows, ["NAME", "QUANT", "PARAMS", "ARCH", "SIZE", "SOURCE"]))


def _views() -> list[dict]:
    remote = node_client()
    if remote is not None:
        return remote.request("GET", "/api/v1/models")
    from corral.models import model_view
    from corral.store import models as table_

    _, store = _store()
    try:
        return [model_view(r) for r in table_.list_all(store)]
    finally:
        store.close()


def _view(model: str) -> dict:
    remote = node_client()
    if remote is not None:
        from urllib.parse import quote

        return remote.request("GET", f"/api/v1/models/{quote(model, safe='')}")
    from corral.models import model_view, resolve

    _, store = _store()
    try:
        return model_view(resolve(store, model))
    finally:
        store.close()


@click.command("show")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(model: str, as_json: bool) -> None:
    """Show a model's files and GGUF metadata.

    Control characters in GGUF strings (a hostile file's terminal escapes) are shown
    escaped (``\\x1b``); ``--json`` gives them JSON-escaped.
    """
    view = _view(model)
    if as_json:
        print_json(view)
        return
    lines = [("name", view["name"]), ("id", view["id"])]
    if view["aliases"]:
        lines.append(("aliases", ", ".join(view["aliases"])))
    lines += [
        ("source", view["source"] + (" (files owned by corral)" if view["owned"] else "")),
        ("size", f"{human_size(view['size'])} ({view['size']} bytes)"),
    ]
    for key in ("repo", "revision", "filename"):
        if view[key]:
            lines.append((key, view[key]))
    for i, f in enumerate(view["files"]):
        label = "path" if len(view["files"]) == 1 else f"part {i + 1}"
        lines.append((label, f["path"]))
    if view["mmproj"]:
        lines.append(("mmproj", view["mmproj"]))
    lines.append(("quantization", view["quantization"] or "-"))
    for key, value in view["metadata"].items():
        if key != "quantization":  # shown above, with the file-name fallback
            label = "general.name" if key == "name" else key
            lines.append((label, "-" if value is None else value))
    lines = [(printable(k), printable(v)) for k, v in lines]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        click.echo(f"{key.ljust(width)}  {value}")


@click.command("rm")
@click.argument("models", nargs=-1, required=True)
@click.option("--keep-files", is_flag=True, help="Forget the model but keep downloaded files.")
@click.option(
    "--force", is_flag=True, help="Delete the files even while a running instance uses them."
)
def rm(models: tuple[str, ...], keep_files: bool, force: bool) -> None:
    """Remove models from the index.

    Files corral downloaded are deleted too (unless --keep-files); files you imported
    are never deleted. Files a running (or restarting) instance uses are not deleted
    unless --force: stop the instance first.
    """
    from corral.errors import Conflict

    remover = _remover(keep_files, force)
    try:
        for model in models:
            try:
                result = remover(model)
            except Conflict as exc:
                raise Conflict(f"{exc.message} (--keep-files or --force)") from None
            _say_removed(result, keep_files)
    finally:
        remover.close()


class _remover:  # noqa: N801 - used as a function with a close()
    """Removes one model: from this store, or (``--node``) through the node's API."""

    def __init__(self, keep_files: bool, force: bool) -> None:
        self.keep_files, self.force = keep_files, force
        self.remote = node_client()
        self.store = None
        if self.remote is None:
            self.settings, self.store = _store()

    def __call__(self, model: str) -> dict:
        if self.remote is not None:
            from urllib.parse import quote

            params = {"keep_files": str(self.keep_files).lower(), "force": str(self.force).lower()}
            path = f"/api/v1/models/{quote(model, safe='')}"
            return self.remote.request("DELETE", path, params=params)
        from corral.models import remove

        return remove(
            self.store,
            model,
            delete_files=not self.keep_files,
            models_dir=self.settings.models_dir,
            force=self.force,
        )

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _say_removed(result: dict, keep_files: bool) -> None:
    name = printable(result["model"]["name"])
    if result["deleted"]:
        click.echo(f"removed {name}; deleted {len(result['deleted'])} file(s):")
        for p in result["deleted"]:
            click.echo(f"  {printable(p)}")
        for p in result["kept"]:
            click.echo(f"  kept {printable(p)} (used by another model)")
        return
    why = (
        "imported files are never deleted"
        if not result["model"]["owned"]
        else "--keep-files"
        if keep_files
        else "still used by another model"
    )
    click.echo(f"removed {name}; files kept ({why})")


@click.command("import")
@click.argument("path", type=click.Path())
@click.option("--name", help="Short name for the model (a single file only).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def import_(path: str, name: str | None, as_json: bool) -> None:
    """Index GGUF models in place: a file, a directory (recursive) or a HuggingFace cache.

    Nothing is copied; `corral rm` never deletes imported files.
    """
    views, problems = _imported(path, name)
    for problem in problems:
        click.echo(f"skipped: {printable(problem)}", err=True)
    if as_json:
        print_json(views)
        return
    if not views:
        click.echo(f"no GGUF models found in {printable(path)}", err=True)
        return
    for v in views:
        extra = f", {len(v['files'])} parts" if len(v["files"]) > 1 else ""
        extra += ", +mmproj" if v["mmproj"] else ""
        click.echo(
            printable(
                f"{v['name']}  ({v['quantization'] or '?'}, {human_size(v['size'])}{extra})  "
                f"{v['path']}"
            )
        )


def _imported(path: str, name: str | None) -> tuple[list[dict], list[str]]:
    """(the models indexed, the files skipped): here, or (``--node``) on the node, where
    ``path`` is a path of the node's."""
    remote = node_client()
    if remote is not None:
        body = {"path": path, "name": name} if name else {"path": path}
        answer = remote.request("POST", "/api/v1/models/import", body, timeout=None)
        return answer["models"], answer["skipped"]
    from corral.models import import_path, model_view

    _, store = _store()
    problems: list[str] = []
    try:
        recs = import_path(store, path, name=name, problems=problems)
    finally:
        store.close()
    return [model_view(r) for r in recs], problems


COMMANDS = [ls, show, rm, import_]
