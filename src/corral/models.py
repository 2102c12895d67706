"""The local model index: import GGUF files in place, register downloads, resolve names.

A model is one GGUF file or one split GGUF (``X-00001-of-00003.gguf`` ... all parts in
order), optionally paired with a vision projector (``mmproj-*.gguf``) from the same
directory. Records live in the ``models`` table (:mod:`corral.store.models`).

Decisions (the issue is silent here):

* **Import in place.** ``corral import`` never copies or moves a file; the record points
  at the path given (made absolute, symlinks *not* resolved, so a HuggingFace cache
  snapshot path stays the snapshot path). Such models are ``owned=False`` and
  ``corral rm`` never deletes their files.
* **No hashing of local files.** ``sha256`` stays ``None`` for imported files: hashing a
  multi-gigabyte GGUF takes tens of seconds and the file is the user's, not ours to
  verify. Downloads record the hash the hub gave.
* **Names.** The short name is the file name without ``.gguf`` and without the split
  suffix, lower-cased, characters outside ``[a-z0-9._-]`` turned into ``-`` (at most 64);
  ``-2``, ``-3`` ... when taken. The id of an import is ``local/<name>``.
* **Idempotent import.** Importing a path that is already indexed (same absolute path or
  same real file behind it, or any part of an indexed split model) returns the existing
  record unchanged.
* **mmproj pairing.** ``mmproj*.gguf`` files (or files whose architecture is ``clip``) are
  never models. A model gets the mmproj of its directory; with several, the one sharing
  the longest name prefix with the model wins, then the first in name order.
* **Directory imports** skip non-``.gguf`` files and mmproj files silently, and skip a
  broken GGUF or an incomplete split with a reason (collected in ``problems``) rather than
  failing the whole directory. A single file given explicitly fails loudly.
* **Removal** deletes files only for ``owned`` models, only inside ``models_dir`` (an owned
  path outside it makes ``remove`` refuse, before anything changes), and never a file
  another model still references (a shared mmproj). Empty directories left behind
  inside ``models_dir`` are pruned.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from corral import gguf
from corral.errors import Conflict, CorralError, InvalidModelFile, NotFound, UsageError
from corral.store import models as table
from corral.store.db import Store
from corral.store.models import ModelRecord
from corral.types import is_inside, is_mmproj, name_from, unique_name

__all__ = [
    "ModelRecord",
    "import_path",
    "is_mmproj",
    "model_view",
    "register_download",
    "register_local",
    "remove",
    "resolve",
    "split_info",
]

SPLIT_RE = re.compile(r"(?P<base>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf", re.IGNORECASE)
_HF_REPO_DIR = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>.+)")


# -- helpers ---------------------------------------------------------------------------


def split_info(filename: str) -> tuple[str, int, int] | None:
    """``("X", 2, 3)`` for ``X-00002-of-00003.gguf``; None for an unsplit name."""
    m = SPLIT_RE.fullmatch(filename)
    if not m:
        return None
    index, count = int(m.group("index")), int(m.group("count"))
    if count < 1 or not 1 <= index <= count:
        return None
    return m.group("base"), index, count


def split_part_name(base: str, index: int, count: int) -> str:
    return f"{base}-{index:05d}-of-{count:05d}.gguf"


def _abs(path: str | os.PathLike[str]) -> str:
    """Absolute, normalised, symlinks kept (HF cache snapshot paths stay as they are)."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _real(path: str) -> str:
    try:
        return os.path.realpath(path)
    except OSError:  # pragma: no cover - realpath rarely fails
        return path


def base_name(filename: str) -> str:
    """The model part of a file name: no directory, no split suffix, no ``.gguf``."""
    filename = os.path.basename(filename)
    split = split_info(filename)
    if split:
        return split[0]
    if filename.lower().endswith(".gguf"):
        return filename[: -len(".gguf")]
    return filename


def slug(text: str) -> str:
    """A short model name from free text: lower-case ``[a-z0-9._-]``, at most 64 chars."""
    return name_from(text.lower(), "model")


def _taken_names(store: Store) -> set[str]:
    taken: set[str] = set()
    for rec in table.list_all(store):
        taken.add(rec.name)
        taken.update(rec.aliases)
    return taken


def _metadata(info: gguf.GGUFInfo) -> dict:
    return {
        "architecture": info.architecture,
        "name": info.name,
        "size_label": info.size_label,
        "parameter_count": info.parameter_count,
        "quantization": info.quantization,
        "file_type": info.file_type,
        "context_length": info.context_length,
        "block_count": info.block_count,
        "embedding_length": info.embedding_length,
        "head_count": info.head_count,
        "head_count_kv": info.head_count_kv,
        "has_chat_template": info.has_chat_template,
        "gguf_version": info.version,
        "tensor_count": info.tensor_count,
    }


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError as exc:
        raise InvalidModelFile(f"{path}: cannot stat: {exc.strerror or exc}") from None


def _parts_of(path: str) -> list[str]:
    """Every part of the model ``path`` belongs to, in order (just ``[path]`` unsplit)."""
    directory, filename = os.path.split(path)
    split = split_info(filename)
    if not split:
        return [path]
    base, _, count = split
    parts = [os.path.join(directory, split_part_name(base, i, count)) for i in range(1, count + 1)]
    for part in parts:
        if not os.path.isfile(part):
            raise InvalidModelFile(
                f"{part}: split part {parts.index(part) + 1} of {count} is missing"
                f" (model {split_part_name(base, 1, count)})"
            )
    return parts


def _pair_mmproj(model_path: str) -> str | None:
    directory = os.path.dirname(model_path)
    try:
        candidates = sorted(
            e
            for e in os.listdir(directory)
            if is_mmproj(e) and os.path.isfile(os.path.join(directory, e))
        )
    except OSError:
        return None
    if not candidates:
        return None
    stem = base_name(model_path).lower()

    def shared(name: str) -> int:
        rest = name.lower()[len("mmproj") :].lstrip("-_.")
        return len(os.path.commonprefix([rest, stem]))

    best = max(candidates, key=lambda c: (shared(c), -candidates.index(c)))
    return os.path.join(directory, best)


def hf_cache_info(path: str) -> tuple[str, str, str] | None:
    """``(repo, revision, filename)`` for a path inside a HuggingFace cache snapshot.

    The layout is ``.../models--org--name/snapshots/<revision>/<filename...>``.
    """
    parts = Path(path).parts
    for i in range(len(parts) - 3):
        m = _HF_REPO_DIR.fullmatch(parts[i])
        if m and parts[i + 1] == "snapshots":
            repo = f"{m.group('org')}/{m.group('name')}"
            return repo, parts[i + 2], "/".join(parts[i + 3 :])
    return None


def _existing_for(store: Store, paths: list[str]) -> ModelRecord | None:
    """The indexed model already pointing at any of ``paths`` (by path or real file)."""
    wanted = set(paths)
    wanted_real = {_real(p) for p in paths}
    for rec in table.list_all(store):
        for f in rec.files:
            if f["path"] in wanted or _real(f["path"]) in wanted_real:
                return rec
    return None


def _insert_unique(
    store: Store, rec: ModelRecord, wanted: str, *, id_prefix: str | None
) -> ModelRecord:
    """Insert with the first free name (and ``id_prefix + name`` as id when given).

    Retries when another writer took the name between the check and the insert.
    """
    for _ in range(20):
        taken = _taken_names(store)
        if id_prefix is not None:
            ids = {r.id for r in table.list_all(store)}
            taken |= {i[len(id_prefix) :] for i in ids if i.startswith(id_prefix)}
        rec.name = unique_name(wanted, taken)
        if id_prefix is not None:
            rec.id = id_prefix + rec.name
        try:
            return table.insert(store, rec)
        except Conflict:
            if id_prefix is None and table.find(store, rec.id) is not None:
                raise
    raise Conflict(f"could not find a free name for model {wanted!r}")


# -- registration ----------------------------------------------------------------------


def register_local(
    store: Store, path: str | os.PathLike[str], *, name: str | None = None
) -> ModelRecord:
    """Index a GGUF file in place (``owned=False``); return its record.

    ``path`` may be any part of a split model: the whole model (every part, in order) is
    registered, and a missing part is an :class:`InvalidModelFile` naming it. A file
    inside a HuggingFace cache snapshot records the repo and revision. ``sha256`` is left
    ``None``: hashing gigabytes of a file the user owns is slow and not needed to run it.
    Importing an indexed path again returns the existing record.
    """
    apath = _abs(path)
    if os.path.isdir(apath):
        raise InvalidModelFile(f"{apath}: is a directory (use import_path for directories)")
    if not os.path.exists(apath):
        raise InvalidModelFile(f"{apath}: no such file")
    if not os.path.isfile(apath):  # a FIFO or device would block or never end
        raise InvalidModelFile(f"{apath}: not a regular file")
    if is_mmproj(apath):
        raise InvalidModelFile(f"{apath}: is a vision projector (mmproj), not a model")
    parts = _parts_of(apath)
    existing = _existing_for(store, parts)
    if existing is not None:
        return existing
    infos = [gguf.read_metadata(p) for p in parts]
    first = infos[0]
    if first.architecture == "clip":
        raise InvalidModelFile(f"{apath}: is a vision projector (clip), not a model")
    files = [{"path": p, "size": _file_size(p), "sha256": None} for p in parts]
    hf = hf_cache_info(parts[0])
    wanted = slug(name) if name else slug(base_name(parts[0]))
    if name and wanted in _taken_names(store):
        raise Conflict(f"a model named {wanted!r} already exists")
    rec = ModelRecord(
        id="",
        name=wanted,
        files=files,
        size=sum(f["size"] for f in files),
        source="local",
        mmproj=_pair_mmproj(parts[0]),
        repo=hf[0] if hf else None,
        revision=hf[1] if hf else None,
        filename=hf[2] if hf else os.path.basename(parts[0]),
        owned=False,
        metadata=_metadata(first),
    )
    return _insert_unique(store, rec, wanted, id_prefix="local/")


def import_path(
    store: Store,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    problems: list[str] | None = None,
) -> list[ModelRecord]:
    """Index a GGUF file, or every GGUF model under a directory (recursively), in place.

    Non-``.gguf`` files and mmproj files are skipped; in a directory, a broken GGUF or an
    incomplete split model is skipped too and its reason appended to ``problems`` (when
    given). A HuggingFace cache (``models--org--name/snapshots/<sha>/...``) is understood:
    the snapshot paths are used as they are, with repo and revision recorded.
    ``name`` applies to a single file only. Returns the records (existing ones included).
    """
    apath = _abs(path)
    if not os.path.exists(apath):
        raise NotFound(f"{apath}: no such file or directory")
    if not os.path.isdir(apath):
        return [register_local(store, apath, name=name)]
    if name:
        raise UsageError("--name applies to a single file, not a directory")
    found: list[str] = []
    for root, dirs, files in os.walk(apath, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in ("blobs", ".git"))
        for f in sorted(files):
            if not f.lower().endswith(".gguf") or is_mmproj(f):
                continue
            full = os.path.join(root, f)
            if not os.path.isfile(full):  # dangling symlink (partial HF download)
                if problems is not None:
                    problems.append(f"{full}: dangling link, skipped")
                continue
            found.append(full)
    records: list[ModelRecord] = []
    seen_groups: set[str] = set()
    for full in found:
        split = split_info(os.path.basename(full))
        if split:
            group = os.path.join(os.path.dirname(full), f"{split[0]}|{split[2]}")
            if group in seen_groups:
                continue
            seen_groups.add(group)
        try:
            rec = register_local(store, full)
        except InvalidModelFile as exc:
            if problems is not None:
                problems.append(exc.message)
            continue
        if all(r.id != rec.id for r in records):
            records.append(rec)
    return records


def register_download(
    store: Store,
    *,
    repo: str,
    revision: str | None,
    filename: str,
    files: list[dict],
    mmproj: str | None = None,
    quant: str | None = None,
) -> ModelRecord:
    """Index a model the puller downloaded into ``models_dir`` (``source='hub'``, owned).

    ``files`` are the parts in order, ``{"path", "size"?, "sha256"?}``. The id is
    ``org/repo:QUANT`` (or ``org/repo/filename`` without a quant); the name is the repo's
    name part lower-cased, with ``-<quant>`` added only when that name is taken. A second
    download of the same id updates the record (new revision, files, metadata).
    """
    if not files:
        raise UsageError("register_download needs at least one file")
    parts = []
    for f in files:
        p = _abs(f["path"])
        size = f.get("size")
        parts.append(
            {
                "path": p,
                "size": int(size) if size is not None else _file_size(p),
                "sha256": f.get("sha256"),
            }
        )
    info = gguf.read_metadata(parts[0]["path"])
    model_id = f"{repo}:{quant}" if quant else f"{repo}/{filename}"
    fields = dict(
        files=parts,
        size=sum(p["size"] for p in parts),
        mmproj=_abs(mmproj) if mmproj else None,
        repo=repo,
        revision=revision,
        filename=filename,
        owned=True,
        source="hub",
        metadata=_metadata(info),
    )
    existing = table.find(store, model_id)
    if existing is not None:
        table.update(store, model_id, **fields)
        return table.get(store, model_id)
    taken = _taken_names(store)
    wanted = slug(repo.rsplit("/", 1)[-1])
    if wanted in taken and quant:
        wanted = slug(f"{wanted}-{quant}")
    rec = ModelRecord(id=model_id, name=wanted, **fields)
    return _insert_unique(store, rec, wanted, id_prefix=None)


# -- lookup ----------------------------------------------------------------------------


def resolve(store: Store, text: str, *, prefix: bool = True) -> ModelRecord:
    """The model ``text`` names: exact id, then name, then alias (each first exactly,
    then ignoring case), then (with ``prefix``) a unique prefix of a name or id.

    Ambiguous prefixes are a :class:`UsageError` listing the candidates; nothing found is
    :class:`NotFound`. A path to a ``.gguf`` file is not handled here (the caller does).
    """
    text = text.strip()
    if not text:
        raise UsageError("a model name is required")
    recs = table.list_all(store)
    low = text.lower()
    for key in (lambda r: [r.id], lambda r: [r.name], lambda r: r.aliases):
        for exact in (True, False):
            hits = [
                r for r in recs if any((k == text) if exact else (k.lower() == low) for k in key(r))
            ]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise _ambiguous(text, hits)
    hits = [
        r
        for r in recs
        if prefix and (r.name.lower().startswith(low) or r.id.lower().startswith(low))
    ]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise _ambiguous(text, hits)
    raise NotFound(f"no model {text!r} (see `corral ls`)")


def _ambiguous(text: str, hits: list[ModelRecord]) -> UsageError:
    return UsageError(f"{text!r} is ambiguous: {', '.join(sorted(r.name for r in hits))}")


# -- removal ---------------------------------------------------------------------------


def instances_using(store: Store, paths: list[str]) -> list[str]:
    """Names of the instances that run, or are meant to run, with one of ``paths``.

    An instance uses a file when it is its model or any argument of its command line
    (``--mmproj``, ``--model-draft``, ``--lora``...), compared by real path. Only
    running or desired-running instances count: a stopped one reads nothing.
    """
    from corral.store import instances as instances_table
    from corral.supervisor.states import ACTIVE

    wanted = {_real(p) for p in paths}
    users = []
    for inst in instances_table.list_all(store):
        if inst.desired != "running" and inst.state not in ACTIVE:
            continue
        used = [inst.model, *(a for a in inst.argv if os.sep in a)]
        if any(_real(p) in wanted for p in used):
            users.append(inst.name)
    return users


def remove(
    store: Store, id_or_name: str, *, delete_files: bool, models_dir: Path, force: bool = False
) -> dict:
    """Forget a model; with ``delete_files``, delete its files if corral downloaded them.

    ``id_or_name`` must name the model exactly (id, name or alias; case aside): no
    prefix matching for a destructive operation.

    Files are deleted only for ``owned`` models, only inside ``models_dir`` (an owned path
    outside it is refused with a :class:`UsageError` before anything changes), and never
    while another model still references them. Deleting files a running (or
    desired-running) instance uses is a :class:`Conflict` naming the instances unless
    ``force``; forgetting the model with its files kept is always allowed (nothing the
    process reads goes away). Returns ``{"model": view, "deleted": [paths], "kept":
    [paths]}``.
    """
    rec = resolve(store, id_or_name, prefix=False)
    paths = rec.paths + ([rec.mmproj] if rec.mmproj else [])
    deleted: list[str] = []
    kept: list[str] = []
    if delete_files and rec.owned:
        root = Path(os.path.realpath(models_dir))
        outside = [p for p in paths if not is_inside(root, p)]
        if outside:
            raise UsageError(
                f"refusing to delete {outside[0]}: it is outside the models directory {root}"
                " (remove the model with its files kept)"
            )
        users = [] if force else instances_using(store, paths)
        if users:
            raise Conflict(
                f"the files of model {rec.name} are used by instance(s) {', '.join(users)}: "
                "stop them first, keep the files, or force the removal"
            )
        others = set()
        for other in table.list_all(store):
            if other.id != rec.id:
                others.update(_real(p) for p in other.paths)
                if other.mmproj:
                    others.add(_real(other.mmproj))
        for p in paths:
            if _real(p) in others:
                kept.append(p)
                continue
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise CorralError(f"cannot delete {p}: {exc.strerror or exc}") from None
            deleted.append(p)
        _prune_empty_dirs({os.path.dirname(p) for p in deleted}, root)
    else:
        kept = paths
    table.delete(store, rec.id)
    return {"model": model_view(rec), "deleted": deleted, "kept": kept}


def _prune_empty_dirs(dirs: set[str], root: Path) -> None:
    for d in sorted(dirs, key=len, reverse=True):
        cur = Path(os.path.realpath(d))
        while cur != root and is_inside(root, cur):
            try:
                cur.rmdir()
            except OSError:
                break
            cur = cur.parent


# -- views -----------------------------------------------------------------------------


def quant_of(rec: ModelRecord) -> str | None:
    """The quantization from the header, else from the file name."""
    return rec.metadata.get("quantization") or gguf.quant_from_filename(
        rec.filename or os.path.basename(rec.path)
    )


def model_view(rec: ModelRecord) -> dict:
    """The public shape of a model (API and ``--json``)."""
    meta = rec.metadata
    return {
        "id": rec.id,
        "name": rec.name,
        "aliases": rec.aliases,
        "path": rec.path,
        "files": rec.files,
        "mmproj": rec.mmproj,
        "size": rec.size,
        "source": rec.source,
        "repo": rec.repo,
        "revision": rec.revision,
        "filename": rec.filename,
        "owned": rec.owned,
        "quantization": quant_of(rec),
        "architecture": meta.get("architecture"),
        "size_label": meta.get("size_label"),
        "parameter_count": meta.get("parameter_count"),
        "context_length": meta.get("context_length"),
        "added_at": rec.added_at,
        "metadata": meta,
    }
