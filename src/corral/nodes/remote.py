"""Calls to one node's REST API, and what a poll learns from them.

One :class:`RemoteNode` per node holds one keep-alive ``httpx.AsyncClient`` (base URL,
bearer key, timeouts). A poll is ``/healthz`` (that it is a corral daemon, its
version), then four read-only admin calls made at once: ``/api/v1/system`` (GPUs with
free memory, the builds: the default one's llama.cpp version), ``/api/v1/instances``
and ``/api/v1/models`` (counts), and ``/v1/models`` (every name it serves and which
run now: what the controller routes by, :mod:`corral.nodes.fleet`). The key travels
only in the ``Authorization`` header: it is never part of a URL, an error message or
a ``repr``.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any
from urllib.parse import urlsplit

import httpx

from corral.errors import UpstreamError, UsageError

#: Every call to a node says it comes from a controller: the node answers for itself
#: (its own ``/v1/models``, never its own nodes'). See corral.nodes.fleet.HOP_HEADER.
HOP = {"x-corral-hop": "1"}
#: The longest URL accepted for a node.
URL_MAX = 2048


def check_url(value: object) -> str:
    """``value`` as a node's base URL (``http(s)://host:port``, no trailing slash).

    Refused: another scheme, no host, credentials (``user:pass@``: the key goes in a
    header), a path other than ``/``, a query or fragment, a bad port."""
    if not isinstance(value, str) or not value or len(value) > URL_MAX:
        raise UsageError(f"a node URL is http(s)://host:port (at most {URL_MAX} characters)")
    if not value.isprintable() or any(c.isspace() for c in value):
        raise UsageError("a node URL may not hold spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"a node URL starts with http:// or https://, not {value!r}")
    if "@" in parts.netloc:
        raise UsageError("a node URL may not hold credentials: pass the key with --key")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "\\" in value:
        raise UsageError(f"a node URL is only scheme://host:port, without a path: {value!r}")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"a node URL's port must be 1-65535: {value!r}") from None
    host = parts.hostname
    if not host or not _valid_host(host):
        raise UsageError(f"a node URL needs a host name or address: {value!r}")
    if port == 0:
        raise UsageError(f"a node URL's port must be 1-65535: {value!r}")
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}" + (f":{port}" if port else "")


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return (
        all(
            0 < len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
            for label in labels
        )
        and host.isascii()
    )


def _default_build(builds: list[dict]) -> dict | None:
    found = [b for b in builds if b.get("is_default")]
    return found[0] if found else (builds[0] if builds else None)


def _llama_version(build: dict | None) -> str | None:
    """The build tag (``b6000``) when known, else the first line of ``--version`` without
    its ``version:`` label (``6000 (abc123)``)."""
    if not build:
        return None
    if build.get("build"):
        return str(build["build"])
    lines = str(build.get("version") or "").strip().splitlines()
    if not lines:
        return None
    first = lines[0].strip()
    return first.removeprefix("version:").strip() or None


def served(models: Any) -> list[dict]:
    """The names a node serves, from its ``/v1/models``: id, kind, state, aliases only
    (the rest, paths included, stays on the node)."""
    data = models.get("data") if isinstance(models, dict) else None
    out = []
    for entry in data if isinstance(data, list) else ():
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            aliases = entry.get("aliases")
            out.append(
                {
                    "id": entry["id"],
                    "kind": entry.get("kind") if isinstance(entry.get("kind"), str) else None,
                    "state": entry.get("state") if isinstance(entry.get("state"), str) else None,
                    "aliases": [a for a in aliases if isinstance(a, str)]
                    if isinstance(aliases, list)
                    else [],
                }
            )
    return out


def summarize(
    health: dict, system: dict, instances: list, models: list, v1_models: Any = None
) -> dict[str, Any]:
    """What ``corral nodes ls`` shows of one node, from its answers (and, under
    ``served``, what its ``/v1/models`` lists, for routing)."""
    build = _default_build(system.get("builds") or [])
    gpus = [
        {
            "index": g.get("index"),
            "name": g.get("name"),
            "vram_total": g.get("vram_total"),
            "vram_free": g.get("vram_free"),
        }
        for g in system.get("gpus") or []
        if isinstance(g, dict)
    ]
    running = [i for i in instances if isinstance(i, dict) and i.get("state") == "ready"]
    return {
        "corral_version": health.get("version"),
        "llama_cpp_version": _llama_version(build),
        "gpus": gpus,
        "ram_free": system.get("ram_free"),
        "instances": len(instances),
        "instances_ready": len(running),
        "models": len(models),
        "served": served(v1_models),
    }


class RemoteNode:
    """The controller's keep-alive connection to one node."""

    def __init__(
        self, name: str, url: str, key: str, *, timeout: float = 5.0, transport=None
    ) -> None:
        self.name, self.url = name, url
        self.client = httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
            transport=transport,
            trust_env=False,  # a node is called directly, never through the user's proxy
            follow_redirects=False,
        )
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"RemoteNode({self.name!r}, {self.url!r})"

    async def open(
        self, method: str, path: str, query: bytes, body: bytes, ctype: str | None
    ) -> httpx.Response:
        """One request relayed to the node as it is, its answer streamed (the caller
        closes it): no read timeout, so a followed log or a pull's progress may last."""
        headers = {"Content-Type": ctype} if ctype else {}
        request = self.client.build_request(
            method,
            path,
            params=query.decode("latin-1") or None,
            content=body or None,
            headers=headers,
            timeout=httpx.Timeout(None, connect=min(self.timeout, 3.0)),
        )
        try:
            return await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"node {self.name} ({self.url}) is unreachable ({type(exc).__name__})"
            ) from None

    async def get(self, path: str) -> Any:
        """``GET path`` on the node: its JSON; UpstreamError or UsageError as for a poll."""
        return await self._get(path)

    async def post(self, path: str, body: dict) -> Any:
        """``POST path`` with a JSON ``body`` on the node: its JSON answer (as ``get``)."""
        return await self._get(path, body)

    async def _get(self, path: str, body: dict | None = None) -> Any:
        try:
            if body is None:
                resp = await self.client.get(path, headers=HOP)
            else:
                resp = await self.client.post(path, json=body, headers=HOP)
        except httpx.TimeoutException:
            raise UpstreamError(f"node {self.name} ({self.url}) did not answer in time") from None
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
            raise UpstreamError(
                f"node {self.name} ({self.url}) is unreachable ({reason})"
            ) from None
        if resp.status_code in (401, 403):
            raise UsageError(
                f"node {self.name} ({self.url}) refused the key ({resp.status_code}): "
                "give an admin key made there with `corral keys create`"
            )
        try:
            data = resp.json()
        except ValueError:
            data = None
        if body is not None and resp.status_code < 500 and isinstance(data, dict):
            return data  # a POST's own refusal (400/404/409) is an answer, not a dead node
        if resp.status_code != 200 or data is None:
            raise UpstreamError(
                f"{self.url} is not a corral daemon ({path} answered {resp.status_code})"
            )
        return data

    async def poll(self) -> dict[str, Any]:
        """One look at the node: its summary; UpstreamError when it does not answer as a
        corral daemon, UsageError when it refuses the key.

        ``/healthz`` (open, no key) first, so a server that is not corral is named so
        rather than as a refused key; then the three others at once."""

        async def gather():
            health = await self._get("/healthz")
            if not (isinstance(health, dict) and health.get("status") == "ok"):
                raise UpstreamError(f"{self.url} is not a corral daemon (its /healthz differs)")
            rest = await asyncio.gather(
                self._get("/api/v1/system"),
                self._get("/api/v1/instances"),
                self._get("/api/v1/models"),
                self._get("/v1/models"),
            )
            return (health, *rest)

        try:
            health, system, instances, models, v1_models = await asyncio.wait_for(
                gather(), self.timeout
            )
        except asyncio.TimeoutError:
            raise UpstreamError(f"node {self.name} ({self.url}) did not answer in time") from None
        shapes = (
            isinstance(health, dict) and health.get("status") == "ok" and "version" in health,
            isinstance(system, dict),
            isinstance(instances, list),
            isinstance(models, list),
        )
        if not all(shapes):
            raise UpstreamError(f"{self.url} is not a corral daemon (its answers do not fit)")
        return summarize(health, system, instances, models, v1_models)

    async def close(self) -> None:
        await self.client.aclose()
