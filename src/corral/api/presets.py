"""/api/v1/presets: named flag sets (``*`` holds the defaults applied to every launch).

``PUT /api/v1/presets/{name}`` creates (201) or replaces (200) a preset and answers
``{"preset", "created", "warnings"}``: flags are checked against the flag catalog of
the preset's build (or the default binary); when no binary is installed the preset is
saved anyway and ``warnings`` says its flags were not checked.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from corral import models, presets as lib
from corral.api.deps import Daemon, get_daemon
from corral.builds.catalog import FlagCatalog
from corral.builds.resolve import MAX_BUILD_ID
from corral.errors import BinaryError, NotFound, UsageError
from corral.types import Restart

router = APIRouter(prefix="/api/v1/presets", tags=["presets"])

Format = Literal["yaml", "ini"]
#: Largest preset file accepted by import (characters).
MAX_FILE = 1_000_000


class PresetBody(BaseModel):
    """A preset's settings; every field may be left out (not set by this preset)."""

    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=lib.MAX_MODEL,
        description="model of the index (id, name, alias) or GGUF path",
    )
    build: int | None = Field(
        default=None, ge=1, le=MAX_BUILD_ID, description="registered build id"
    )
    flags: list[str] = Field(
        default_factory=list, max_length=lib.MAX_FLAGS, examples=[["-c", "8192", "-ngl", "99"]]
    )
    env: dict[str, str] = Field(
        default_factory=dict, max_length=lib.MAX_ENV, examples=[{"CUDA_VISIBLE_DEVICES": "0"}]
    )
    restart: Restart | None = None
    idle_ttl: float | None = Field(
        default=None, ge=0, le=10 * 365 * 86400, description="seconds unused before stop; 0 = never"
    )
    aliases: list[str] = Field(default_factory=list, max_length=lib.MAX_ALIASES)
    pinned: bool = False
    description: str = Field(default="", max_length=lib.MAX_DESCRIPTION)


class ExportRequest(BaseModel):
    names: list[str] = Field(
        default_factory=list, max_length=1000, description="presets to export (empty: all)"
    )
    format: Format = "yaml"


class ImportRequest(BaseModel):
    text: str = Field(max_length=MAX_FILE)
    format: Format = "yaml"
    replace: bool = Field(default=False, description="overwrite presets that exist")


async def _catalog(d: Daemon, build: int | None, warnings: list[str]) -> FlagCatalog | None:
    """The catalog flags are checked with; None (and a warning) when no binary runs."""
    try:
        return await d.supervisor.catalog(None, build)
    except (BinaryError, NotFound) as exc:
        warnings.append(f"flags not checked: {exc.message}")
        return None


async def _catalogs(d: Daemon, presets: list[lib.Preset], warnings: list[str]) -> dict:
    found: dict[int | None, FlagCatalog | None] = {}
    for build in {p.build for p in presets}:
        found[build] = await _catalog(d, build, warnings)
    return found


def _exists(d: Daemon, name: str) -> bool:
    try:
        lib.get(d.store, name)
    except NotFound:
        return False
    return True


async def _ini_catalog(d: Daemon) -> FlagCatalog:
    """INI keys are flag spellings: reading or writing them needs a build's catalog."""
    try:
        return await d.supervisor.catalog()
    except BinaryError as exc:
        raise BinaryError(f"INI presets need the flags of a llama-server build: {exc.message}")


def _selected(d: Daemon, names: list[str]) -> list[lib.Preset]:
    return [lib.get(d.store, n) for n in names] if names else lib.list_all(d.store)


async def _export(d: Daemon, presets: list[lib.Preset], fmt: str) -> dict:
    if fmt == "yaml":
        return {"format": fmt, "text": lib.to_yaml(presets), "warnings": []}
    catalog = await _ini_catalog(d)
    text, warnings = lib.to_ini(presets, catalog, model_path=lambda ref: _model_path(d, ref))
    return {"format": fmt, "text": text, "warnings": warnings}


def _model_path(d: Daemon, ref: str) -> str | None:
    """A model of the index as its file path (llama-server needs one); None for paths."""
    try:
        return models.resolve(d.store, ref, prefix=False).path
    except (NotFound, UsageError):
        return None


@router.get("")
async def list_presets(d: Daemon = Depends(get_daemon)) -> list[dict]:
    return [lib.preset_view(p) for p in lib.list_all(d.store)]


# Declared before the ``/{name}`` routes so "export" and "import" are never taken for names.
@router.post("/export")
async def export_presets(req: ExportRequest, d: Daemon = Depends(get_daemon)) -> dict:
    """The named presets (or all) as a YAML document or a llama.cpp ``--models-preset`` INI."""
    return await _export(d, _selected(d, req.names), req.format)


@router.post("/import")
async def import_presets(req: ImportRequest, d: Daemon = Depends(get_daemon)) -> dict:
    """Save every preset of a YAML or INI text, all or none. Existing names are a 409
    unless ``replace``."""
    warnings: list[str] = []
    if req.format == "yaml":
        parsed = lib.from_yaml(req.text)
    else:
        parsed, warnings = lib.from_ini(req.text, await _ini_catalog(d))
    catalogs = await _catalogs(d, parsed, warnings)
    saved = lib.save_many(d.store, parsed, catalog_for=catalogs.get, replace=req.replace)
    d.router.forget_routes()  # names and aliases may route elsewhere now
    return {"imported": [p.name for p in saved], "warnings": warnings}


@router.get("/{name}")
async def get_preset(name: str, d: Daemon = Depends(get_daemon)) -> dict:
    return lib.preset_view(lib.get(d.store, name))


@router.put("/{name}")
async def put_preset(
    name: str, body: PresetBody, response: Response, d: Daemon = Depends(get_daemon)
) -> dict:
    """Create (201) or replace (200) the preset ``name``."""
    preset = lib.Preset(name=name, **body.model_dump())
    warnings: list[str] = []
    catalog = await _catalog(d, preset.build, warnings)
    created = not _exists(d, name)
    lib.keep_secrets(preset, None if created else lib.get(d.store, name))
    saved = lib.save(d.store, preset, catalog)
    d.router.forget_routes()
    response.status_code = 201 if created else 200
    return {"preset": lib.preset_view(saved), "created": created, "warnings": warnings}


@router.delete("/{name}")
async def delete_preset(name: str, d: Daemon = Depends(get_daemon)) -> dict:
    lib.delete(d.store, name)
    d.router.forget_routes()
    return {"removed": name}


@router.get("/{name}/export")
async def export_preset(
    name: str, format: Format = "yaml", d: Daemon = Depends(get_daemon)
) -> dict:
    """One preset as YAML or INI (``?format=ini``)."""
    return await _export(d, [lib.get(d.store, name)], format)
