"""/api/v1/models: the local model index."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from corral import models as lib
from corral.api.deps import Daemon, get_daemon
from corral.store import models as table
from corral.types import NAME_MAX

router = APIRouter(prefix="/api/v1/models", tags=["models"])


class ImportRequest(BaseModel):
    path: str = Field(min_length=1, max_length=4096)
    name: str | None = Field(default=None, min_length=1, max_length=NAME_MAX)


@router.get("")
async def list_models(d: Daemon = Depends(get_daemon)) -> list[dict]:
    return [lib.model_view(r) for r in table.list_all(d.store)]


# Declared before the catch-all ``/{id:path}`` routes so "import" is never taken for an id.
@router.post("/import")
async def import_models(req: ImportRequest, d: Daemon = Depends(get_daemon)) -> dict:
    """Index a GGUF file or directory in place; returns the models and skipped files."""
    problems: list[str] = []
    recs = await asyncio.to_thread(
        lib.import_path, d.store, req.path, name=req.name, problems=problems
    )
    return {"models": [lib.model_view(r) for r in recs], "skipped": problems}


@router.get("/{model_id:path}")
async def get_model(model_id: str, d: Daemon = Depends(get_daemon)) -> dict:
    return lib.model_view(lib.resolve(d.store, model_id))


@router.delete("/{model_id:path}")
async def delete_model(
    model_id: str, keep_files: bool = False, force: bool = False, d: Daemon = Depends(get_daemon)
) -> dict:
    """Forget a model; files corral downloaded are deleted unless ``?keep_files=true``.

    Deleting files a running (or desired-running) instance uses is a 409 naming the
    instances, unless ``?force=true``."""
    return await asyncio.to_thread(
        lib.remove,
        d.store,
        model_id,
        delete_files=not keep_files,
        models_dir=d.settings.models_dir,
        force=force,
    )
