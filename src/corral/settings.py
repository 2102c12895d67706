"""Settings: environment ``CORRAL_*`` > ``CORRAL_HOME/config.toml`` > defaults.

Every piece of state lives under ``CORRAL_HOME`` (default ``~/.corral``)::

    corral.db      SQLite store (WAL, numbered migrations)
    logs/          daemon.log and one <instance>.log per instance (rotated)
    bin/           llama-server builds corral installed
    models/        GGUF files corral downloaded
    cache/         flag catalogs per build

The config file uses the same names as the environment variables, lower-cased and
without the prefix: ``port_range = "8081-8999"``, ``probe_interval = 10``. It is edited
(by ``PUT /api/v1/settings`` and ``corral setup``) through :func:`write_config`, as a
document with :mod:`tomlkit`: comments, ordering, blank lines and keys corral does not
know stay as the user wrote them, and only the changed values differ. The result is
checked with :mod:`tomllib` before it atomically replaces the old file.

File modes. CORRAL_HOME holds conversations, keys' hashes, logs with prompts: it is
private to its user. The root fix is the process umask: the CLI entry point and the
daemon call :func:`private_umask` (``0o077``) first thing, so every file and folder they
(and the ``llama-server`` processes they spawn, whose logs land in ``logs/``) create is
0600/0700 — the SQLite ``-wal``/``-shm`` files, ``daemon.log``, caches and downloads
included — without each writer remembering a mode. A home made by an older corral (or
by hand) is tightened by :func:`secure_home`, run by :meth:`Settings.ensure_dirs` (daemon
start) and whenever the CLI opens the store: it removes the group/other bits of the home
folder itself and of the state files corral writes at its top level, in ``logs/`` and in
``cache/`` (``bin/`` and ``models/`` are not walked: they can be large, and the 0700
home already keeps others out of them), and logs one warning naming what it changed.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from corral.errors import UsageError
from corral.types import PORT_MAX, PORT_MIN, to_bool, to_float, to_int

DEFAULT_DAEMON_PORT = 9380
#: Group and other get nothing under CORRAL_HOME (see the module docstring).
PRIVATE_UMASK = 0o077
#: Shortest CORRAL_API_KEY accepted (a key that guards a non-loopback bind must not be guessable).
MIN_API_KEY_LENGTH = 16

#: The daemon's local admin token, in CORRAL_HOME (mode 0600): written by the daemon
#: (keys.py), read by the CLI client on loopback.
TOKEN_FILE = "daemon.token"
#: The settings file in CORRAL_HOME (see the module docstring).
CONFIG_FILE = "config.toml"

log = logging.getLogger("corral.settings")


def private_umask() -> None:
    """Make files this process creates private to its user (0600 files, 0700 folders)."""
    os.umask(PRIVATE_UMASK)


#: State files at the top of CORRAL_HOME that secure_home tightens, and folders it walks.
_TOP_FILES = (
    "corral.db",
    "corral.db-wal",
    "corral.db-shm",
    "config.toml",
    "daemon.lock",
    "daemon.token",
)
_WALKED_DIRS = ("logs", "cache")


def _tighten(path: Path, changed: list[str]) -> None:
    try:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink() or not mode & 0o077:
            return
        os.chmod(path, mode & ~0o077)
    except FileNotFoundError:
        return
    except OSError as exc:  # a read-only home: the store says so more usefully
        log.warning("could not make %s private: %s", path, exc.strerror or exc)
        return
    changed.append(f"{path} {mode:04o} -> {mode & ~0o077:04o}")


def secure_home(home: Path) -> list[str]:
    """Remove group/other access from CORRAL_HOME and the state files in it; return (and
    log once) what changed. Cheap when nothing needs changing: a few ``stat`` calls."""
    changed: list[str] = []
    if not home.is_dir():
        return changed
    _tighten(home, changed)
    for name in _TOP_FILES:
        _tighten(home / name, changed)
    for name in _WALKED_DIRS:
        folder = home / name
        if folder.is_dir() and not folder.is_symlink():
            _tighten(folder, changed)
            for sub in folder.rglob("*"):
                _tighten(sub, changed)
    if changed:
        log.warning("made CORRAL_HOME private to its user: %s", "; ".join(changed))
    return changed


def _home_from_env() -> Path:
    raw = os.environ.get("CORRAL_HOME")
    return Path(raw).expanduser() if raw else Path.home() / ".corral"


@dataclass
class Settings:
    """All knobs of corral, resolved once per process."""

    home: Path = field(default_factory=_home_from_env)
    host: str = "127.0.0.1"
    port: int = DEFAULT_DAEMON_PORT
    # a second port answering the Ollama API (and /v1/*), e.g. 11434 (Ollama's); 0 = off
    ollama_port: int = 0
    url: str = ""  # where the CLI finds the daemon; derived from host/port when empty
    llama_server: str = ""  # binary path (CORRAL_LLAMA_SERVER)
    port_range: str = "8081-8999"
    api_key: str = ""  # required on every API call when set; needed for non-loopback binds
    hf_endpoint: str = "https://huggingface.co"  # the Hub, a mirror, or a test fake
    hf_token: str = ""  # else huggingface_hub's own (HF_TOKEN, `hf auth login`)
    releases_url: str = "https://api.github.com/repos/ggml-org/llama.cpp/releases"
    # supervision
    probe_interval: float = 10.0
    probe_timeout: float = 5.0
    probe_failures: int = 3
    load_timeout: float = 600.0
    stop_timeout: float = 10.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    crash_limit: int = 5
    crash_window: float = 300.0
    idle_ttl: float = 1800.0  # seconds an instance may sit unused before it is stopped; 0 = never
    router_max_instances: int = (
        4  # router-started instances running at once; LRU beyond; 0 = no cap
    )
    # host RAM router-started instances may hold (planned host bytes, else file size); 0 = none
    router_memory_budget: int = 0
    router_queue_limit: int = 256  # requests waiting for one loading model; more get 503
    router_queue_timeout: float = 600.0  # seconds a request waits for its model to load, then 503
    router_heartbeat: float = (
        5.0  # seconds between SSE comments sent to streaming clients while loading
    )
    # a request (an admin's) for a Hub model nobody has pulls it first, on the best node
    router_pull_missing: bool = False
    # memory planning (see corral fit)
    fit: bool = True  # plan every launch that does not fix -ngl/-ts/--device itself
    fit_devices: str = ""  # simulate the devices ("12GiB,8GiB", "none"); empty = detect them
    fit_margin_mib: int = 1024  # kept free on every device, like llama.cpp's --fit-target
    fit_learn: bool = True  # planned launches get --verbosity 4: real bytes per device are read
    # linked nodes (corral nodes): seconds between two polls of each; 3 misses = down
    node_poll_interval: float = 10.0
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 3

    # -- derived paths ---------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.home / "corral.db"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def bin_dir(self) -> Path:
        return self.home / "bin"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_FILE

    @property
    def daemon_url(self) -> str:
        if self.url:
            return self.url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def ports(self) -> tuple[int, int]:
        """The instance port range as (low, high), inclusive."""
        try:
            low, high = (int(p) for p in self.port_range.split("-", 1))
        except ValueError:
            raise UsageError(f"port_range must look like 8081-8999, got {self.port_range!r}")
        if not (PORT_MIN <= low <= high <= PORT_MAX):
            raise UsageError(f"port_range {self.port_range!r} is not within {PORT_MIN}-{PORT_MAX}")
        return low, high

    def ensure_dirs(self) -> None:
        """Create the folders of CORRAL_HOME (0700) and tighten an existing, looser home.

        Raises StoreError (DiskFull for ENOSPC) when the home cannot be created."""
        from corral.store.db import translated

        with translated(self.home):
            for d in (self.home, self.logs_dir, self.bin_dir, self.models_dir, self.cache_dir):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
        secure_home(self.home)


def coerce(name: str, value: object, typ: type) -> object:
    """``value`` (from the environment, config.toml or a caller) as setting ``name`` of
    type ``typ``; a one-line UsageError naming the setting otherwise."""
    what = f"setting {name}"
    if typ is Path:
        return Path(str(value)).expanduser()
    if typ is int:
        return to_int(value, what)
    if typ is float:
        return to_float(value, what)
    if typ is bool:
        return to_bool(value, what)
    return str(value)


def load_settings(**overrides: object) -> Settings:
    """Resolve settings: explicit overrides > env ``CORRAL_*`` > config file > defaults."""
    home = Path(str(overrides["home"])) if "home" in overrides else _home_from_env()
    values: dict[str, object] = {}
    config = home / CONFIG_FILE
    if config.is_file():
        try:
            values.update(tomllib.loads(config.read_text()))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{config}: {exc}")
    types = {f.name: f.type for f in fields(Settings)}
    typemap = {"Path": Path, "str": str, "int": int, "float": float, "bool": bool}
    for name in types:
        if from_env(name):
            values[name] = os.environ[env_name(name)]
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["home"] = home
    unknown = set(values) - set(types)
    if unknown:
        raise UsageError(f"unknown setting(s) in {config}: {', '.join(sorted(unknown))}")
    kwargs = {k: coerce(k, v, typemap[str(types[k])]) for k, v in values.items()}
    return Settings(**kwargs)  # type: ignore[arg-type]


def env_name(name: str) -> str:
    """The environment variable of setting ``name``: ``CORRAL_<NAME>``."""
    return f"CORRAL_{name.upper()}"


def from_env(name: str) -> bool:
    """Whether the environment sets ``name`` (a set, non-empty variable wins)."""
    return bool(os.environ.get(env_name(name)))


def source(name: str, config: dict[str, Any]) -> str:
    """Where setting ``name``'s value comes from: ``env``, ``config`` or ``default``
    (``config``: the parsed config file, from :func:`read_config`)."""
    return "env" if from_env(name) else "config" if name in config else "default"


# -- the config file as a document ------------------------------------------------------


def config_text(path: Path) -> str:
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


def read_config(path: Path) -> dict[str, Any]:
    """The config file's keys and values ({} when there is none)."""
    return tomllib.loads(config_text(path))


def edit_config(text: str, changes: dict[str, Any]) -> str:
    """``text`` with each changed key set (added at the end of the top-level keys when it
    is new) and each None key removed; everything else stays as the user wrote it:
    comments, order, blank lines, unknown keys and tables (tomlkit edits the document).

    The result is checked to read back as the old values updated with ``changes``.
    """
    import tomlkit  # only a write needs it

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
    """Apply ``changes`` (None removes a key) to the config file atomically, keeping its
    permissions; a new file is 0600 (it may come to hold a token)."""
    text = config_text(path)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
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
