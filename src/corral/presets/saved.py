"""The presets saved in the store: read, find by name or alias, save checked, delete.

The SQL is :mod:`corral.store.presets`'s; here a row becomes a :class:`Preset`, and a
save is validated (flags against a catalog, the build known, no alias clash) before the
one transaction that writes it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Callable, Iterable

from corral.builds.catalog import FlagCatalog
from corral.errors import Conflict, NotFound, UsageError
from corral.presets.model import DEFAULTS, SPEC_FIELDS, Preset, validate
from corral.store import builds as builds_table, presets as table
from corral.store.db import Store


def _preset(name: str, spec: dict) -> Preset:
    return Preset(name=name, **{k: v for k, v in spec.items() if k in SPEC_FIELDS})


def _spec(preset: Preset) -> dict:
    data = asdict(preset)
    data.pop("name")
    return data


def get(store: Store, name: str) -> Preset:
    """The preset called ``name`` ('*' for the defaults); NotFound otherwise."""
    spec = table.get(store, name)
    if spec is None:
        raise NotFound(f"no preset named {name!r} (corral preset ls)")
    return _preset(name, spec)


def get_or_none(store: Store, name: str) -> Preset | None:
    """The preset called ``name``, or None."""
    spec = table.get(store, name)
    return None if spec is None else _preset(name, spec)


def find(store: Store, name_or_alias: str) -> Preset | None:
    """The preset with this name, else the one with this alias; never the defaults."""
    if name_or_alias == DEFAULTS:
        return None
    presets = [p for p in list_all(store) if p.name != DEFAULTS]
    for preset in presets:
        if preset.name == name_or_alias:
            return preset
    return next((p for p in presets if name_or_alias in p.aliases), None)


def list_all(store: Store) -> list[Preset]:
    """Every preset, sorted by name ('*' first when saved)."""
    return [_preset(name, spec) for name, spec in table.list_all(store)]


def save(store: Store, preset: Preset, catalog: FlagCatalog | None = None) -> Preset:
    """Validate, then create or replace ``preset``. An alias clash is a Conflict."""
    return save_many(store, [preset], catalog_for=lambda _build: catalog, replace=True)[0]


def save_many(
    store: Store,
    presets: Iterable[Preset],
    *,
    catalog_for: Callable[[int | None], FlagCatalog | None] = lambda _b: None,
    replace: bool = False,
) -> list[Preset]:
    """Validate every preset, then write them all in one transaction (or none).

    ``catalog_for(build)`` gives the catalog to check a preset's flags with (None: not
    checked). Without ``replace`` an existing name is a Conflict.
    """
    checked = [validate(p, catalog_for(p.build)) for p in presets]
    names = [p.name for p in checked]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"preset {dupes[0]!r} is given twice")
    for p in checked:
        if p.build is not None:
            _check_build(store, p)

    def check(stored: dict[str, dict]) -> None:
        taken = sorted(set(names) & set(stored))
        if taken and not replace:
            raise Conflict(
                f"preset{'s' if len(taken) > 1 else ''} {', '.join(taken)} "
                f"already exist{'' if len(taken) > 1 else 's'} (replace to overwrite)"
            )
        others = [_preset(n, spec) for n, spec in stored.items() if n not in names]
        _check_aliases(checked, others)

    table.write(store, [(p.name, _spec(p)) for p in checked], check)
    return checked


def _check_build(store: Store, preset: Preset) -> None:
    try:
        builds_table.get(store, preset.build)
    except NotFound:
        raise UsageError(
            f"preset {preset.name!r}: no build with id {preset.build} (corral builds ls)"
        ) from None


def _check_aliases(new: list[Preset], others: list[Preset]) -> None:
    """No alias may equal another preset's name or alias (requests must be unambiguous)."""
    owner: dict[str, str] = {}
    for p in others + new:
        owner.setdefault(p.name, p.name)
    for p in others + new:
        for alias in p.aliases:
            holder = owner.setdefault(alias, p.name)
            if holder != p.name:
                what = "the name" if alias == holder else "an alias"
                raise Conflict(
                    f"alias {alias!r} of preset {p.name!r} is already {what} of preset {holder!r}"
                )


def delete(store: Store, name: str) -> None:
    """Forget a preset; NotFound if there is none by that name."""
    table.delete(store, name)
