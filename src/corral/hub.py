"""HuggingFace: references users type, search, quant listing, and verified downloads.

Metadata (search, file lists with LFS sha256, URLs, auth headers) goes through
``huggingface_hub`` with the endpoint passed explicitly (``CORRAL_HF_ENDPOINT``; the
library reads ``HF_ENDPOINT`` only at import). The bytes are streamed by corral into
``CORRAL_HOME/models/<org>/<repo>/.partial/<file>.part`` and resumed with HTTP Range from
whatever is on disk, so a pull killed at any point (Ctrl-C, kill -9, a dropped connection,
a 5xx) continues where it stopped: huggingface_hub 2.x deletes its own partial file on
failure. A file is moved into place, and enters the index, only after its size and
sha256 match what the Hub states.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from corral.errors import (
    Cancelled,
    DownloadCorrupt,
    HubAuthError,
    HubError,
    NotFound,
    UsageError,
)
from corral.gguf import quant_from_filename
from corral.types import is_inside, is_mmproj

DEFAULT_QUANT = "Q4_K_M"
MAX_RETRY_AFTER = 300.0  # longer waits fail the pull with the Hub's figure instead
DEFAULT_ENDPOINT = "https://huggingface.co"
SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf\Z", re.IGNORECASE)
#: Most repos one search answers (the Hub pages beyond; the CLI and API cap here).
SEARCH_LIMIT = 100
#: A branch, tag or commit (one path segment here: ``org/repo@REV``); always .fullmatch.
REVISION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
QUANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")  # Q4_K_M, UD-Q4_K_XL; .fullmatch
REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")  # .fullmatch
HOSTS = ("hf.co", "huggingface.co", "www.huggingface.co")


@dataclass(frozen=True)
class ModelRef:
    """What a user typed, parsed: a repo plus a quant, or one file in a repo."""

    repo: str
    revision: str = "main"
    quant: str | None = None
    filename: str | None = None

    def __str__(self) -> str:
        out = self.repo + (f"@{self.revision}" if self.revision != "main" else "")
        if self.filename:
            return f"{out}/{self.filename}"
        return out + (f":{self.quant}" if self.quant else "")


def parse_ref(text: str) -> ModelRef:
    """Parse ``org/repo[:QUANT]``, ``hf.co/org/repo:Q``, ``org/repo@rev:Q``,
    ``org/repo/path/file.gguf`` and ``https://huggingface.co/org/repo/resolve/REV/FILE``."""
    raw = text.strip()
    if raw.startswith(("http://", "https://")):
        parts = urlsplit(raw)
        segs = [s for s in parts.path.split("/") if s]
        if len(segs) >= 5 and segs[2] in ("resolve", "blob"):
            return _checked(
                ModelRef(repo="/".join(segs[:2]), revision=segs[3], filename="/".join(segs[4:])),
                text,
            )
        if len(segs) == 2:
            return _checked(ModelRef(repo="/".join(segs), quant=DEFAULT_QUANT), text)
        raise UsageError(f"cannot read a model reference from URL {text!r}")
    for host in HOSTS:
        if raw.lower().startswith(host + "/"):
            raw = raw[len(host) + 1 :]
            break
    quant = None
    head = raw
    if ":" in raw:
        head, quant = raw.rsplit(":", 1)
        if not quant:
            raise UsageError(f"empty quant in {text!r}")
    revision = "main"
    segs = head.split("/")
    if len(segs) < 2:
        raise UsageError(f"{text!r} is not a HuggingFace reference (expected org/repo[:QUANT])")
    repo_name = segs[1]
    if "@" in repo_name:
        repo_name, revision = repo_name.split("@", 1)
    repo = f"{segs[0]}/{repo_name}"
    filename = "/".join(segs[2:]) or None
    if filename and quant:
        raise UsageError(f"{text!r} names a file and a quant: give one of them")
    if filename and not filename.lower().endswith(".gguf"):
        raise UsageError(f"{filename!r} is not a .gguf file")
    return _checked(
        ModelRef(
            repo=repo,
            revision=revision or "main",
            quant=None if filename else (quant or DEFAULT_QUANT),
            filename=filename,
        ),
        text,
    )


def _checked(ref: ModelRef, text: str) -> ModelRef:
    if not REPO_RE.fullmatch(ref.repo):
        raise UsageError(f"{text!r}: {ref.repo!r} is not a valid repo id")
    if not REVISION_RE.fullmatch(ref.revision):
        raise UsageError(f"{text!r}: {ref.revision!r} is not a valid revision")
    if ref.quant is not None and not QUANT_RE.fullmatch(ref.quant):
        raise UsageError(f"{text!r}: {ref.quant!r} is not a quant name (like Q4_K_M)")
    if ref.filename and any(ord(c) < 0x20 or ord(c) == 0x7F for c in ref.filename):
        raise UsageError(f"{text!r}: a file name may not hold control characters")
    if ref.filename and (".." in ref.filename.split("/") or ref.filename.startswith("/")):
        raise UsageError(f"{text!r}: file paths may not leave the repo")
    return ref


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int | None
    sha256: str | None  # LFS sha256 (GGUFs are always LFS on the Hub)


@dataclass
class QuantGroup:
    """One quant of a repo: a single GGUF, or every part of a split GGUF in order."""

    quant: str
    files: list[HubFile]

    @property
    def total_size(self) -> int:
        return sum(f.size or 0 for f in self.files)

    def to_dict(self) -> dict:
        return {
            "quant": self.quant,
            "size": self.total_size,
            "parts": len(self.files),
            "files": [f.path for f in self.files],
        }


@dataclass
class PullPlan:
    repo: str
    revision: str  # the commit sha the files are pinned to
    quant: str | None
    files: list[HubFile]
    mmproj: HubFile | None = None

    @property
    def all_files(self) -> list[HubFile]:
        return self.files + ([self.mmproj] if self.mmproj else [])

    @property
    def total_size(self) -> int:
        return sum(f.size or 0 for f in self.all_files)


def group_quants(files: list[HubFile]) -> list[QuantGroup]:
    """The quants a repo offers, split parts grouped, sorted by size."""
    groups: dict[str, QuantGroup] = {}
    for f in files:
        if not f.path.lower().endswith(".gguf") or is_mmproj(f.path):
            continue
        base = SPLIT_RE.sub("", f.path)
        quant = quant_from_filename(os.path.basename(f.path)) or os.path.basename(
            base
        ).removesuffix(".gguf")
        key = quant.upper()
        group = groups.setdefault(key, QuantGroup(quant=quant, files=[]))
        if group.files and SPLIT_RE.sub("", group.files[0].path) != base:
            # Same quant under another name (e.g. a second directory): keep the first.
            continue
        group.files.append(f)
    for group in groups.values():
        group.files.sort(key=lambda f: f.path)
    return sorted(groups.values(), key=lambda g: (g.total_size, g.quant))


def check_split_complete(files: list[HubFile]) -> None:
    """Parts 1..N of an ``-of-N`` split must all be listed, once each."""
    nums = [SPLIT_RE.search(f.path) for f in files]
    if not any(nums):
        return
    if not all(nums):
        raise NotFound(f"{files[0].path}: split and unsplit files mixed")
    total = {int(m.group(2)) for m in nums}
    seen = sorted(int(m.group(1)) for m in nums)
    if len(total) != 1 or seen != list(range(1, total.pop() + 1)):
        raise NotFound(
            f"{SPLIT_RE.sub('', files[0].path)}: the Hub lists parts {seen}, "
            "not a complete split model"
        )


def pick_mmproj(files: list[HubFile]) -> HubFile | None:
    """The vision projector to pair with a model: F16 first, then BF16, F32, any."""
    candidates = [f for f in files if is_mmproj(f.path)]
    for pref in ("F16", "BF16", "F32"):
        for f in candidates:
            if (quant_from_filename(os.path.basename(f.path)) or "").upper() == pref:
                return f
    return candidates[0] if candidates else None


ProgressFn = Callable[[str, int, int | None], None]  # (file, bytes done, file total)


class Hub:
    """A HuggingFace endpoint (the real Hub, a mirror, or the tests' fake)."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, token: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        from huggingface_hub import HfApi

        _install_client_timeouts()
        self.endpoint = endpoint.rstrip("/")
        self.token = token or None
        self.api = HfApi(endpoint=self.endpoint, token=self.token)

    # -- metadata -----------------------------------------------------------------
    def search(self, text: str, limit: int = 20) -> list[dict]:
        """GGUF repos matching ``text``, most downloaded first (1..SEARCH_LIMIT of them)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= SEARCH_LIMIT:
            raise UsageError(f"limit must be from 1 to {SEARCH_LIMIT}, got {str(limit)[:40]}")
        with _hub_errors(text):
            found = self.api.list_models(search=text, filter="gguf", sort="downloads", limit=limit)
            return [
                {
                    "id": m.id,
                    "downloads": getattr(m, "downloads", None),
                    "likes": getattr(m, "likes", None),
                    "updated": _iso(getattr(m, "last_modified", None)),
                }
                for m in found
            ]

    def repo_files(self, repo: str, revision: str = "main") -> tuple[str, list[HubFile]]:
        """(commit sha, files with LFS sizes and sha256) of a repo at ``revision``."""
        with _hub_errors(repo, revision):
            info = self.api.model_info(repo, revision=revision, files_metadata=True, timeout=30)
        files = []
        for s in info.siblings or []:
            lfs = getattr(s, "lfs", None)
            sha = getattr(lfs, "sha256", None) if lfs is not None else None
            size = getattr(lfs, "size", None) if lfs is not None else None
            files.append(
                HubFile(path=s.rfilename, size=size if size is not None else s.size, sha256=sha)
            )
        return info.sha or revision, files

    def quants(self, repo: str, revision: str = "main") -> list[QuantGroup]:
        return group_quants(self.repo_files(repo, revision)[1])

    def plan(self, ref: ModelRef) -> PullPlan:
        """Which files a reference means: a quant (all split parts) or one file, plus mmproj."""
        commit, files = self.repo_files(ref.repo, ref.revision)
        by_path = {f.path: f for f in files}
        mmproj = pick_mmproj(files)
        if ref.filename:
            if ref.filename not in by_path:
                raise NotFound(f"{ref.repo} has no file {ref.filename!r}")
            chosen = by_path[ref.filename]
            parts = [chosen]
            m = SPLIT_RE.search(chosen.path)
            if m:  # naming one part of a split model means the whole model
                base = SPLIT_RE.sub("", chosen.path)
                parts = sorted(
                    (
                        f
                        for f in files
                        if SPLIT_RE.sub("", f.path) == base and SPLIT_RE.search(f.path)
                    ),
                    key=lambda f: f.path,
                )
            check_split_complete(parts)
            quant = quant_from_filename(os.path.basename(chosen.path))
            return PullPlan(
                ref.repo, commit, quant, parts, None if is_mmproj(chosen.path) else mmproj
            )
        groups = group_quants(files)
        if not groups:
            raise NotFound(f"{ref.repo} has no GGUF files")
        wanted = (ref.quant or DEFAULT_QUANT).upper()
        match = [g for g in groups if g.quant.upper() == wanted]
        if not match:
            have = ", ".join(g.quant for g in groups)
            raise NotFound(f"{ref.repo} has no {ref.quant or DEFAULT_QUANT} quant; it has: {have}")
        check_split_complete(match[0].files)
        return PullPlan(ref.repo, commit, match[0].quant, match[0].files, mmproj)

    # -- download -------------------------------------------------------------------
    def download(
        self,
        plan: PullPlan,
        dest: Path,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        retries: int = 5,
    ) -> list[Path]:
        """Download every file of ``plan`` into ``dest`` (resuming partials), verified."""
        check_disk_space(dest, plan, self._present_bytes(dest, plan))
        out = []
        for f in plan.all_files:
            out.append(self._download_one(plan, f, dest, progress, cancel, retries))
        return out

    def _present_bytes(self, dest: Path, plan: PullPlan) -> int:
        done = 0
        for f in plan.all_files:
            final = dest / f.path
            if final.exists() and (f.size is None or final.stat().st_size == f.size):
                done += final.stat().st_size
            elif part_path(dest, f).exists():
                done += part_path(dest, f).stat().st_size
        return done

    def _download_one(
        self,
        plan: PullPlan,
        f: HubFile,
        dest: Path,
        progress: ProgressFn | None,
        cancel: threading.Event | None,
        retries: int,
    ) -> Path:
        """One file, resumed from its ``.part`` file, retried on transient faults, verified.

        huggingface_hub 2.x deletes its partial file when a download fails, so a pull
        killed or cut off would start again from byte 0: corral streams the bytes itself
        (metadata, URLs and auth headers still come from huggingface_hub).
        """
        final = dest / f.path
        if ".." in Path(f.path).parts or not is_inside(dest, f.path):
            raise HubError(f"refusing the Hub's file path {f.path!r}: it leaves {dest}")
        with _file_lock(final):  # two pulls sharing a file (an mmproj) take turns
            return self._download_locked(plan, f, dest, final, progress, cancel, retries)

    def _download_locked(
        self,
        plan: PullPlan,
        f: HubFile,
        dest: Path,
        final: Path,
        progress: ProgressFn | None,
        cancel: threading.Event | None,
        retries: int,
    ) -> Path:
        # A file already in place is trusted only when its bytes are the ones the Hub
        # names now (a newer commit may have the same size).
        if final.exists() and verify(final, f):
            if progress:
                progress(f.path, final.stat().st_size, f.size)
            return final
        part = part_path(dest, f)
        attempt = 0
        while True:
            before = part.stat().st_size if part.exists() else 0
            try:
                digest = self._fetch(plan, f, part, progress, cancel)
                break
            except _Transient as exc:
                now = part.stat().st_size if part.exists() else 0
                attempt = 1 if now > before else attempt + 1  # progress earns the retries back
                if attempt > retries:
                    raise HubError(f"{f.path}: {exc.reason} (gave up after {retries} retries)")
                delay = (
                    exc.retry_after if exc.retry_after is not None else min(30, 2 ** (attempt - 1))
                )
                if delay > MAX_RETRY_AFTER:
                    raise HubError(
                        f"{f.path}: rate-limited by the Hub; it asks to retry in "
                        f"{delay:.0f} s: pull again later"
                    )
                if _sleep_or_cancel(delay, cancel):
                    raise Cancelled(f"pull of {f.path} cancelled")
        size_ok = f.size is None or part.stat().st_size == f.size
        if not size_ok or (f.sha256 and digest != f.sha256.lower()):
            bad = part.with_name(part.name.removesuffix(".part") + ".corrupt")
            for old in bad.parent.glob(Path(f.path).name + ".*.corrupt"):
                old.unlink()  # keep one piece of evidence per file, not a pile
            os.replace(part, bad)  # keep the evidence out of the model's way
            raise DownloadCorrupt(
                f"{f.path}: downloaded bytes do not match the Hub's size/sha256 "
                f"(kept as {bad.name}); pull again to retry"
            )
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, final)
        return final

    def _fetch(
        self,
        plan: PullPlan,
        f: HubFile,
        part: Path,
        progress: ProgressFn | None,
        cancel: threading.Event | None,
    ) -> str:
        """Stream the file into ``part`` from its current size (HTTP Range); its sha256.

        The hash is computed while the bytes arrive, in a second thread (hashlib releases
        the GIL), instead of re-reading the file afterwards: that pass cost ~28 % of a
        pull's time (bench/pull.py).
        """
        import httpx
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers

        part.parent.mkdir(parents=True, exist_ok=True)
        start = part.stat().st_size if part.exists() else 0
        if (f.size is not None and start > f.size) or not f.sha256:
            start = 0  # not ours to trust (or nothing to check it against): start over
        url = hf_hub_url(plan.repo, f.path, revision=plan.revision, endpoint=self.endpoint)
        headers = build_hf_headers(token=self.token, library_name="corral")
        if start:
            headers["Range"] = f"bytes={start}-"
        if start and f.size is not None and start == f.size:
            return sha256_file(part)  # complete already
        timeout = httpx.Timeout(30.0, read=120.0)
        hasher = _Hasher()
        try:
            # httpx drops Authorization when a redirect leaves the origin (the CDN).
            with (
                _hub_errors(plan.repo, plan.revision, f.path),
                httpx.Client(follow_redirects=True, timeout=timeout) as client,
                client.stream("GET", url, headers=headers) as resp,
            ):
                _check_status(resp, plan.repo, plan.revision, f.path)
                if resp.status_code == 200 and start:
                    start = 0  # the server ignored Range: take the whole body
                if start:
                    hasher.feed_file(part, start)
                self._stream_into(resp, part, start, hasher, f, progress, cancel)
        except BaseException:
            hasher.abandon()
            raise
        if f.size is not None and part.stat().st_size < f.size:
            hasher.abandon()
            raise _Transient("connection closed before the end of the file")
        return hasher.hexdigest()

    @staticmethod
    def _stream_into(resp, part, start, hasher, f, progress, cancel) -> None:
        """Append the body to ``part`` as it arrives (a drop loses nothing written)."""
        done = start
        if progress:
            progress(f.path, done, f.size)
        last = time.monotonic()
        with open(part, "ab" if start else "wb") as out:
            for chunk in resp.iter_bytes():
                if cancel is not None and cancel.is_set():
                    raise Cancelled(f"pull of {f.path} cancelled")
                out.write(chunk)
                hasher.feed(chunk)
                done += len(chunk)
                now = time.monotonic()
                if progress and now - last >= 0.1:
                    last = now
                    progress(f.path, done, f.size)
        if progress:
            progress(f.path, done, f.size)


_TIMEOUTS_SET = False


def _install_client_timeouts() -> None:
    """huggingface_hub's shared client has no timeout: a Hub that accepts the connection
    and never answers would hang a pull (and the daemon's worker) forever.

    Through its public doors only: the client it makes by default (``get_session``) gives
    the event hooks (offline mode, request ids) and the redirect policy, and
    ``set_client_factory`` installs a factory of the same client with timeouts, in the
    HTTP library it uses (``huggingface_hub.utils.httpx``: httpx in 1.x, httpx2 in 2.x)."""
    global _TIMEOUTS_SET
    if _TIMEOUTS_SET:
        return
    from huggingface_hub import get_session, set_client_factory
    from huggingface_hub.utils import httpx as hf_httpx

    default = get_session()
    hooks = {event: list(fns) for event, fns in default.event_hooks.items()}
    follow = default.follow_redirects

    def factory():
        return hf_httpx.Client(
            event_hooks=hooks, follow_redirects=follow, timeout=hf_httpx.Timeout(30.0, read=60.0)
        )

    set_client_factory(factory)  # closes the default client made above
    _TIMEOUTS_SET = True


class _Hasher:
    """sha256 of a byte stream, computed in a worker thread as chunks are fed."""

    def __init__(self) -> None:
        import queue

        self._h = hashlib.sha256()
        self._q: queue.Queue = queue.Queue(maxsize=256)
        self._t = threading.Thread(target=self._run, daemon=True, name="corral-sha256")
        self._t.start()

    def _run(self) -> None:
        while (chunk := self._q.get()) is not None:
            self._h.update(chunk)

    def feed(self, chunk: bytes) -> None:
        self._q.put(chunk)

    def feed_file(self, path: Path, length: int) -> None:
        """The bytes already on disk (a resumed download)."""
        with open(path, "rb") as fh:
            while length > 0 and (block := fh.read(min(8 << 20, length))):
                self.feed(block)
                length -= len(block)

    def hexdigest(self) -> str:
        self._q.put(None)
        self._t.join()
        return self._h.hexdigest()

    def abandon(self) -> None:
        if self._t.is_alive():
            self._q.put(None)


def part_path(dest: Path, f: HubFile) -> Path:
    """Where the bytes of ``f`` accumulate until verified.

    Keyed by the file's sha256, so a partial of an older commit is never resumed into a
    newer one; a file without a known sha256 gets a name of its own and starts over.
    """
    tag = f.sha256[:16] if f.sha256 else "unverified"
    return dest / ".partial" / f"{f.path}.{tag}.part"


_FILE_LOCKS: dict[str, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _file_lock(path: Path) -> threading.Lock:
    key = str(path.resolve())
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(key, threading.Lock())


def check_disk_space(dest: Path, plan: PullPlan, present: int = 0) -> None:
    """Refuse to start when the remaining bytes do not fit (with 1 % + 64 MiB slack)."""
    dest.mkdir(parents=True, exist_ok=True)
    need = max(0, plan.total_size - present)
    free = shutil.disk_usage(dest).free
    if need + need // 100 + (64 << 20) > free:
        raise HubError(f"not enough disk space in {dest}: need {_gb(need)}, {_gb(free)} free")


def verify(path: Path, f: HubFile, quick: bool = False) -> bool:
    """Size, then (unless ``quick``) sha256, against the Hub's LFS record."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if f.size is not None and size != f.size:
        return False
    if quick or not f.sha256:
        return True
    return sha256_file(path) == f.sha256.lower()


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def _iso(value) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _sleep_or_cancel(seconds: float, cancel: threading.Event | None) -> bool:
    if cancel is None:
        time.sleep(seconds)
        return False
    return cancel.wait(seconds)


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _retry_after(headers) -> float | None:
    after = headers.get("retry-after") or ""
    return float(after) if after.isdigit() else None


def _status_error(status: int, headers, repo: str, revision: str | None, path: str | None):
    """The error for an HTTP error status from the Hub: of a metadata call (``path`` None)
    or of a file's download. 429 and 5xx are transient (retried by a download)."""
    if status == 429 or status >= 500:
        return _Transient(f"HTTP {status} from the Hub", _retry_after(headers))
    if status in (401, 403) or headers.get("x-error-code") == "GatedRepo":
        hint = "accept its terms and set HF_TOKEN" if path else "set HF_TOKEN"
        return HubAuthError(f"{repo}: access denied (HTTP {status}); {hint}")
    if status == 404 and path:
        return NotFound(f"{repo} has no file {path!r} at {(revision or '')[:12]}")
    return HubError(f"{path or repo}: HTTP {status} from the Hub")


def _check_status(resp, repo: str, revision: str | None, path: str) -> None:
    """Raise the error of a file download's answer unless it is 200 or 206."""
    if resp.status_code not in (200, 206):
        resp.read()
        raise _status_error(resp.status_code, resp.headers, repo, revision, path)


#: huggingface_hub's errors (names in ``huggingface_hub.errors``), most specific first: an
#: entry also takes its subclasses. The corral error each is, and what it says.
_HF_ERRORS = (
    ("GatedRepoError", HubAuthError, "{repo} is gated: accept its terms on the Hub and set HF_TOKEN"),  # noqa: E501
    ("RepositoryNotFoundError", NotFound, "repo {repo} not found (or private: set HF_TOKEN)"),
    ("RevisionNotFoundError", NotFound, "revision {revision!r} not found in {repo}"),
    ("LocalEntryNotFoundError", HubError, "{repo}: the Hub is unreachable (offline?)"),
    ("EntryNotFoundError", NotFound, "file not found in {repo}: {exc}"),
)  # fmt: skip

#: Already corral's: passed through as they are.
_OURS = (Cancelled, HubError, NotFound, UsageError, _Transient)


def _transport_errors(path: str | None) -> tuple[type[BaseException], ...]:
    """Network errors of corral's httpx and of huggingface_hub's HTTP library. A plain
    OSError counts for a metadata call only: in a download it is the disk's (ENOSPC)."""
    import httpx
    from huggingface_hub.utils import httpx as hf_httpx

    errs: tuple[type[BaseException], ...] = (httpx.TransportError, hf_httpx.TransportError)
    return errs if path else (*errs, OSError)


def _map_error(exc: BaseException, repo: str, revision: str | None, path: str | None):
    """The corral error (or _Transient) that ``exc`` is, or None for one that is not the
    Hub's (a bug keeps its traceback)."""
    from huggingface_hub import errors as hf

    for name, cls, says in _HF_ERRORS:
        if isinstance(exc, getattr(hf, name)):
            return cls(says.format(repo=repo, revision=revision, exc=exc).splitlines()[0])
    if isinstance(exc, hf.HfHubHTTPError) and exc.response is not None:
        response = exc.response
        return _status_error(response.status_code, response.headers, repo, revision, path)
    if isinstance(exc, _transport_errors(path)) and not isinstance(exc, FileNotFoundError):
        return _Transient(f"network error: {type(exc).__name__}: {exc}".splitlines()[0])
    return None


@contextmanager
def _hub_errors(repo: str, revision: str | None = None, path: str | None = None):
    """Every error of a Hub call as corral's, one line each: the one mapping (as httpx's
    ``map_httpcore_exceptions``), over :data:`_HF_ERRORS` and :func:`_status_error`.

    A metadata call (``path`` None) fails at once on a transient fault (HubError); a
    file's download (``path`` given) raises ``_Transient`` for its retry loop."""
    try:
        yield
    except _OURS:
        raise
    except Exception as exc:
        err = _map_error(exc, repo, revision, path)
        if err is None:
            raise
        if isinstance(err, _Transient) and path is None:
            err = HubError(f"{repo}: {err.reason}")
        raise err from None
