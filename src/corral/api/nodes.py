"""/api/v1/nodes: the corral daemons this one links to (admin only: see corral.api.security).

``GET`` answers from memory (the last poll of each node), never waiting for a node.
``POST {name, url, key}`` calls the node once with the key and stores it only when it
answered as a corral daemon taking that key as admin (else 400 for a refused key or bad
input, 502 for a node that does not answer as corral, 409 for a taken name). No answer,
and no log line, ever carries the key.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from corral.errors import UsageError
from corral.nodes.registry import KEY_MAX, NodeRegistry
from corral.nodes.remote import URL_MAX

router = APIRouter(prefix="/api/v1/nodes", tags=["nodes"])


class NodeRequest(BaseModel):
    """A node to link: its name here, its daemon's URL, and an admin key made there."""

    name: str = Field(max_length=256)
    url: str = Field(max_length=URL_MAX, examples=["http://192.168.1.20:9380"])
    key: str = Field(max_length=KEY_MAX)

    def __repr__(self) -> str:  # never the key, should a request body ever be logged
        return f"NodeRequest(name={self.name!r}, url={self.url!r}, key='***')"

    __str__ = __repr__


async def get_nodes(request: Request) -> NodeRegistry:
    # async: a plain def would be run in the thread pool on every request
    return request.app.state.nodes


@router.get("")
async def list_nodes(nodes: NodeRegistry = Depends(get_nodes)) -> list[dict]:
    """Every linked node with its state (unknown, up, down), versions, GPUs and counts."""
    return nodes.views()


@router.get("/instances")
async def node_instances(nodes: NodeRegistry = Depends(get_nodes)) -> dict:
    """Every node's instances, asked of the nodes now (at most a few seconds for a slow
    one): ``instances`` (each with ``node``) and ``unreachable`` (node -> why)."""
    return await nodes.instances()


#: What the relay passes back of a node's answer headers.
RELAYED_HEADERS = ("content-type", "retry-after", "cache-control", "x-accel-buffering")


def _relayed_path(rest: str) -> str:
    """``/api/<rest>`` for the node, refused when it could name anything else: empty,
    ``.`` or ``..`` segments, and the node's own nodes (no relay of relays)."""
    parts = rest.split("/")
    if any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in (".", ".."):
        raise UsageError(f"not a path of a node's API: /api/{rest[:200]}")
    if rest == "v1/nodes" or rest.startswith("v1/nodes/"):
        raise UsageError("a node's own nodes are not reachable through this daemon")
    return "/api/" + rest


@router.api_route("/{name}/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def relay_to_node(
    name: str, rest: str, request: Request, nodes: NodeRegistry = Depends(get_nodes)
) -> StreamingResponse:
    """The node's own REST API, called with its key (``corral --node NAME ...``): the
    request as it came (method, query, JSON body), the answer streamed back as it goes
    (a followed log, a pull's progress)."""
    path = _relayed_path(rest)
    remote = nodes.remote(name)
    body = await request.body()
    resp = await remote.open(
        request.method,
        path,
        request.scope.get("query_string", b""),
        body,
        request.headers.get("content-type"),
    )
    headers = {k: v for k, v in resp.headers.items() if k.lower() in RELAYED_HEADERS}
    return StreamingResponse(
        resp.aiter_raw(),
        status_code=resp.status_code,
        headers=headers,
        background=BackgroundTask(resp.aclose),
    )


@router.post("", status_code=201)
async def add_node(req: NodeRequest, nodes: NodeRegistry = Depends(get_nodes)) -> dict:
    """Link a node: it is called once with the key, and stored only if it takes it."""
    return await nodes.add(req.name, req.url, req.key)


@router.delete("/{name}")
async def remove_node(name: str, nodes: NodeRegistry = Depends(get_nodes)) -> dict:
    """Forget a node: the controller stops polling it; the node itself runs on."""
    return await nodes.remove(name)
