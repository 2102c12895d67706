"""What a launch is made of, and the checks on it that need no running supervisor.

:class:`LaunchSpec` is what a user (CLI, API, preset, router) asks for; the supervisor
turns it into a process. It lives below the supervisor so that presets, the memory
planner and ``corral fit`` can use it without importing asyncio, psutil and the
process machinery (``corral fit`` must stay fast).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from corral.errors import InvalidModelFile, UsageError
from corral.types import DEFAULT_RESTART, ENV_NAME_RE


@dataclass
class LaunchSpec:
    """What a user asks for: a model, flags, and optionally a name, port, policy, binary."""

    model: str
    flags: list[str] = field(default_factory=list)
    name: str | None = None
    port: int | None = None
    restart: str = DEFAULT_RESTART
    binary: str | None = None
    build_id: int | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra environment (CUDA_VISIBLE_DEVICES...)
    preset: str | None = None  # the preset it came from (recorded, shown)
    origin: str = "user"  # 'router' when started on demand by /v1/*
    pinned: bool = False  # never stopped by idle TTL nor evicted
    idle_ttl: float | None = None  # None = settings.idle_ttl; 0 = never
    aliases: list[str] = field(default_factory=list)  # more names /v1/* requests may use
    fit: bool = True  # plan memory (-ngl, -ts, --device, -c, KV) unless the flags fix it


def check_env(env: dict) -> dict[str, str]:
    """Environment additions as str->str; a bad name or value is a UsageError."""
    if not isinstance(env, dict):
        raise UsageError("env must be a mapping of NAME to value")
    out = {}
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_NAME_RE.fullmatch(key):
            raise UsageError(f"invalid environment variable name {key!r}")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise UsageError(f"environment variable {key} needs a string value")
        value = str(value)
        if "\0" in value:
            raise UsageError(f"environment variable {key} holds a NUL byte")
        out[key] = value
    return out


def check_model_file(model: str) -> Path:
    """A GGUF path that exists and starts with the GGUF magic, else InvalidModelFile."""
    try:
        path = Path(model).expanduser()
    except RuntimeError as exc:  # "~nosuchuser/..."
        raise InvalidModelFile(f"model path {model!r}: {exc}")
    if "\0" in model:
        raise InvalidModelFile("model path holds a NUL byte")
    try:
        found = path.is_file()
    except OSError as exc:  # e.g. a name too long for the filesystem
        raise InvalidModelFile(f"model path {model[:200]!r}: {exc.strerror}") from None
    if not found:
        raise InvalidModelFile(f"model file not found: {path}")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise InvalidModelFile(f"cannot read {path}: {exc.strerror}")
    if magic != b"GGUF":
        raise InvalidModelFile(f"{path} is not a GGUF file (bad magic {magic!r})")
    return path.resolve()
