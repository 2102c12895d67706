"""One rooted exception tree for corral: every error class lives here.

    class                        status exit  code                what
    CorralError                  500    1     internal
    ├── UsageError               400    2     bad_request         bad input from the user
    │   ├── TooLarge             413          too_large           a request body over the cap
    │   ├── UnknownFlag          400          unknown_flag        not in the build's catalog
    │   ├── FlagValueError       400          flag_value          switch with a value, or none
    │   ├── OwnedFlag            400          owned_flag          --model/--port are corral's
    │   └── InvalidModelFile     400          invalid_model       not a readable GGUF
    ├── Forbidden                403    10    forbidden           the key's scope may not
    ├── NotFound                 404    3     not_found           instance, build, model unknown
    │   └── NoAsset              404          no_release_asset    no release for os/arch/backend
    ├── Conflict                 409    4     conflict            name or port taken, running
    │   ├── PortInUse            409          port_in_use
    │   ├── NoRoom               409          no_room             the memory plan does not fit
    │   ├── AlreadyInstalled     409          already_installed   <tag>-<backend> is there
    │   └── TargetExists         409          target_exists       an unpack target exists
    ├── Cancelled                409    9     cancelled           a pull or build, on request
    ├── BinaryError              424    5     no_binary           no llama-server, or it fails
    ├── UnsafeArchive            422    2     unsafe_archive      corrupt, or a refused entry
    ├── BuildFailed              500    15    build_failed        cmake, or the built binary
    ├── SourceUnavailable        502    15    source_unavailable  llama.cpp source not fetched
    ├── LaunchFailed             502    6     launch_failed       exited/timed out loading
    ├── UpstreamError            502    14    upstream_error      an instance gone or not HTTP
    │   └── UpstreamKeyError     502          upstream_key        its key file is unreadable
    ├── Busy                     503    13    busy                queue full, nothing to evict
    ├── DaemonUnavailable        503    7     daemon_unavailable  the CLI cannot reach/start it
    │   └── TLSError             503          tls_error           its certificate did not verify
    ├── StoreError               503    12    store_unavailable   corral.db corrupt, gone, r/o
    │   └── DiskFull             507    11    disk_full           no space left to write
    ├── ReleaseError             502    8     release_error       releases API/download failed
    │   └── ReleaseDigestMismatch 502         download_corrupt    (also a DownloadCorrupt)
    └── HubError                 502    8     hub_error           HuggingFace down or refused
        ├── HubAuthError         403          hub_auth            gated/private, no usable token
        └── DownloadCorrupt      502          download_corrupt    size or sha256 differs

Each error knows its HTTP status, a stable machine ``code`` and its CLI exit code; the
API renders ``{"error": {"code", "message"}}``, the CLI prints one line ``error: message``.
Only the code (with message and detail) crosses the HTTP hop: the CLI's client turns it
back into its class with :func:`by_code`, derived from this tree, so it exits as the
daemon-side error would.

Codes: each class that declares one declares its own. A class may keep an ancestor's code
(``ReleaseDigestMismatch`` is a ``DownloadCorrupt`` and says ``download_corrupt``): it
refines that error on the daemon side only, and over the wire it is its most general
ancestor with that code. Every class can be built as ``Class(message, detail=...)``
(extra attributes have defaults), which is how the client rebuilds one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # errors.py imports nothing at run time: every CLI call loads it
    from pathlib import Path


class CorralError(Exception):
    """Base of every error corral raises on purpose."""

    status = 500
    code = "internal"
    exit_code = 1

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Optional multi-line context (e.g. the last log lines of a failed launch).
        self.detail = detail

    def to_dict(self) -> dict:
        err: dict = {"code": self.code, "message": self.message}
        if self.detail:
            err["detail"] = self.detail
        return {"error": err}


class UsageError(CorralError):
    """The request or command line is malformed."""

    status = 400
    code = "bad_request"
    exit_code = 2


class UnknownFlag(UsageError):
    """A flag the selected llama-server build does not know."""

    code = "unknown_flag"


class FlagValueError(UsageError):
    """A switch was given a value, or a valued flag was given none."""

    code = "flag_value"


class OwnedFlag(UsageError):
    """A flag corral sets itself (``--model``, ``--port``) was passed in the flags."""

    code = "owned_flag"


class InvalidModelFile(UsageError):
    """The file is not a readable GGUF model (missing, truncated, corrupt, wrong version)."""

    code = "invalid_model"


class TooLarge(UsageError):
    """A request body larger than the endpoint accepts."""

    status = 413
    code = "too_large"


class Forbidden(CorralError):
    """The caller is known but may not do this (an inference key, an admin-stopped instance)."""

    status = 403
    code = "forbidden"
    exit_code = 10


class NotFound(CorralError):
    """The named instance, build or model does not exist."""

    status = 404
    code = "not_found"
    exit_code = 3


class NoAsset(NotFound):
    """The release has no asset for this os/arch/backend."""

    code = "no_release_asset"

    def __init__(
        self,
        message: str,
        *,
        tag: str = "",
        os_name: str = "",
        arch: str = "",
        backend: str = "",
        detail: str | None = None,
    ) -> None:
        super().__init__(message, detail=detail)
        self.tag, self.os_name, self.arch, self.backend = tag, os_name, arch, backend


class Conflict(CorralError):
    """The request clashes with existing state (name taken, already running)."""

    status = 409
    code = "conflict"
    exit_code = 4


class PortInUse(Conflict):
    """The requested port is already bound by another process."""

    code = "port_in_use"


class NoRoom(Conflict):
    """The launch does not fit in the devices' free memory (with what already runs).

    ``short_bytes`` says what is missing per device id (``gpu0``, ``host``)."""

    code = "no_room"

    def __init__(
        self, message: str, *, detail: str | None = None, short_bytes: dict[str, int] | None = None
    ) -> None:
        super().__init__(message, detail=detail)
        self.short_bytes = dict(short_bytes or {})


class AlreadyInstalled(Conflict):
    """``<tag>-<backend>`` is already installed (pass ``force`` to replace it)."""

    code = "already_installed"

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        name: str = "",
        binary: Path | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, detail=detail)
        self.path = path  # the build directory
        self.name = name  # e.g. "b6000-cpu"
        self.binary = binary  # its llama-server, when one is found there


class TargetExists(Conflict):
    """The directory ``safe_extract`` was asked to create already exists."""

    code = "target_exists"


class BinaryError(CorralError):
    """No usable llama-server binary was found, or it failed to run."""

    status = 424
    code = "no_binary"
    exit_code = 5


class UnsafeArchive(CorralError):
    """The archive is corrupt, not an archive, or holds an entry we refuse to unpack."""

    status = 422
    code = "unsafe_archive"
    exit_code = 2


class BuildFailed(CorralError):
    """cmake configure or build failed, or the built binary does not run."""

    status = 500
    code = "build_failed"
    exit_code = 15


class SourceUnavailable(CorralError):
    """The llama.cpp source could not be fetched (network, pip, or not a llama.cpp tree)."""

    status = 502
    code = "source_unavailable"
    exit_code = 15


class LaunchFailed(CorralError):
    """The llama-server process exited or timed out before it became ready."""

    status = 502
    code = "launch_failed"
    exit_code = 6


class UpstreamError(CorralError):
    """The instance's llama-server could not be reached, or broke the protocol."""

    status = 502
    code = "upstream_error"
    exit_code = 14


class UpstreamKeyError(UpstreamError):
    """The key an instance wants (its ``--api-key-file``) cannot be read: 502, not a 500."""

    code = "upstream_key"


class Busy(CorralError):
    """Too many requests wait for a model, or no instance can be evicted to make room.

    ``retry_after`` (seconds) is sent as the ``Retry-After`` header."""

    status = 503
    code = "busy"
    exit_code = 13

    def __init__(self, message: str, retry_after: int = 5, *, detail: str | None = None) -> None:
        super().__init__(message, detail=detail)
        self.retry_after = retry_after


class DaemonUnavailable(CorralError):
    """The CLI could not reach the daemon, nor start one."""

    status = 503
    code = "daemon_unavailable"
    exit_code = 7


class TLSError(DaemonUnavailable):
    """The daemon's TLS certificate did not verify, or the TLS handshake failed.

    Raised by the CLI's client only (no daemon sends it), with the reason."""

    code = "tls_error"


class StoreError(CorralError):
    """The store cannot be used: corral.db is corrupt, unreadable, read-only or was deleted."""

    status = 503
    code = "store_unavailable"
    exit_code = 12


class DiskFull(StoreError):
    """No space left on the device holding CORRAL_HOME (the write was not made)."""

    status = 507
    code = "disk_full"
    exit_code = 11


class ReleaseError(CorralError):
    """The releases API or download server failed or answered something unusable."""

    status = 502
    code = "release_error"
    exit_code = 8


class HubError(CorralError):
    """The Hub could not be reached, or answered with an error we cannot fix by retrying."""

    status = 502
    code = "hub_error"
    exit_code = 8


class HubAuthError(HubError):
    """A gated or private repo, and no token (or one without access)."""

    status = 403
    code = "hub_auth"


class DownloadCorrupt(HubError):
    """A downloaded file's size or sha256 does not match what its source (the Hub, a
    release) states."""

    code = "download_corrupt"


class ReleaseDigestMismatch(ReleaseError, DownloadCorrupt):
    """The downloaded release asset's sha256 differs from the digest the release states.

    A ReleaseError (what failed) and a DownloadCorrupt (how): the wire code is the latter's."""

    code = "download_corrupt"


class Cancelled(CorralError):
    """An operation (a pull) was cancelled on request."""

    status = 409
    code = "cancelled"
    exit_code = 9


def walk(root: type[CorralError] = CorralError) -> list[type[CorralError]]:
    """``root`` and every class of this module below it, each once, ancestors first.

    A subclass defined in another module is not part of the tree (and the test of the
    tree says where it should go): what the table holds must not depend on which modules
    a process happened to import."""
    seen: list[type[CorralError]] = []
    todo = [root]
    while todo:
        cls = todo.pop(0)
        if cls not in seen and cls.__module__ == __name__:
            seen.append(cls)
            todo.extend(cls.__subclasses__())
    return seen


def by_code() -> dict[str, type[CorralError]]:
    """Each wire code to the most general class that carries it (see the module docstring)."""
    table: dict[str, type[CorralError]] = {}
    for cls in walk():
        known = table.get(cls.code)
        if known is None or issubclass(known, cls):
            table[cls.code] = cls
    return table
