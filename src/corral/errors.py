"""One rooted exception tree for corral.

    CorralError                      500, exit 1
    ├── UsageError                   400, exit 2   bad input from the user
    │   ├── TooLarge                 413           a request body over the cap
    │   ├── UnknownFlag              400           flag not in the build's catalog
    │   ├── FlagValueError           400           switch given a value / value missing
    │   ├── OwnedFlag                400           --model/--port are corral's to set
    │   └── InvalidModelFile         400           not a readable GGUF
    ├── Forbidden                    403, exit 10  the key's scope may not do that
    ├── NotFound                     404, exit 3   instance, build, model unknown
    ├── Conflict                     409, exit 4   name or port taken, already running
    │   ├── PortInUse                409
    │   └── NoRoom                   409           the memory plan says it does not fit
    ├── BinaryError                  424, exit 5   no llama-server, or it does not run
    ├── LaunchFailed                 502, exit 6   the process exited or timed out while loading
    ├── DaemonUnavailable            503, exit 7   the CLI could not reach or start the daemon
    ├── StoreError                   503, exit 12  corral.db corrupt, unreadable, read-only, gone
    │   └── DiskFull                 507, exit 11  no space left to write the store, a log, a file
    └── HubError                     502, exit 8   HuggingFace unreachable or refused
        ├── HubAuthError             403           gated or private repo without a usable token
        └── DownloadCorrupt          502           size or sha256 differs from what the Hub states

Each error knows its HTTP status, a stable machine ``code`` and its CLI exit code; the
API renders ``{"error": {"code", "message"}}``, the CLI prints one line ``error: message``.
"""

from __future__ import annotations


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


class BinaryError(CorralError):
    """No usable llama-server binary was found, or it failed to run."""

    status = 424
    code = "no_binary"
    exit_code = 5


class LaunchFailed(CorralError):
    """The llama-server process exited or timed out before it became ready."""

    status = 502
    code = "launch_failed"
    exit_code = 6


class DaemonUnavailable(CorralError):
    """The CLI could not reach the daemon, nor start one."""

    status = 503
    code = "daemon_unavailable"
    exit_code = 7


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
    """A downloaded file's size or sha256 does not match what the Hub states."""

    code = "download_corrupt"


class Cancelled(CorralError):
    """An operation (a pull) was cancelled on request."""

    status = 409
    code = "cancelled"
    exit_code = 9
