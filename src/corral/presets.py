"""Presets: named sets of llama-server flags (plus model, build, env, policies) to launch from.

A preset is stored as one row of the ``presets`` table (JSON spec). The row named ``*``
holds the defaults every launch starts from. :func:`compose` turns a launch request into
a :class:`LaunchSpec`: ``*`` defaults < the named preset < the explicit arguments. Flags
merge through the flag catalog of the binary that will run (later wins, repeatable flags
accumulate, ``--no-X`` cancels ``--X``); env vars are a dict union in the same order.

Two file formats:

- YAML (corral's own): ``presets: {NAME: {model, build, flags, env, restart, idle_ttl,
  aliases, pinned, description}}``; ``'*'`` (quoted: a bare ``*`` is a YAML alias) holds
  the defaults. Everything a preset holds round-trips.
- INI: llama.cpp's own ``llama-server --models-preset FILE`` format (router mode,
  ``common/preset.cpp``): ``[NAME]`` sections, ``[*]`` for the global section,
  ``key = value`` where a key is a flag spelling without dashes (``c``, ``ctx-size``) or
  its env var (``LLAMA_ARG_CTX_SIZE``), switches take ``true``/``false``, ``;``/``#``
  start a comment (values can therefore hold neither).

Decisions where the issue is silent:

- Flags are stored as the tokens given (``-c 8192`` stays ``-c 8192``), checked against
  the catalog when one is at hand; they are normalised only when merged for a launch.
- INI ``model`` maps to the preset's model and ``alias`` (comma separated) to its aliases:
  in llama.cpp's router both name what requests may ask for, as corral's aliases do.
  ``version`` is skipped as llama.cpp does; keys before the first section belong to a
  preset named ``default`` (llama.cpp does the same). ``port`` is dropped (corral assigns
  ports), and the router-only keys ``load-on-startup``, ``stop-timeout`` and
  ``dedup-cache-models`` have no corral meaning: dropped, with a warning.
- INI export writes each flag under llama.cpp's key (its last printed spelling, as
  ``common_preset::to_ini`` does), switches as ``true``/``false``, repeated values of a
  repeatable flag joined with ``,`` (how llama.cpp takes several ``--lora``...). What INI
  cannot hold (env, restart, idle_ttl, pinned, build, description, two-valued flags,
  values containing ``;`` or ``#``) is left out with a warning.
- A section name that is not a corral preset name (``[org/repo:Q4_K_M]``) is imported
  under a cleaned name, with the original kept as an alias.
- A launch from a preset with no explicit instance name is named after the preset
  (``-2``, ``-3``... when taken).
"""

from __future__ import annotations

import json
import math
import re
import shlex
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Iterable

from corral import redact
from corral.builds.catalog import Flag, FlagCatalog
from corral.builds.resolve import check_build_id
from corral.errors import Conflict, CorralError, NotFound, OwnedFlag, UsageError
from corral.launchspec import LaunchSpec, check_env
from corral.store import builds as builds_table
from corral.store.db import Store

# corral.supervisor.states and corral.store.instances are imported where they are used:
# `corral fit` composes through here and needs neither.

__all__ = [
    "DEFAULTS",
    "Preset",
    "get",
    "find",
    "list_all",
    "save",
    "save_many",
    "delete",
    "compose",
    "compose_sync",
    "validate",
    "to_yaml",
    "from_yaml",
    "to_ini",
    "from_ini",
    "preset_view",
]

#: Name of the row holding the defaults applied to every launch.
DEFAULTS = "*"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # always .fullmatch
#: Aliases are what OpenAI clients send as ``model``: no blanks, commas (llama.cpp's
#: alias list separator) or control characters.
ALIAS_RE = re.compile(r"[^\s,\x00-\x1f\x7f]{1,128}")  # always .fullmatch
MAX_FLAGS = 512
MAX_TOKEN = 4096
MAX_ENV = 64
MAX_ALIASES = 32
MAX_DESCRIPTION = 1024
MAX_MODEL = 4096


@dataclass
class Preset:
    """A named flag set. Empty/None fields mean "not set here" (a lower layer decides)."""

    name: str
    model: str | None = None  # model ref: index id/name/alias, or a GGUF path
    build: int | None = None  # build id (corral builds ls)
    flags: list[str] = field(default_factory=list)  # llama-server tokens
    env: dict[str, str] = field(default_factory=dict)
    restart: str | None = None  # always|on-failure|never; None = default
    idle_ttl: float | None = None  # seconds; None = daemon default; 0 = never
    aliases: list[str] = field(default_factory=list)
    pinned: bool = False
    description: str = ""


_SPEC_FIELDS = tuple(f.name for f in fields(Preset) if f.name != "name")


def preset_view(preset: Preset) -> dict:
    """The public (API, ``--json``) shape of a preset: secrets (``--api-key K``,
    ``LLAMA_API_KEY``) shown as ``***``. Export keeps them: it is the preset itself."""
    view = asdict(preset)
    view["flags"] = redact.redact_argv(preset.flags)
    view["env"] = redact.redact_env(preset.env)
    return view


def keep_secrets(new: Preset, old: Preset | None) -> Preset:
    """``new`` with every ``***`` it was shown put back from ``old``: a preset read
    from the API (masked) and saved back keeps its real key."""
    flags, i = list(new.flags), 0
    while i < len(flags):
        name, eq, value = flags[i].partition("=")
        if redact.is_secret_flag(name):
            at = i if eq else i + 1
            shown = value if eq else (flags[at] if at < len(flags) else None)
            if shown == redact.MASK:
                real = _token_value(old.flags if old else [], name)
                if real is None:
                    raise UsageError(
                        f"preset {new.name}: {name} is {redact.MASK}; give the key itself"
                    )
                flags[at] = f"{name}={real}" if eq else real
        i += 1
    env = dict(new.env)
    for key, value in env.items():
        if value == redact.MASK and key in redact.SECRET_ENV:
            if old is None or key not in old.env:
                raise UsageError(f"preset {new.name}: env {key} is {redact.MASK}; give the value")
            env[key] = old.env[key]
    new.flags, new.env = flags, env
    return new


def _token_value(tokens: list[str], flag: str) -> str | None:
    """The value ``flag`` has in ``tokens`` (``--f V`` or ``--f=V``; the last wins)."""
    found = None
    for i, tok in enumerate(tokens):
        name, eq, value = tok.partition("=")
        if name == flag:
            found = value if eq else (tokens[i + 1] if i + 1 < len(tokens) else None)
    return found


# -- validation ------------------------------------------------------------------------


def validate(preset: Preset, catalog: FlagCatalog | None = None) -> Preset:
    """A checked copy of ``preset``; UsageError (one line, naming the preset) otherwise.

    With a ``catalog`` the flags are checked against it (unknown flags get a "did you
    mean"); without one only their shape is.
    """
    name = preset.name
    if not isinstance(name, str) or not (name == DEFAULTS or NAME_RE.fullmatch(name)):
        raise UsageError(
            f"invalid preset name {name!r}: use letters, digits, '.', '_' or '-' "
            f"(max 64), or '*' for the defaults"
        )
    try:
        checked = Preset(
            name=name,
            model=_model(preset.model),
            build=_build(preset.build),
            flags=_tokens(preset.flags),
            env=_env(preset.env),
            restart=_restart(preset.restart),
            idle_ttl=_idle_ttl(preset.idle_ttl),
            aliases=_aliases(preset.aliases),
            pinned=_bool("pinned", preset.pinned),
            description=_description(preset.description),
        )
        if name == DEFAULTS and (checked.model or checked.aliases):
            raise UsageError(
                "the defaults ('*') apply to every launch: they may not name a model or aliases"
            )
        if catalog is not None:
            _check_flags(catalog, checked.flags)
    except CorralError as exc:
        raise _about(name, exc) from None
    return checked


def _about(name: str, exc: CorralError) -> CorralError:
    """The same error, its message prefixed with the preset it is about."""
    prefix = f"preset {name!r}: "
    if exc.message.startswith(prefix):
        return exc
    return type(exc)(prefix + exc.message, detail=exc.detail)


def _model(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_MODEL or "\0" in value:
        raise UsageError(f"model must be a model name or GGUF path (1-{MAX_MODEL} characters)")
    return value.strip()


def _build(value) -> int | None:
    if value is None:
        return None
    return check_build_id(value)


def _tokens(value) -> list[str]:
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            raise UsageError(f"flags: {exc}")
    if not isinstance(value, (list, tuple)):
        raise UsageError("flags must be a list of llama-server arguments")
    if len(value) > MAX_FLAGS:
        raise UsageError(f"too many flag tokens ({len(value)} > {MAX_FLAGS})")
    out = []
    for token in value:
        if isinstance(token, bool) or not isinstance(token, (str, int, float)):
            raise UsageError(f"flags must be strings, got {token!r}")
        token = str(token)
        if len(token) > MAX_TOKEN or "\0" in token:
            raise UsageError(f"flag token too long or holding a NUL byte: {token[:40]!r}")
        out.append(token)
    return out


def _env(value) -> dict[str, str]:
    if value is None:
        return {}
    env = check_env(value)
    if len(env) > MAX_ENV:
        raise UsageError(f"too many environment variables ({len(env)} > {MAX_ENV})")
    return env


def _restart(value) -> str | None:
    from corral.supervisor.states import RESTART_POLICIES

    if value is None:
        return None
    if value not in RESTART_POLICIES:
        raise UsageError(f"restart must be one of {', '.join(RESTART_POLICIES)}, got {value!r}")
    return value


def _idle_ttl(value) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise UsageError(f"idle_ttl must be a number of seconds >= 0 (0 = never), got {value!r}")
    return float(value)


def _aliases(value) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise UsageError("aliases must be a list of names")
    if len(value) > MAX_ALIASES:
        raise UsageError(f"too many aliases ({len(value)} > {MAX_ALIASES})")
    out: list[str] = []
    for alias in value:
        if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias) or alias == DEFAULTS:
            raise UsageError(
                f"invalid alias {alias!r}: 1-128 characters, no spaces or commas, not '*'"
            )
        if alias not in out:
            out.append(alias)
    return out


def _bool(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{key} must be true or false, got {value!r}")
    return value


def _description(value) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise UsageError(f"description must be text of at most {MAX_DESCRIPTION} characters")
    return value


def _check_flags(catalog: FlagCatalog, tokens: list[str]) -> None:
    """Tokens parse against ``catalog`` and leave --model/--port to corral."""
    for flag_name, _ in catalog.normalize(tokens):
        if _is(catalog, flag_name, "--model"):
            raise OwnedFlag("give the model as the preset's model, not as --model")
        if _is(catalog, flag_name, "--port"):
            raise OwnedFlag("corral assigns ports: use corral run --port")


def _is(catalog: FlagCatalog, name: str, which: str) -> bool:
    flag, target = catalog.lookup(name), catalog.lookup(which)
    return flag is not None and flag is target


# -- the store -------------------------------------------------------------------------


def _from_row(row) -> Preset:
    spec = json.loads(row["spec"])
    return Preset(name=row["name"], **{k: v for k, v in spec.items() if k in _SPEC_FIELDS})


def _spec(preset: Preset) -> str:
    data = asdict(preset)
    data.pop("name")
    return json.dumps(data)


def get(store: Store, name: str) -> Preset:
    """The preset called ``name`` ('*' for the defaults); NotFound otherwise."""
    rows = store.query("SELECT * FROM presets WHERE name = ?", (name,))
    if not rows:
        raise NotFound(f"no preset named {name!r} (corral preset ls)")
    return _from_row(rows[0])


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
    return [_from_row(r) for r in store.query("SELECT * FROM presets ORDER BY name")]


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
    now = time.time()
    with store.tx() as conn:
        stored = {r["name"]: _from_row(r) for r in conn.execute("SELECT * FROM presets")}
        taken = sorted(set(names) & set(stored))
        if taken and not replace:
            raise Conflict(
                f"preset{'s' if len(taken) > 1 else ''} {', '.join(taken)} "
                f"already exist{'' if len(taken) > 1 else 's'} (replace to overwrite)"
            )
        others = [p for n, p in stored.items() if n not in names]
        _check_aliases(checked, others)
        for p in checked:
            conn.execute(
                "INSERT INTO presets (name, spec, created_at, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, "
                "updated_at = excluded.updated_at",
                (p.name, _spec(p), now, now),
            )
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
    with store.tx() as conn:
        if conn.execute("DELETE FROM presets WHERE name = ?", (name,)).rowcount == 0:
            raise NotFound(f"no preset named {name!r} (corral preset ls)")


# -- composing a launch ----------------------------------------------------------------


async def compose(
    supervisor,
    *,
    model=None,
    preset=None,
    flags=(),
    name=None,
    port=None,
    restart=None,
    env=None,
    pinned=None,
    idle_ttl=None,
    aliases=None,
    binary=None,
    build_id=None,
    origin="user",
    fit=True,
) -> LaunchSpec:
    """The LaunchSpec for a launch: '*' defaults < preset ``preset`` < the arguments.

    Every launch goes through here (API, ``corral run``, the router), so the defaults
    apply to all of them. Flags are merged with the catalog of the binary that will run.
    ``fit=False`` (``--no-fit``) asks the supervisor to launch the flags as they are,
    without a memory plan.
    """
    layers = _Layers.read(supervisor.store, model, preset, binary, build_id)
    catalog = await supervisor.catalog(binary, layers.build_id)
    return layers.spec(
        supervisor,
        catalog,
        flags=flags,
        name=name,
        port=port,
        restart=restart,
        env=env,
        pinned=pinned,
        idle_ttl=idle_ttl,
        aliases=aliases,
        binary=binary,
        origin=origin,
        fit=fit,
    )


def compose_sync(
    supervisor,
    *,
    model=None,
    preset=None,
    flags=(),
    name=None,
    port=None,
    restart=None,
    env=None,
    pinned=None,
    idle_ttl=None,
    aliases=None,
    binary=None,
    build_id=None,
    origin="user",
    fit=True,
) -> LaunchSpec:
    """:func:`compose` for a caller whose ``supervisor.catalog`` is a plain function.

    ``corral fit`` composes from the store alone, with no event loop: importing asyncio
    to run :func:`compose` costs ~30 ms of a command that should take well under 150.
    """
    layers = _Layers.read(supervisor.store, model, preset, binary, build_id)
    catalog = supervisor.catalog(binary, layers.build_id)
    return layers.spec(
        supervisor,
        catalog,
        flags=flags,
        name=name,
        port=port,
        restart=restart,
        env=env,
        pinned=pinned,
        idle_ttl=idle_ttl,
        aliases=aliases,
        binary=binary,
        origin=origin,
        fit=fit,
    )


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
    def read(cls, store: Store, model, preset, binary, build_id) -> _Layers:
        defaults = _find_exact(store, DEFAULTS) or Preset(DEFAULTS)
        chosen = _named(store, preset)
        model = model or (chosen.model if chosen else None)
        if not model:
            raise UsageError(
                f"preset {preset!r} names no model: give MODEL"
                if chosen
                else "a model is required (MODEL, or a preset that names one)"
            )
        layers = cls(defaults, chosen, model, build_id)
        if build_id is None and not binary:
            layers.build_id = _last(layers.all, "build")
        return layers

    def spec(
        self,
        supervisor,
        catalog: FlagCatalog,
        *,
        flags,
        name,
        port,
        restart,
        env,
        pinned,
        idle_ttl,
        aliases,
        binary,
        origin,
        fit,
    ) -> LaunchSpec:
        """The LaunchSpec: the layers' flags merged through ``catalog``, then the arguments."""
        layers, chosen = self.all, self.chosen
        pairs = [_normalized(catalog, p) for p in layers]
        pairs.append(catalog.normalize(list(flags)))
        merged_env: dict[str, str] = {}
        for layer in layers:
            merged_env.update(layer.env)
        merged_env.update(env or {})
        return LaunchSpec(
            model=self.model,
            flags=catalog.to_argv(catalog.merge(*pairs)),
            name=name or (_free_name(supervisor, chosen.name) if chosen else None),
            port=port,
            restart=restart or _last(layers, "restart") or "on-failure",
            binary=binary,
            build_id=self.build_id,
            env=merged_env,
            preset=chosen.name if chosen else None,
            origin=origin,
            pinned=bool(pinned) if pinned is not None else any(p.pinned for p in layers),
            idle_ttl=idle_ttl if idle_ttl is not None else _last(layers, "idle_ttl"),
            aliases=list(
                dict.fromkeys([*(chosen.aliases if chosen else []), *_aliases(aliases or [])])
            ),
            fit=fit,
        )


def _find_exact(store: Store, name: str) -> Preset | None:
    try:
        return get(store, name)
    except NotFound:
        return None


def _named(store: Store, name: str | None) -> Preset | None:
    if name is None:
        return None
    if name == DEFAULTS:
        raise UsageError("'*' holds the defaults, which apply to every launch: name a preset")
    return get(store, name)


def _normalized(catalog: FlagCatalog, preset: Preset) -> list:
    """The preset's flags as catalog pairs; an error names the preset it came from."""
    try:
        return catalog.normalize(preset.flags)
    except CorralError as exc:
        raise _about(preset.name, exc) from None


def _last(layers: list[Preset], attr: str):
    """The value of the highest layer that sets ``attr``."""
    return next((getattr(p, attr) for p in reversed(layers) if getattr(p, attr) is not None), None)


def _free_name(supervisor, base: str) -> str:
    """``base``, or ``base-2``, ``base-3``... the first no instance has."""
    from corral.store import instances as instances_table

    taken = {r.name for r in supervisor.list()} | {
        r.name for r in instances_table.list_all(supervisor.store)
    }
    name, n = base, 2
    while name in taken:
        suffix = f"-{n}"
        name, n = base[: 64 - len(suffix)] + suffix, n + 1
    return name


# -- YAML ------------------------------------------------------------------------------


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
    return {k: v for k, v in data.items() if not _unset(v)}


def _unset(value) -> bool:
    """None, False and empty text/lists/maps; 0 is a value (idle_ttl 0 = never)."""
    return value is None or value is False or (isinstance(value, (str, list, dict)) and not value)


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
    unknown = [k for k in data if k not in _SPEC_FIELDS]
    if unknown:
        import difflib

        hint = difflib.get_close_matches(str(unknown[0]), _SPEC_FIELDS, n=1)
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


# -- INI (llama-server --models-preset) ------------------------------------------------

_BLANK_RE = re.compile(r"[ \t]*")
_COMMENT_RE = re.compile(r"^[ \t]*[;#]")
_SECTION_RE = re.compile(r"[ \t]*\[[ \t]*([^\]]+?)[ \t]*\][ \t]*(?:[;#].*)?")
_KV_RE = re.compile(r"[ \t]*([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=[ \t]*([^;#]*?)[ \t]*(?:[;#].*)?")
_TRUTHY = ("on", "enabled", "true", "1")
_FALSEY = ("off", "disabled", "false", "0")
#: Router options llama.cpp reads from preset files only (``common_params_add_preset_options``).
_ROUTER_ONLY = ("load-on-startup", "stop-timeout", "dedup-cache-models")
#: Keys before any section go to this preset, as in llama.cpp (COMMON_PRESET_DEFAULT_NAME).
_INI_DEFAULT_SECTION = "default"
_CORRAL_ONLY = ("env", "restart", "idle_ttl", "pinned", "build", "description")


def from_ini(text: str, catalog: FlagCatalog) -> tuple[list[Preset], list[str]]:
    """Presets from a llama.cpp ``--models-preset`` INI file, and warnings.

    ``catalog`` tells flags from switches and maps every key spelling to its flag.
    A malformed line or an unknown key is a UsageError naming the line.
    """
    sections = _ini_sections(text)
    warnings: list[str] = []
    env_index = {f.env: f for f in catalog.flags if f.env}
    presets = []
    used: dict[str, int] = {}
    for section, (header_line, items) in sections.items():
        name = _ini_name(section, header_line)
        if name in used:
            raise UsageError(
                f"INI line {header_line}: section [{section}] would become preset "
                f"{name!r}, like the section on line {used[name]}"
            )
        used[name] = header_line
        preset = Preset(name=name)
        if name != section:
            keep = bool(ALIAS_RE.fullmatch(section))
            preset.aliases = [section] if keep else []
            warnings.append(
                f"[{section}] imported as preset {name!r}"
                + (f" answering to {section!r}" if keep else "")
            )
        chosen: dict[str, tuple[Flag, list[str]]] = {}
        for lineno, key, value in items:
            where = f"INI line {lineno}: [{section}] {key}"
            _ini_item(catalog, env_index, preset, chosen, where, key, value, warnings)
        preset.flags = [tok for _, tokens in chosen.values() for tok in tokens]
        presets.append(validate(preset, catalog))
    return presets, warnings


def _ini_sections(text: str) -> dict[str, tuple[int, list[tuple[int, str, str]]]]:
    """``{section: (header line, [(line, key, value)])}`` in file order."""
    sections: dict[str, tuple[int, list]] = {}
    current = None
    for lineno, line in enumerate(re.split(r"\r\n|\n|\r", text), start=1):
        if _BLANK_RE.fullmatch(line) or _COMMENT_RE.match(line):
            continue
        header = _SECTION_RE.fullmatch(line)
        if header:
            current = header.group(1)
            if current in sections:
                raise UsageError(
                    f"INI line {lineno}: section [{current}] appears twice "
                    f"(first on line {sections[current][0]})"
                )
            sections[current] = (lineno, [])
            continue
        kv = _KV_RE.fullmatch(line)
        if not kv:
            raise UsageError(
                f"INI line {lineno}: expected [section], key = value or a "
                f"comment, got {line.strip()[:60]!r}"
            )
        if kv.group(1) == "version":
            continue  # reserved by llama.cpp, skipped there too
        if current is None:
            current = _INI_DEFAULT_SECTION
            sections.setdefault(current, (lineno, []))
        sections[current][1].append((lineno, kv.group(1), kv.group(2)))
    return sections


def _ini_name(section: str, lineno: int) -> str:
    """The corral name for a section: itself when valid, else a cleaned-up spelling."""
    if section == DEFAULTS or NAME_RE.fullmatch(section):
        return section
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", section).strip("-._")[:64]
    if not NAME_RE.fullmatch(clean):
        raise UsageError(f"INI line {lineno}: section [{section}] gives no usable preset name")
    return clean


def _ini_item(
    catalog: FlagCatalog,
    env_index: dict[str, Flag],
    preset: Preset,
    chosen: dict,
    where: str,
    key: str,
    value: str,
    warnings: list[str],
) -> None:
    """Apply one ``key = value`` of a section to ``preset`` (flags collect in ``chosen``)."""
    if key in _ROUTER_ONLY:
        warnings.append(f"{where}: a llama.cpp router option with no corral equivalent; ignored")
        return
    flag = env_index.get(key) or (catalog.lookup(key) if not key.startswith("-") else None)
    if flag is None:
        hint = catalog.suggest("--" + key, n=1)
        tail = f" (did you mean {hint[0].lstrip('-')}?)" if hint else ""
        raise UsageError(f"{where}: not a flag of this llama-server{tail}")
    if _is(catalog, flag.long, "--model"):
        preset.model = value
        return
    if _is(catalog, flag.long, "--alias"):
        preset.aliases += [a.strip() for a in value.split(",") if a.strip()]
        return
    if _is(catalog, flag.long, "--port"):
        warnings.append(f"{where}: corral assigns ports itself; ignored")
        return
    tokens = _ini_tokens(flag, key, value, where)
    if flag.long in chosen:
        warnings.append(f"{where}: flag given twice in the section; the later value wins")
    chosen[flag.long] = (flag, tokens)


def _ini_tokens(flag: Flag, key: str, value: str, where: str) -> list[str]:
    if flag.nargs > 1:
        raise UsageError(f"{where}: takes two values, which llama.cpp presets cannot hold")
    if flag.takes_value:
        return [flag.long, value]
    word = value.lower()
    if word not in _TRUTHY + _FALSEY:
        raise UsageError(f"{where}: a switch takes true or false, got {value!r}")
    negated = ("--" + key) in flag.negations or ("-" + key) in flag.negations
    on = (word in _TRUTHY) != negated
    if on:
        return [flag.long]
    return [flag.negation] if flag.negation else []  # llama.cpp drops a false switch


def to_ini(
    presets: Iterable[Preset],
    catalog: FlagCatalog,
    model_path: Callable[[str], str | None] | None = None,
) -> tuple[str, list[str]]:
    """A llama.cpp ``--models-preset`` file for ``presets``, and warnings for what INI
    cannot hold. ``model_path(ref)`` turns a model of the index into its file path, since
    llama-server needs a path."""
    warnings: list[str] = []
    blocks = ["; llama-server --models-preset file, written by corral\n"]
    for p in presets:
        lines = [f"[{p.name}]"]
        if p.model:
            lines.append(
                _ini_line(
                    p.name, "model", (model_path and model_path(p.model)) or p.model, warnings
                )
            )
        if p.aliases:
            lines.append(_ini_line(p.name, "alias", ",".join(p.aliases), warnings))
        lines += _ini_flag_lines(catalog, p, warnings)
        dropped = [k for k in _CORRAL_ONLY if not _unset(getattr(p, k))]
        if dropped:
            warnings.append(
                f"preset {p.name!r}: {', '.join(dropped)} cannot be written to INI; left out"
            )
        blocks.append("\n".join(line for line in lines if line is not None) + "\n")
    return "\n".join(blocks), warnings


def _ini_flag_lines(catalog: FlagCatalog, preset: Preset, warnings: list[str]) -> list:
    """``key = value`` lines for the preset's flags, merged (one line per flag)."""
    grouped: dict[str, tuple[Flag, list]] = {}
    for flag_name, value in catalog.merge(_normalized(catalog, preset)):
        flag = catalog.lookup(flag_name)
        grouped.setdefault(flag.long, (flag, []))[1].append((flag_name, value))
    lines = []
    for flag, items in grouped.values():
        if flag.nargs > 1:
            warnings.append(
                f"preset {preset.name!r}: {flag.long} takes two values, which "
                f"llama.cpp presets cannot hold; left out"
            )
        elif not flag.takes_value:
            on = items[-1][0] not in flag.negations
            lines.append(f"{_ini_key(flag)} = {'true' if on else 'false'}")
        else:
            value = ",".join(v for _, v in items)  # llama.cpp takes --lora a,b and the like
            lines.append(_ini_line(preset.name, _ini_key(flag), value, warnings))
    return lines


def _ini_key(flag: Flag) -> str:
    """llama.cpp's key for a flag: its last positive spelling without dashes."""
    positive = [n for n in flag.names if n not in flag.negations]
    return positive[-1].lstrip("-")


def _ini_line(name: str, key: str, value: str, warnings: list[str]) -> str | None:
    """``key = value``, or None (and a warning) when llama.cpp would cut the value short."""
    bad = set(";#\r\n") & set(value)
    if bad:
        warnings.append(
            f"preset {name!r}: {key} = {value!r} holds {''.join(sorted(bad))!r}, "
            f"which an INI value cannot hold; left out"
        )
        return None
    return f"{key} = {value}"
