"""/api/v1/rpc: this machine's llama.cpp rpc-servers (admin only: see corral.api.security).

``GET`` lists them, ``POST`` starts one (waits until it listens unless ``wait`` is
false; 400 for a refused address such as ``0.0.0.0`` without ``insecure``, 409 for a
taken port or name, 424 when the build has no rpc-server, 502 when it exits before it
listens), ``DELETE /{name}`` stops and forgets one, ``/{name}/logs`` is its log (an SSE
stream with ``follow=true``). A controller reaches a node's through the node relay
(``/api/v1/nodes/NAME/api/v1/rpc``), which is how ``corral rpc --node`` and
``corral run --rpc NODE`` work.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from corral.api.log_stream import log_answer
from corral.supervisor.rpc import RpcSupervisor
from corral.types import NAME_MAX, Port, Restart

router = APIRouter(prefix="/api/v1/rpc", tags=["rpc"])


class RpcRequest(BaseModel):
    """Start an rpc-server bound to ``host`` (an IPv4 address of this machine)."""

    name: str | None = Field(default=None, max_length=NAME_MAX)
    host: str = Field(default="127.0.0.1", max_length=64, examples=["10.0.0.2"])
    port: Port | None = Field(default=None, description="default: the first free from 50052")
    devices: list[str] = Field(default_factory=list, max_length=64, examples=[["CUDA0"]])
    threads: int | None = Field(default=None, ge=1, le=4096)
    cache: bool = Field(default=True, description="-c: tensors cached under CORRAL_HOME")
    insecure: bool = Field(default=False, description="allow 0.0.0.0 (no authentication!)")
    binary: str | None = Field(default=None, max_length=4096)
    build: int | None = Field(default=None, ge=1)
    restart: Restart | None = None
    wait: bool = True


async def get_rpc(request: Request) -> RpcSupervisor:
    # async: a plain def would be run in the thread pool on every request
    return request.app.state.rpc


@router.get("")
async def list_rpc(rpc: RpcSupervisor = Depends(get_rpc)) -> list[dict]:
    """Every rpc-server of this machine: name, state, pid, endpoint, devices, restarts."""
    return [r.to_dict() for r in rpc.list()]


@router.post("", status_code=201)
async def start_rpc(req: RpcRequest, rpc: RpcSupervisor = Depends(get_rpc)) -> dict:
    """Start an rpc-server (supervised: restarted on a crash, re-adopted by the next daemon)."""
    rec = await rpc.launch(**req.model_dump())
    return rec.to_dict()


@router.get("/{name}")
async def get_one(name: str, rpc: RpcSupervisor = Depends(get_rpc)) -> dict:
    return rpc.get(name).to_dict()


@router.delete("/{name}")
async def stop_rpc(name: str, rpc: RpcSupervisor = Depends(get_rpc)) -> dict:
    """Stop the server (SIGTERM, SIGKILL after stop_timeout) and forget it."""
    rec = rpc.get(name)
    await rpc.remove(name)
    return {"name": rec.name, "state": "stopped", "endpoint": rec.endpoint}


@router.get("/{name}/logs", response_model=None)
async def rpc_logs(
    name: str,
    tail: int = Query(100, ge=0, le=100_000),
    follow: bool = False,
    rpc: RpcSupervisor = Depends(get_rpc),
):
    """The last ``tail`` lines; with ``follow=true`` an SSE stream of new lines."""
    rec = rpc.get(name)
    return await log_answer(rec.name, rpc.log_path(rec.name), tail, follow)
