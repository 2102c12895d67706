"""Domain types: the names, numbers and policies corral checks, each written once.

Like Supervisor's ``datatypes.py``: one leaf module (stdlib and :mod:`corral.errors`
only, cheap to import: the CLI uses it) that every layer takes its facts from.

- **Names**: :data:`NAME_PATTERN` (instances, presets, models), :func:`check_name`,
  :func:`name_from` (free text made a name), :func:`unique_name` (``base``,
  ``base-2``, ``base-3`` ... within 64 characters).
- **Restart policies**: :data:`RESTART_POLICIES`, :data:`DEFAULT_RESTART`,
  :func:`check_restart`; :data:`Restart` is the same tuple as a ``Literal`` for pydantic.
- **Ports**: :func:`check_port`; :data:`Port` for pydantic.
- **Environment names**: :data:`ENV_NAME_PATTERN`.
- **API keys**: :data:`KEY_SCOPES`, :data:`KEY_NAME_MAX`.
- **Files**: :func:`inside` ("is this path inside that folder", links followed),
  :func:`is_mmproj`.
- **Scalars**: :func:`to_bool`, :func:`to_int`, :func:`to_float`, :func:`to_seconds`:
  range-checked, and every failure is a one-line :class:`~corral.errors.UsageError`.
  ``strict=True`` takes no text, only values that already are numbers or bools (JSON,
  YAML); otherwise text is read too (environment variables, command lines, config).

:func:`schema` hands the facts the web UI needs to ``GET /api/v1/schema``, so the
JavaScript does not type them again. Patterns are full-match (``re.fullmatch``; in JS
``new RegExp("^(?:" + p + ")$")``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Container
from pathlib import Path
from typing import Annotated, Literal

from corral.errors import UsageError

# -- names -----------------------------------------------------------------------------

NAME_MAX = 64
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
NAME_RE = re.compile(NAME_PATTERN)  # always .fullmatch


def check_name(value: object, what: str = "instance name") -> str:
    """``value`` if it is a valid name (letters, digits, ``.``, ``_``, ``-``; max 64)."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise UsageError(
            f"invalid {what} {_shown(value)}: use letters, digits, '.', '_' or '-' (max 64)"
        )
    return value


_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def name_from(text: str, fallback: str, *, max_length: int = NAME_MAX) -> str:
    """A valid name made of free text (a file name, an INI section): runs of other
    characters become ``-``, the ends are trimmed, cut to ``max_length``; ``fallback``
    when nothing is left."""
    name = _NOT_IN_NAME.sub("-", text).strip("-._")[:max_length].rstrip("-._")
    return name or fallback


def unique_name(base: str, taken: Container[str], *, max_length: int = NAME_MAX) -> str:
    """``base``, or ``base-2``, ``base-3``... the first not in ``taken``.

    ``base`` is cut so that the name with its suffix stays within ``max_length``.
    """
    if base not in taken:
        return base
    n = 2
    while True:
        suffix = f"-{n}"
        candidate = base[: max_length - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
        n += 1


# -- restart policies ------------------------------------------------------------------

RESTART_POLICIES = ("on-failure", "always", "never")
DEFAULT_RESTART = "on-failure"
#: The policies as a type, for pydantic models (same tuple, not typed again).
Restart = Literal[RESTART_POLICIES]  # type: ignore[valid-type]


def check_restart(value: object, what: str = "restart") -> str:
    """``value`` if it is one of :data:`RESTART_POLICIES`."""
    if not isinstance(value, str) or value not in RESTART_POLICIES:
        raise UsageError(
            f"{what} must be one of {', '.join(RESTART_POLICIES)}, got {_shown(value)}"
        )
    return value


# -- ports and environment names -------------------------------------------------------

PORT_MIN, PORT_MAX = 1, 65535


class Between:
    """Pydantic metadata: an int or float within ``low..high`` (inclusive).

    Uses pydantic's public ``__get_pydantic_core_schema__`` hook, so that this module
    need not import pydantic (the CLI imports it and must stay fast).
    """

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def __get_pydantic_core_schema__(self, source, handler):  # noqa: ANN001 - pydantic's
        schema = handler(source)
        schema.update(ge=self.low, le=self.high)
        return schema


#: A port number, for pydantic models.
Port = Annotated[int, Between(PORT_MIN, PORT_MAX)]


def check_port(value: object, what: str = "port") -> int:
    """A port number (1-65535) from an int or its text."""
    try:
        return to_int(value, what, low=PORT_MIN, high=PORT_MAX)
    except UsageError:
        raise UsageError(
            f"{what} must be a port number ({PORT_MIN}-{PORT_MAX}), got {_shown(value)}"
        ) from None


ENV_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
ENV_NAME_RE = re.compile(ENV_NAME_PATTERN)  # always .fullmatch


# -- API keys --------------------------------------------------------------------------


#: ``admin`` may call everything; ``inference`` only the OpenAI router (``/v1/*``).
def check_host(value: object, what: str = "--host") -> str:
    """An IP address to bind (``localhost`` is 127.0.0.1), normalised. A host *name* is
    refused: resolving it would make a start depend on (and send queries to) a DNS server,
    and llama-server's unix-socket form (``*.sock``) cannot be probed or routed. For the
    daemon, its instances and its service alike."""
    import ipaddress

    if value == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(value))  # type: ignore[arg-type]
    except ValueError:
        raise UsageError(
            f"{what} must be an IP address of this machine (127.0.0.1, 0.0.0.0, "
            f"::1 ...), not {_shown(value)}"
        ) from None


KEY_SCOPES = ("admin", "inference")
KEY_NAME_MAX = 64


# -- files -----------------------------------------------------------------------------


def inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """``path`` resolved (links followed; relative to ``root`` when not absolute), if
    it lies inside ``root``; a UsageError when it escapes it (``..``, a link) or cannot
    be resolved (a NUL byte, a name too long)."""
    try:
        base = Path(root).resolve()
        resolved = (base / path).resolve()
        if resolved.is_relative_to(base):
            return resolved
    except (OSError, ValueError, RuntimeError):
        pass
    raise UsageError(f"{_shown(os.fspath(path))} is not inside {os.fspath(root)}")


def is_inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Whether :func:`inside` accepts ``path``."""
    try:
        inside(root, path)
    except UsageError:
        return False
    return True


def is_mmproj(path: str | os.PathLike[str]) -> bool:
    """A vision projector by its file name (``mmproj*.gguf``, any case)."""
    name = os.path.basename(os.fspath(path)).lower()
    return name.startswith("mmproj") and name.endswith(".gguf")


# -- scalars ---------------------------------------------------------------------------

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def to_bool(value: object, what: str, *, strict: bool = False) -> bool:
    """A bool; unless ``strict``, also from ``1/true/yes/on`` and ``0/false/no/off``."""
    if isinstance(value, bool):
        return value
    if not strict and isinstance(value, (str, int)):
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise UsageError(f"{what} must be true or false, got {_shown(value)}")


def to_int(
    value: object,
    what: str,
    *,
    low: int | None = None,
    high: int | None = None,
    strict: bool = False,
) -> int:
    """A whole number within ``low..high`` (inclusive, either may be open)."""
    number = _number(value, what, strict)
    if isinstance(number, float):
        if not number.is_integer():
            raise UsageError(f"{what} must be a whole number, got {_shown(value)}")
        number = int(number)
    _check_range(number, what, low, high)
    return number


def to_float(
    value: object,
    what: str,
    *,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
    strict: bool = False,
) -> float:
    """A finite number within ``low..high`` (inclusive) and over ``above`` (exclusive)."""
    number = float(_number(value, what, strict))
    if not math.isfinite(number):
        raise UsageError(f"{what} must be a finite number, got {_shown(value)}")
    _check_range(number, what, low, high, above)
    return number


def to_seconds(value: object, what: str, *, strict: bool = False) -> float:
    """A duration in seconds, >= 0 (0 = never, where a timeout or TTL is meant)."""
    try:
        return to_float(value, what, low=0, strict=strict)
    except UsageError:
        raise UsageError(
            f"{what} must be a number of seconds >= 0 (0 = never), got {_shown(value)}"
        ) from None


def _number(value: object, what: str, strict: bool) -> int | float:
    """An int or float as given; unless ``strict``, also read from text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if not strict and isinstance(value, str):
        text = value.strip()
        for parse in (int, float):
            try:
                return parse(text)
            except ValueError:
                pass
    raise UsageError(f"{what} must be a number, got {_shown(value)}")


def _check_range(
    number: float,
    what: str,
    low: float | None,
    high: float | None,
    above: float | None = None,
) -> None:
    if low is not None and number < low:
        raise UsageError(f"{what} must be >= {_num(low)}, got {_num(number)}")
    if above is not None and number <= above:
        raise UsageError(f"{what} must be > {_num(above)}, got {_num(number)}")
    if high is not None and number > high:
        raise UsageError(f"{what} must be <= {_num(high)}, got {_num(number)}")


def _num(number: float) -> str:
    """An int as it is, a float in its short form (1e+300, 0.5)."""
    return str(number) if isinstance(number, int) else f"{number:g}"


def _shown(value: object) -> str:
    """``value`` for a one-line message: its repr, cut to 200 characters."""
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


# -- served to the UI ------------------------------------------------------------------


def schema() -> dict:
    """What the web UI checks before it sends: ``GET /api/v1/schema``."""
    return {
        "instance_name": {"pattern": NAME_PATTERN, "max_length": NAME_MAX},
        "restart_policies": list(RESTART_POLICIES),
        "default_restart": DEFAULT_RESTART,
        "port": {"min": PORT_MIN, "max": PORT_MAX},
        "env_name": {"pattern": ENV_NAME_PATTERN},
    }
