"""OpenAI-compatible router: ``/v1/*`` on the daemon, routed by the body's ``model``.

The model names an instance (its name), or a model of the index (id, name, alias,
unique prefix). A model with no running instance is started on demand, exactly once
however many requests arrive together; the requests wait for it to be ready. Bytes are
forwarded as they arrive (no re-parsing of the stream); a client that disconnects
closes the upstream connection, which makes llama-server stop generating; upstream
errors keep their status and body.

Not here yet (issue 5): presets, idle TTL and LRU eviction, usage counters, metrics.
"""

from __future__ import annotations

import asyncio
import json

import httpx

from corral.errors import CorralError, NotFound
from corral.store import instances as inst_table
from corral.supervisor.states import State
from corral.supervisor.supervisor import LaunchSpec, Supervisor

#: Headers not passed between client and upstream (hop-by-hop, or recomputed).
HOP_HEADERS = {"host", "connection", "keep-alive", "transfer-encoding", "content-length",
               "authorization", "te", "trailer", "upgrade", "proxy-authorization"}


def openai_error(status: int, message: str, typ: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": typ, "code": status}}


class Router:
    """Finds (or starts) the instance serving a model and proxies requests to it."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self._starting: dict[str, asyncio.Task] = {}
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0),
                                        limits=httpx.Limits(max_connections=1000,
                                                            max_keepalive_connections=100))

    async def close(self) -> None:
        await self.client.aclose()

    def _running_for(self, name_or_path: str):
        """A live instance named so, or serving that model file."""
        for rec in self.supervisor.list():
            if State(rec.state) in (State.READY, State.STARTING, State.UNHEALTHY) and \
                    rec.desired == "running" and name_or_path in (rec.name, rec.model):
                return rec
        return None

    async def instance_for(self, model: str):
        """The ready instance for ``model``, started on demand (once per model)."""
        rec = self._running_for(model)
        if rec is None:
            from corral import models

            try:
                entry = models.resolve(self.supervisor.store, model)
            except NotFound:
                raise NotFound(f"model {model!r} is not running and not in the index "
                               "(GET /v1/models lists what can be used)") from None
            rec = self._running_for(entry.path)
            if rec is None:
                task = self._starting.get(entry.path)
                if task is None or task.done():
                    task = asyncio.create_task(self._start(entry))
                    self._starting[entry.path] = task
                rec = await asyncio.shield(task)
        if State(rec.state) is not State.READY:
            rec = await self.supervisor.wait_ready(rec.name)
        return rec

    async def _start(self, entry):
        name = self._free_name(entry.name)
        # By id, so the supervisor resolves it again and adds the model's --mmproj.
        rec = await self.supervisor.launch(LaunchSpec(model=entry.id, name=name))
        return await self.supervisor.wait_ready(rec.name)

    def _free_name(self, base: str) -> str:
        taken = {r.name for r in self.supervisor.list()} | {
            r.name for r in inst_table.list_all(self.supervisor.store)}
        name, n = base, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        return name

    def models(self) -> list[dict]:
        """Every model a request may name: running instances and indexed models."""
        from corral.store import models as model_table

        out, seen = [], set()
        for rec in self.supervisor.list():
            out.append({"id": rec.name, "object": "model", "owned_by": "corral",
                        "state": rec.state, "model_path": rec.model})
            seen.add(rec.model)
        for m in model_table.list_all(self.supervisor.store):
            out.append({"id": m.name, "object": "model", "owned_by": "corral",
                        "state": "running" if m.path in seen else "stopped",
                        "model_path": m.path})
        return out

    async def forward(self, rec, path: str, body: bytes, headers: dict[str, str]):
        """Open the upstream request; the caller streams ``resp.aiter_raw()``."""
        host = "127.0.0.1" if rec.host in ("0.0.0.0", "::") else rec.host
        url = f"http://{host}:{rec.port}/v1/{path}"
        fwd = {k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS}
        for attempt in (1, 2):
            req = self.client.build_request("POST", url, content=body, headers=fwd)
            try:
                return await self.client.send(req, stream=True)
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError,
                    httpx.ConnectError) as exc:
                # A pooled keep-alive connection the server had closed, or a full accept
                # queue: nothing of the response was read, so one more try is safe.
                if attempt == 2:
                    raise UpstreamError(f"instance {rec.name!r} did not answer: "
                                        f"{type(exc).__name__}") from None
                await asyncio.sleep(0.05)
        raise AssertionError("unreachable")


def parse_model(body: bytes) -> str:
    """The ``model`` of an OpenAI request body, or a CorralError with the reason."""
    try:
        data = json.loads(body)
    except ValueError:
        raise _BadRequest("request body is not valid JSON")
    if not isinstance(data, dict):
        raise _BadRequest("request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("request body needs a \"model\" (see GET /v1/models)")
    return model


class UpstreamError(CorralError):
    """The instance's llama-server could not be reached for a request."""

    status = 502
    code = "upstream_error"


class _BadRequest(CorralError):
    status = 400
    code = "bad_request"
