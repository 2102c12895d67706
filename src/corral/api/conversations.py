"""/api/v1/conversations: chats of the web UI, kept by the daemon.

The daemon only stores conversations; the browser streams replies from
``/v1/chat/completions`` itself and saves the result with PATCH. Limits keep one
conversation well under a few megabytes of JSON.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from corral.api.deps import Daemon, get_daemon
from corral.store import conversations as table

router = APIRouter(prefix="/api/v1/conversations", tags=["conversations"])

MAX_MESSAGES = 500
MAX_CONTENT = 100_000


class Message(BaseModel):
    """One turn. ``tokens_per_second`` and ``stopped`` describe an assistant reply."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_CONTENT)
    tokens_per_second: float | None = Field(default=None, ge=0)
    stopped: bool = False


class Params(BaseModel):
    """Sampling settings sent with every request of the conversation."""

    model_config = ConfigDict(extra="forbid")
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    top_p: float | None = Field(default=None, ge=0, le=1)


class ConversationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(default="", max_length=200)
    model: str | None = Field(default=None, max_length=512)
    system: str = Field(default="", max_length=MAX_CONTENT)
    params: Params = Field(default_factory=Params)
    messages: list[Message] = Field(default_factory=list, max_length=MAX_MESSAGES)


class ConversationPatch(BaseModel):
    """Only the fields sent change (rename = ``{"title": ...}``)."""

    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=512)
    system: str | None = Field(default=None, max_length=MAX_CONTENT)
    params: Params | None = None
    messages: list[Message] | None = Field(default=None, max_length=MAX_MESSAGES)


def _plain(req: BaseModel, *, only_set: bool) -> dict:
    data = req.model_dump(exclude_unset=only_set)
    if data.get("params") is not None:
        data["params"] = {k: v for k, v in data["params"].items() if v is not None}
    if data.get("messages") is not None:
        data["messages"] = [
            {k: v for k, v in m.items() if v is not None and v is not False}
            for m in data["messages"]
        ]
    return data


@router.get("")
async def list_conversations(d: Daemon = Depends(get_daemon)) -> list[dict]:
    """Every conversation without its messages, most recently updated first."""
    return [c.summary() for c in await asyncio.to_thread(table.list_all, d.store)]


@router.post("", status_code=201)
async def create_conversation(req: ConversationIn, d: Daemon = Depends(get_daemon)) -> dict:
    conv = await asyncio.to_thread(lambda: table.create(d.store, **_plain(req, only_set=False)))
    return conv.to_dict()


@router.get("/{conv_id}")
async def get_conversation(conv_id: str, d: Daemon = Depends(get_daemon)) -> dict:
    return (await asyncio.to_thread(table.get, d.store, conv_id)).to_dict()


@router.patch("/{conv_id}")
async def patch_conversation(
    conv_id: str, req: ConversationPatch, d: Daemon = Depends(get_daemon)
) -> dict:
    changes = _plain(req, only_set=True)
    # null means "leave as is" for everything but the model, where it clears the choice
    changes = {k: v for k, v in changes.items() if v is not None or k == "model"}
    conv = await asyncio.to_thread(lambda: table.update(d.store, conv_id, **changes))
    return conv.to_dict()


@router.delete("/{conv_id}")
async def delete_conversation(conv_id: str, d: Daemon = Depends(get_daemon)) -> dict:
    await asyncio.to_thread(table.delete, d.store, conv_id)
    return {"deleted": conv_id}
