"""/api/v1/settings: see and change corral's knobs (the web UI's Settings view).

``GET`` answers every setting a user may want to see: its effective value, its default,
where the value comes from (``env`` > ``config`` > ``default``), whether it is editable
here and whether a change applies ``live`` or after a daemon ``restart``. Secrets
(``api_key``, ``hf_token``) show only whether they are set.

``PUT`` takes ``{key: value}``; a ``null`` value removes the key from the config file
(back to the default). Every value is checked first (type and range, with the
converters of :mod:`corral.types`); one bad key and nothing is written. The keys
are then written to ``CORRAL_HOME/config.toml`` and set on the daemon's own
:class:`Settings`, which the supervisor, router, pulls and builds share and read at each
use — so every editable key applies live. A key set by a ``CORRAL_*`` variable is
written too (a later daemon without the variable uses it) but not applied: the
variable still wins, and the answer says so.

The config file is edited as a document with :mod:`tomlkit`: comments, ordering, blank
lines and keys corral does not know stay as the user wrote them, and only the changed
values differ. The result is checked with :mod:`tomllib` before it atomically replaces
the old file.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Body, Depends

from corral.api.deps import Daemon, get_daemon
from corral.errors import UsageError
from corral.settings import Settings
from corral.types import to_float, to_int

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


def env_name(name: str) -> str:
    return f"CORRAL_{name.upper()}"


def _from_env(name: str) -> bool:
    """The same test load_settings applies: a set, non-empty variable wins."""
    return bool(os.environ.get(env_name(name)))


# -- reading ----------------------------------------------------------------------------


def _config_text(path: Path) -> str:
    """The config file's text ("" when there is none) once it is known to parse."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 ({exc}); fix or remove it first")
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML ({exc}); fix or remove it first")
    return text


def describe(settings: Settings) -> dict:
    """The GET answer: every known setting with value, default, source and how it applies."""
    path = settings.home / "config.toml"
    config = tomllib.loads(_config_text(path))
    out = {}
    for name, knob in KNOBS.items():
        source = "env" if _from_env(name) else "config" if name in config else "default"
        value = getattr(settings, name)
        entry = {
            "value": None if knob.secret else value,
            "default": None if knob.secret else _default(name),
            "source": source,
            "env": env_name(name),
            "type": _TYPES[name],
            "editable": knob.editable,
            "applies": knob.applies,
            "secret": knob.secret,
            "help": knob.help,
        }
        if knob.secret:
            entry["set"] = bool(value)
        bounds = (("min", knob.low), ("max", knob.high), ("min_exclusive", knob.above))
        entry.update({key: bound for key, bound in bounds if bound is not None})
        out[name] = entry
    return {"config_path": str(path), "settings": out}


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


# -- TOML writing -----------------------------------------------------------------------


def edit_config(text: str, changes: dict[str, Any]) -> str:
    """``text`` with each changed key set (added at the end of the top-level keys when it
    is new) and each None key removed; everything else stays as the user wrote it:
    comments, order, blank lines, unknown keys and tables (tomlkit edits the document).

    The result is checked to read back as the old values updated with ``changes``.
    """
    import tomlkit  # only a PUT needs it

    doc = tomlkit.parse(text)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = _scalar(value)
    result = tomlkit.dumps(doc)
    want = {k: v for k, v in {**tomllib.loads(text), **changes}.items() if v is not None}
    if tomllib.loads(result) != want:  # tomlkit keeps what it parsed; checked all the same
        raise UsageError("config.toml could not be edited in place; edit the file by hand")
    return result


def _scalar(value: Any) -> Any:
    """A value the config file can hold: a string, a bool, an int or a finite float."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    if not isinstance(value, (str, bool, int, float)):
        raise TypeError(f"cannot write {type(value).__name__} to the config file")
    return value


def write_config(path: Path, changes: dict[str, Any]) -> None:
    """Apply ``changes`` to the config file atomically, keeping its permissions."""
    text = _config_text(path)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600  # it may come to hold a token
    try:
        new = edit_config(text, changes)
    except (TypeError, ValueError) as exc:  # a value no TOML scalar carries
        raise UsageError(f"{path}: {exc}; edit the file by hand")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(new)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
        write_config(d.settings.home / "config.toml", checked)
    overridden = {k: env_name(k) for k in checked if _from_env(k)}
    applied = []
    for name, value in checked.items():
        if name in overridden:
            continue
        setattr(d.settings, name, _default(name) if value is None else value)
        applied.append(name)
    return {
        **describe(d.settings),
        "updated": sorted(checked),
        "applied": sorted(applied),
        "overridden": overridden,
        "restart_required": sorted(k for k in applied if KNOBS[k].applies == "restart"),
    }
