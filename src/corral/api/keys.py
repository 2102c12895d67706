"""/api/v1/keys: list, create and revoke API keys (admin only: see corral.api.security).

Listings carry neither secrets nor hashes; a new key's secret is in the creation answer
and nowhere else.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from corral import keys
from corral.api.deps import Daemon, get_daemon
from corral.types import KEY_NAME_MAX, KEY_SCOPES

router = APIRouter(prefix="/api/v1/keys", tags=["keys"])


class KeyRequest(BaseModel):
    """A new key: ``admin`` may call everything, ``inference`` only the inference paths
    (``/v1/*``, llama-server's routed paths, the Ollama API's reading and inference)."""

    name: str = Field(min_length=1, max_length=KEY_NAME_MAX)
    scope: Literal[KEY_SCOPES] = "admin"  # type: ignore[valid-type]


@router.get("")
def list_keys(d: Daemon = Depends(get_daemon)) -> list[dict]:
    return [k.to_dict() for k in keys.list_keys(d.store)]


@router.post("", status_code=201)
def create_key(req: KeyRequest, d: Daemon = Depends(get_daemon)) -> dict:
    """Create a key; the answer's ``secret`` is shown this once."""
    key, secret = keys.create_key(d.store, req.name, req.scope)
    return {**key.to_dict(), "secret": secret}


@router.delete("/{key_id}")
def revoke_key(key_id: str, d: Daemon = Depends(get_daemon)) -> dict:
    """Revoke a key; it stays listed, with ``revoked_at``."""
    return keys.revoke_key(d.store, key_id).to_dict()
