"""/api/v1/settings: see and change corral's knobs (the web UI's Settings view).

``GET`` answers every setting a user may want to see: its value, its default, where the
value comes from (``env`` > ``config`` > ``default``), whether it is editable here and
whether a change applies ``live`` or after a daemon ``restart``. Secrets (``api_key``,
``hf_token``) show only whether they are set.

``PUT`` takes ``{key: value}``; a ``null`` value removes the key from the config file
(back to the default). Every value is checked first (type and range, with the
converters of :mod:`corral.types`); one bad key and nothing is written. The keys
are then written to ``CORRAL_HOME/config.toml`` (:func:`corral.settings.write_config`,
which keeps the user's comments) and the ``live`` ones are set on the daemon's own
:class:`Settings`, which the supervisor, router, pulls and builds share and read at each
use. A ``restart`` key (``ollama_port``: a socket bound at start, and the Host guard
that names it) is written but the running daemon keeps what it started with; its
``value`` is what the next start takes and ``running`` (present when they differ) what
this daemon uses now. A key set by a ``CORRAL_*`` variable is written too (a later
daemon without the variable uses it) but not applied: the variable still wins, and the
answer says so.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Body, Depends

from corral.api.deps import Daemon, get_daemon
from corral.errors import UsageError
from corral.settings import (
    Settings,
    coerce,
    env_name,
    from_env,
    read_config,
    source,
    write_config,
)
from corral.types import PORT_MAX, to_float, to_int

router = APIRouter(tags=["settings"])

YEAR = 365 * 24 * 3600.0


@dataclass(frozen=True)
class Knob:
    """How one setting is checked and shown. ``low``/``high`` are inclusive bounds;
    ``above`` is an exclusive lower bound (a duration that must not be zero)."""

    help: str
    low: float | None = None
    high: float | None = None
    above: float | None = None
    editable: bool = True
    secret: bool = False
    applies: str = "live"


def _seconds(help: str, *, zero_ok: bool = False) -> Knob:
    return Knob(help, low=0, high=YEAR) if zero_ok else Knob(help, above=0, high=YEAR)


KNOBS: dict[str, Knob] = {
    "idle_ttl": _seconds(
        "seconds an instance may sit unused before it is stopped; 0 = never", zero_ok=True
    ),
    "router_max_instances": Knob(
        "router-started instances running at once (LRU beyond); 0 = no cap", low=0, high=1000
    ),
    "router_memory_budget": Knob(
        "bytes of host RAM router-started instances may hold "
        "(planned host bytes, else file size); 0 = no budget",
        low=0,
        high=2**60,
    ),
    "fit_devices": Knob("devices the planner assumes (12GiB,8GiB / none); empty = detect"),
    "fit_margin_mib": Knob("MiB the planner keeps free on every device", low=0, high=2**20),
    "router_queue_limit": Knob(
        "requests that may wait for one loading model; more get 503", low=1, high=1_000_000
    ),
    "router_queue_timeout": _seconds("seconds a request waits for its model to load, then 503"),
    "port_range": Knob("ports instances are given, e.g. 8081-8999"),
    "probe_interval": _seconds("seconds between two health probes of a ready instance"),
    "probe_timeout": _seconds("seconds a health probe may take"),
    "probe_failures": Knob("failed probes in a row that mark an instance hung", low=1, high=1000),
    "load_timeout": _seconds("seconds a model may take to load before the launch fails"),
    "stop_timeout": _seconds("seconds between SIGTERM and SIGKILL when stopping", zero_ok=True),
    "backoff_initial": _seconds("first restart delay after a crash, in seconds"),
    "backoff_max": _seconds("longest restart delay, in seconds"),
    "crash_limit": Knob(
        "crashes within crash_window that mark an instance failed", low=1, high=1000
    ),
    "crash_window": _seconds("seconds over which crashes are counted"),
    "log_max_bytes": Knob("size at which an instance log is rotated", low=1024, high=2**40),
    "log_backups": Knob("rotated instance logs kept", low=0, high=100),
    "ollama_port": Knob(
        "a second port answering the Ollama API (and /v1/*), e.g. 11434 (Ollama's); 0 = off",
        low=0,
        high=PORT_MAX,
        applies="restart",
    ),
    "node_poll_interval": _seconds(
        "seconds between two polls of each linked node (corral nodes); 3 misses = down"
    ),
    "hf_endpoint": Knob("HuggingFace Hub (or mirror) URL used for search and pulls"),
    "releases_url": Knob("llama.cpp releases API URL used by update"),
    "llama_server": Knob("llama-server binary used when no build is registered", editable=False),
    "api_key": Knob("bearer key the API requires", editable=False, secret=True, applies="restart"),
    "hf_token": Knob("HuggingFace token for gated and private repos", editable=False, secret=True),
}
URL_KEYS = ("hf_endpoint", "releases_url")
_TYPES = {f.name: f.type for f in fields(Settings)}
_PYTYPES = {"int": int, "float": float, "str": str}


def _default(name: str) -> Any:
    return next(f.default for f in fields(Settings) if f.name == name and f.default is not MISSING)


# -- reading ----------------------------------------------------------------------------


def describe(settings: Settings) -> dict:
    """The GET answer: every known setting with value, default, source and how it applies."""
    path = settings.config_path
    config = read_config(path)
    return {
        "config_path": str(path),
        "settings": {name: _entry(name, knob, settings, config) for name, knob in KNOBS.items()},
    }


def _entry(name: str, knob: Knob, settings: Settings, config: dict[str, Any]) -> dict:
    running = getattr(settings, name)
    value = running
    if knob.applies == "restart" and not knob.secret:
        value = _at_next_start(name, config, running)
    entry = {
        "value": None if knob.secret else value,
        "default": None if knob.secret else _default(name),
        "source": source(name, config),
        "env": env_name(name),
        "type": _TYPES[name],
        "editable": knob.editable,
        "applies": knob.applies,
        "secret": knob.secret,
        "help": knob.help,
    }
    if knob.secret:
        entry["set"] = bool(running)
    elif value != running:
        entry["running"] = running
    bounds = (("min", knob.low), ("max", knob.high), ("min_exclusive", knob.above))
    entry.update({key: bound for key, bound in bounds if bound is not None})
    return entry


def _at_next_start(name: str, config: dict[str, Any], running: Any) -> Any:
    """What a daemon started now (without command-line flags) takes for ``name``: env >
    config > default, as load_settings resolves it; the running value when the file's
    value does not convert (that start would fail and say why)."""
    if from_env(name):
        raw: Any = os.environ[env_name(name)]
    elif name in config:
        raw = config[name]
    else:
        return _default(name)
    try:
        return coerce(name, raw, _PYTYPES[_TYPES[name]])
    except UsageError:
        return running


# -- validation -------------------------------------------------------------------------


def validate(changes: dict[str, Any], current: Settings) -> dict[str, Any]:
    """``changes`` checked and coerced to their Python types (None = back to default)."""
    if not isinstance(changes, dict):
        raise UsageError("the body must be a JSON object of setting -> value")
    out: dict[str, Any] = {}
    for name, raw in changes.items():
        knob = KNOBS.get(name)
        if knob is None:
            raise UsageError(f"unknown setting {name!r}")
        if not knob.editable:
            raise UsageError(f"setting {name} cannot be changed here")
        out[name] = None if raw is None else _check(name, raw, knob)
    if "backoff_initial" in out or "backoff_max" in out:
        low, high = (_after(out, current, k) for k in ("backoff_initial", "backoff_max"))
        if low > high:
            raise UsageError(f"backoff_initial ({low:g}) must not exceed backoff_max ({high:g})")
    port = out.get("ollama_port")
    if port and port == current.port:  # the check `corral serve` makes (api/server.py)
        raise UsageError(f"ollama_port {port} is the daemon's own port: choose another one")
    return out


def _after(changes: dict[str, Any], current: Settings, name: str) -> Any:
    """The value ``name`` will have once ``changes`` are applied."""
    if name not in changes:
        return getattr(current, name)
    return _default(name) if changes[name] is None else changes[name]


def _check(name: str, raw: Any, knob: Knob) -> Any:
    typ = _PYTYPES[_TYPES[name]]
    if typ is str:
        if not isinstance(raw, str) or len(raw) > 4096:
            raise UsageError(f"setting {name} must be a string, got {_short(raw)}")
        value = raw.strip()
        if any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in value):
            raise UsageError(
                f"setting {name} must not contain control characters or lone surrogates"
            )
        _check_text(name, value)
        return value
    check = to_int if typ is int else to_float  # JSON numbers only: strict
    bounds = {"low": knob.low, "high": knob.high}
    if knob.above is not None:
        bounds["above"] = knob.above
    return check(raw, f"setting {name}", strict=True, **bounds)


def _check_text(name: str, value: str) -> None:
    if name == "port_range":
        _ = Settings(port_range=value).ports  # raises the usual one-line UsageError
    elif name in URL_KEYS:
        try:
            parts = urlsplit(value)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018 - raises on a port that is no number
        except ValueError:  # "http://[", "http://h:x"
            ok = False
        if not ok:
            raise UsageError(f"setting {name} must be an http(s) URL, got {_short(value)}")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- routes -----------------------------------------------------------------------------


def put_schema() -> dict:
    """The PUT body as JSON Schema, for /openapi.json (the checks above are the real ones)."""
    props = {}
    for name, knob in KNOBS.items():
        if not knob.editable:
            continue
        typ = _TYPES[name]
        one: dict[str, Any] = {"type": {"int": "integer", "float": "number"}.get(typ, "string")}
        bounds = (("minimum", knob.low), ("maximum", knob.high), ("exclusiveMinimum", knob.above))
        one.update({key: bound for key, bound in bounds if bound is not None})
        if name == "port_range":
            one["pattern"] = r"^\s*[0-9]{1,5}-[0-9]{1,5}\s*$"
        elif name in URL_KEYS:
            one.update(pattern=r"^https?://[^\s/?#]+[^\u0000-\u001f\u007f]*$", maxLength=4096)
        props[name] = {"anyOf": [one, {"type": "null"}], "description": knob.help}
    return {"type": "object", "properties": props, "additionalProperties": False}


@router.get("/api/v1/settings")
async def get_settings(d: Daemon = Depends(get_daemon)) -> dict:
    """Every setting with value, default, source (env|config|default) and how it applies."""
    return describe(d.settings)


@router.put(
    "/api/v1/settings",
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": put_schema()}}}},
)
async def put_settings(
    changes: dict[str, Any] = Body(..., examples=[{"idle_ttl": 600}]),
    d: Daemon = Depends(get_daemon),
) -> dict:
    """Write settings to config.toml and apply them; ``null`` restores a default."""
    checked = validate(changes, d.settings)
    if checked:
        write_config(d.settings.config_path, checked)
    overridden = {k: env_name(k) for k in checked if from_env(k)}
    later = sorted(k for k in checked if KNOBS[k].applies == "restart" and k not in overridden)
    applied = []
    for name, value in checked.items():
        if name in overridden or name in later:  # the variable wins / bound at start
            continue
        setattr(d.settings, name, _default(name) if value is None else value)
        applied.append(name)
    return {
        **describe(d.settings),
        "updated": sorted(checked),
        "applied": sorted(applied),
        "overridden": overridden,
        "restart_required": later,
    }
