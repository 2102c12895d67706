"""The :class:`Preset` type and its validation: what a preset may hold, checked once.

Every way in (API, CLI, YAML, INI, the store) builds a :class:`Preset` and passes it
through :func:`validate`; names, restart policies and numbers are checked with
:mod:`corral.types`, so they mean here what they mean everywhere else.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field, fields

from corral import redact
from corral.builds.catalog import FlagCatalog
from corral.builds.resolve import check_build_id
from corral.errors import CorralError, OwnedFlag, UsageError
from corral.launchspec import check_env
from corral.types import NAME_RE, check_restart, to_bool, to_seconds

#: Name of the row holding the defaults applied to every launch.
DEFAULTS = "*"
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
    restart: str | None = None  # one of types.RESTART_POLICIES; None = default
    idle_ttl: float | None = None  # seconds; None = daemon default; 0 = never
    aliases: list[str] = field(default_factory=list)
    pinned: bool = False
    description: str = ""


#: The fields a preset stores beside its name (the keys of its YAML mapping).
SPEC_FIELDS = tuple(f.name for f in fields(Preset) if f.name != "name")


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
            aliases=clean_aliases(preset.aliases),
            pinned=to_bool(preset.pinned, "pinned", strict=True),
            description=_description(preset.description),
        )
        if name == DEFAULTS and (checked.model or checked.aliases):
            raise UsageError(
                "the defaults ('*') apply to every launch: they may not name a model or aliases"
            )
        if catalog is not None:
            _check_flags(catalog, checked.flags)
    except CorralError as exc:
        raise about(name, exc) from None
    return checked


def about(name: str, exc: CorralError) -> CorralError:
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
    return None if value is None else check_restart(value)


def _idle_ttl(value) -> float | None:
    return None if value is None else to_seconds(value, "idle_ttl", strict=True)


def clean_aliases(value) -> list[str]:
    """Aliases as a list without repeats; one alias may be given as text."""
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


def _description(value) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise UsageError(f"description must be text of at most {MAX_DESCRIPTION} characters")
    return value


def _check_flags(catalog: FlagCatalog, tokens: list[str]) -> None:
    """Tokens parse against ``catalog`` and leave --model/--port to corral."""
    for flag_name, _ in catalog.normalize(tokens):
        if is_flag(catalog, flag_name, "--model"):
            raise OwnedFlag("give the model as the preset's model, not as --model")
        if is_flag(catalog, flag_name, "--port"):
            raise OwnedFlag("corral assigns ports: use corral run --port")


def is_flag(catalog: FlagCatalog, name: str, which: str) -> bool:
    """Whether ``name`` is the flag ``which`` (any of its spellings) in ``catalog``."""
    flag, target = catalog.lookup(name), catalog.lookup(which)
    return flag is not None and flag is target


def normalized(catalog: FlagCatalog, preset: Preset) -> list:
    """The preset's flags as catalog pairs; an error names the preset it came from."""
    try:
        return catalog.normalize(preset.flags)
    except CorralError as exc:
        raise about(preset.name, exc) from None


def unset(value) -> bool:
    """None, False and empty text/lists/maps; 0 is a value (idle_ttl 0 = never)."""
    return value is None or value is False or (isinstance(value, (str, list, dict)) and not value)
