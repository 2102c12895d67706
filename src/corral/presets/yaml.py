"""corral's own preset file: YAML, everything a preset holds, round-tripping.

``presets: {NAME: {model, build, flags, env, restart, idle_ttl, aliases, pinned,
description}}``; ``'*'`` (quoted: a bare ``*`` is a YAML alias) holds the defaults.
PyYAML is imported only here, when a file is read or written (~40 ms).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Iterable

from corral.errors import UsageError
from corral.presets.model import SPEC_FIELDS, Preset, unset, validate


def to_yaml(presets: Iterable[Preset]) -> str:
    """``presets: {NAME: {...}}`` with only the fields each preset sets."""
    doc = {"presets": {p.name: _compact(p) for p in presets}}
    import yaml  # lazily: ~40 ms, only export and import need it

    return yaml.safe_dump(
        doc, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100
    )


def _compact(preset: Preset) -> dict:
    data = asdict(preset)
    data.pop("name")
    return {k: v for k, v in data.items() if not unset(v)}


def from_yaml(text: str) -> list[Preset]:
    """Presets from a YAML document (``yaml.safe_load``); UsageError naming the line/key."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"YAML line {mark.line + 1}" if mark is not None else "YAML"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{where}: {problem}") from None
    if not isinstance(doc, dict) or set(doc) != {"presets"}:
        raise UsageError("YAML: expected one top-level key 'presets' mapping names to presets")
    entries = doc["presets"] or {}
    if not isinstance(entries, dict):
        raise UsageError("YAML: 'presets' must map preset names to their settings")
    return [_from_mapping(_yaml_name(key), value) for key, value in entries.items()]


def _yaml_name(key) -> str:
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise UsageError(f"YAML: preset names must be text, got {key!r}")
    return str(key)


def _from_mapping(name: str, data) -> Preset:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"preset {name!r}: expected a mapping of settings, got {data!r}")
    unknown = [k for k in data if k not in SPEC_FIELDS]
    if unknown:
        import difflib

        hint = difflib.get_close_matches(str(unknown[0]), SPEC_FIELDS, n=1)
        tail = f" (did you mean {hint[0]}?)" if hint else ""
        raise UsageError(f"preset {name!r}: unknown key {unknown[0]!r}{tail}")
    values = dict(data)
    for key, empty in (
        ("flags", []),
        ("env", {}),
        ("aliases", []),
        ("pinned", False),
        ("description", ""),
    ):
        if values.get(key, empty) is None:
            values[key] = empty
    return validate(Preset(name=name, **values))
