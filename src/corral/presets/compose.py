"""A launch composed from layers: the ``*`` defaults < the named preset < the request.

Every launch goes through :func:`compose` (API, ``corral run``, the router, ``corral
fit``), so the defaults apply to all of them. It needs only a store (the presets, the
instance names in use), a catalog function (flags merge through the flag catalog of the
binary that will run: later wins, repeatable flags accumulate, ``--no-X`` cancels
``--X``) and the names the running instances hold; it knows nothing of the supervisor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, Sequence

from corral.builds.catalog import FlagCatalog
from corral.errors import UsageError
from corral.launchspec import LaunchSpec
from corral.presets.model import DEFAULTS, Preset, clean_aliases, normalized
from corral.presets.saved import get, get_or_none
from corral.store.db import Store
from corral.types import DEFAULT_RESTART, unique_name

#: ``catalog(binary, build_id)``: the flag catalog of the binary a launch will run.
CatalogFor = Callable[[str | None, int | None], FlagCatalog]
AsyncCatalogFor = Callable[[str | None, int | None], Awaitable[FlagCatalog]]


@dataclass
class LaunchRequest:
    """What a launch asks for beyond the presets; None/empty leaves it to the layers."""

    model: str | None = None
    preset: str | None = None
    flags: Sequence[str] = ()
    name: str | None = None
    port: int | None = None
    restart: str | None = None
    env: dict[str, str] | None = None
    pinned: bool | None = None
    idle_ttl: float | None = None
    aliases: Sequence[str] | None = None
    binary: str | None = None
    build_id: int | None = None
    origin: str = "user"
    fit: bool = True


async def compose(
    store: Store,
    catalog: AsyncCatalogFor,
    *,
    taken: Iterable[str] = (),
    **request,
) -> LaunchSpec:
    """The LaunchSpec for a launch: '*' defaults < preset ``preset`` < the arguments.

    ``request`` holds the fields of :class:`LaunchRequest` (``model``, ``preset``,
    ``flags``, ``name``...). ``await catalog(binary, build_id)`` gives the catalog the
    flags merge through; ``taken`` are instance names in use beyond those in the store
    (a launch from a preset is named after it, ``-2``, ``-3``... when taken).
    ``fit=False`` (``--no-fit``) asks the supervisor to launch the flags as they are,
    without a memory plan.
    """
    req = LaunchRequest(**request)
    layers = _Layers.read(store, req)
    return layers.spec(await catalog(req.binary, layers.build_id), req, store, taken)


def compose_sync(
    store: Store,
    catalog: CatalogFor,
    *,
    taken: Iterable[str] = (),
    **request,
) -> LaunchSpec:
    """:func:`compose` with a plain ``catalog`` function.

    ``corral fit`` composes from the store alone, with no event loop: importing asyncio
    to run :func:`compose` costs ~30 ms of a command that should take well under 150.
    """
    req = LaunchRequest(**request)
    layers = _Layers.read(store, req)
    return layers.spec(catalog(req.binary, layers.build_id), req, store, taken)


def _name_for(store: Store, chosen: Preset | None, name, taken: Iterable[str]) -> str | None:
    """The name asked for; else, from a preset, the preset's name made unique."""
    if name or chosen is None:
        return name or None
    from corral.store import instances as instances_table  # `corral fit` names nothing

    in_use = set(taken) | {r.name for r in instances_table.list_all(store)}
    return unique_name(chosen.name, in_use)


class _Layers:
    """The presets a launch stacks ('*' defaults, then the named one), with the model and
    build they give: what :func:`compose` reads before it asks for a catalog."""

    def __init__(
        self, defaults: Preset, chosen: Preset | None, model: str, build_id: int | None
    ) -> None:
        self.chosen = chosen
        self.all = [defaults] + ([chosen] if chosen else [])
        self.model, self.build_id = model, build_id

    @classmethod
    def read(cls, store: Store, req: LaunchRequest) -> _Layers:
        defaults = get_or_none(store, DEFAULTS) or Preset(DEFAULTS)
        chosen = _named(store, req.preset)
        model = req.model or (chosen.model if chosen else None)
        if not model:
            raise UsageError(
                f"preset {req.preset!r} names no model: give MODEL"
                if chosen
                else "a model is required (MODEL, or a preset that names one)"
            )
        layers = cls(defaults, chosen, model, req.build_id)
        if req.build_id is None and not req.binary:
            layers.build_id = _last(layers.all, "build")
        return layers

    def spec(
        self, catalog: FlagCatalog, req: LaunchRequest, store: Store, taken: Iterable[str]
    ) -> LaunchSpec:
        """The LaunchSpec: the layers' flags merged through ``catalog``, then the request."""
        layers, chosen = self.all, self.chosen
        pairs = [normalized(catalog, p) for p in layers]
        pairs.append(catalog.normalize(list(req.flags)))
        merged_env: dict[str, str] = {}
        for layer in layers:
            merged_env.update(layer.env)
        merged_env.update(req.env or {})
        return LaunchSpec(
            model=self.model,
            flags=catalog.to_argv(catalog.merge(*pairs)),
            name=_name_for(store, chosen, req.name, taken),
            port=req.port,
            restart=req.restart or _last(layers, "restart") or DEFAULT_RESTART,
            binary=req.binary,
            build_id=self.build_id,
            env=merged_env,
            preset=chosen.name if chosen else None,
            origin=req.origin,
            pinned=bool(req.pinned) if req.pinned is not None else any(p.pinned for p in layers),
            idle_ttl=req.idle_ttl if req.idle_ttl is not None else _last(layers, "idle_ttl"),
            aliases=list(
                dict.fromkeys(
                    [*(chosen.aliases if chosen else []), *clean_aliases(req.aliases or [])]
                )
            ),
            fit=req.fit,
        )


def _named(store: Store, name: str | None) -> Preset | None:
    if name is None:
        return None
    if name == DEFAULTS:
        raise UsageError("'*' holds the defaults, which apply to every launch: name a preset")
    return get(store, name)


def _last(layers: list[Preset], attr: str):
    """The value of the highest layer that sets ``attr``."""
    return next((getattr(p, attr) for p in reversed(layers) if getattr(p, attr) is not None), None)
