"""A fake HuggingFace Hub: a real HTTP server on 127.0.0.1 speaking what huggingface_hub 2.4.0 asks.

Usage::

    with FakeHub(cdn=True) as hub:
        hub.add_repo("org/m-GGUF", files={"m-Q4_K_M.gguf": b"..."}, tags=["gguf"])
        hf_hub_download("org/m-GGUF", "m-Q4_K_M.gguf", endpoint=hub.url, local_dir=tmp)

Served endpoints (shapes copied from the real Hub / what the library parses):

- ``GET /api/models`` (search, author, filter (repeatable), sort, direction, limit, cursor) → list
  of model dicts; pages of ``page_size`` with a ``Link: <...>; rel="next"`` header when no limit
  is given.
- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` → info with ``sha`` and
  ``siblings`` (``size``/``blobId``/``lfs`` only when ``blobs=true``, like the Hub).
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=`` → ``[{type, oid, size, path, lfs?}]``.
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}`` → ETag (sha256 for LFS files, git blob sha1
  otherwise),
  X-Repo-Commit, X-Linked-Etag, X-Linked-Size, Content-Length, Accept-Ranges, Range → 206.
  With ``cdn=True`` LFS files answer ``302`` to a second server (another port = another origin, so
  the library does not follow the HEAD redirect and strips ``Authorization`` for the GET).

Errors carry ``X-Error-Code`` / ``X-Error-Message`` and a JSON ``{"error": ...}`` body:
unknown/private repo → 401 (anonymous) or 404 (with token) ``RepoNotFound``; unknown revision →
404 ``RevisionNotFound``; missing file → 404 ``EntryNotFound`` (with X-Repo-Commit); gated repo
file without an authorized token → 401 (anonymous) / 403 (token without access) ``GatedRepo``;
a token not in ``valid_tokens`` (when that set is non-empty) → 401 "Invalid credentials in
Authorization header". Repo *metadata* of gated repos is public, as on the Hub.

Faults (``hub.faults[key] = Fault(...)``; key is ``"file"``, ``"org/name/file"`` or a URL path
like ``"/api/models"``; looked up most-specific first) are consumed per matching request and
removed after ``times`` uses (``times=None``: forever). Every request (hub and CDN) is appended to
``hub.requests`` as ``(method, path, range_header_or_None)``; ``hub.log`` has richer records.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

__all__ = ["FakeHub", "Fault", "LoggedRequest", "FakeRepo", "FakeFile"]

_sleep = time.sleep  # captured so tests may monkeypatch time.sleep without slowing the server

#: Files whose suffix is in here are served as regular git files; everything else is LFS.
NON_LFS_SUFFIXES = {".md", ".json", ".txt", ".gitattributes", ".py", ".yaml", ".yml", ".jinja"}
LFS_POINTER_SIZE = 134


@dataclass
class Fault:
    """One injected misbehaviour for matching requests.

    status:      answer this status instead (e.g. 500, 503, 429) with no body.
    retry_after: with status, send ``Retry-After: <seconds>``.
    drop_after:  send this many body bytes, then close the connection (GET only).
    delay:       sleep this many seconds before each body chunk (GET only).
    chunk_size:  body chunk size for this response (default: the hub's ``chunk_size``).
    corrupt:     serve different bytes of the same length (GET only) so sha256 mismatches.
    times:       how many matching requests it applies to; ``None`` = every one.
    methods:     which methods it applies to. Default: status faults hit HEAD and GET, body
                 faults (drop/delay/corrupt) only GET.
    """

    status: int | None = None
    retry_after: float | None = None
    drop_after: int | None = None
    delay: float | None = None
    chunk_size: int | None = None
    corrupt: bool = False
    times: int | None = 1
    methods: tuple[str, ...] | None = None
    hits: int = 0

    def applies_to(self, method: str) -> bool:
        if self.methods is not None:
            return method in self.methods
        if self.status is not None:
            return True
        return method == "GET"


@dataclass
class LoggedRequest:
    server: str  # "hub" or "cdn"
    method: str
    path: str  # unquoted URL path, no query
    query: dict[str, list[str]]
    range: str | None
    headers: dict[str, str]
    status: int | None = None
    fault: Fault | None = None


@dataclass
class FakeFile:
    path: str
    size: int
    sha256: str
    git_oid: str  # git blob sha1 of the content (non-LFS) or of the LFS pointer (LFS)
    lfs: bool
    data: bytes | None = None
    disk: Path | None = None

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the content."""
        if self.data is not None:
            return self.data[start:end]
        assert self.disk is not None
        with open(self.disk, "rb") as f:
            f.seek(start)
            return f.read(end - start)


@dataclass
class FakeRevision:
    name: str
    commit: str
    files: dict[str, FakeFile]
    last_modified: str


@dataclass
class FakeRepo:
    repo_id: str
    revisions: dict[str, FakeRevision] = field(default_factory=dict)  # by branch name
    gated: bool | str = False
    private: bool = False
    downloads: int = 0
    likes: int = 0
    tags: list[str] = field(default_factory=list)
    created_at: str = "2024-01-01T00:00:00.000Z"
    authorized_tokens: set[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def resolve_revision(self, rev: str) -> FakeRevision | None:
        if rev in self.revisions:
            return self.revisions[rev]
        for r in self.revisions.values():
            if rev == r.commit:
                return r
        return None

    @property
    def default(self) -> FakeRevision:
        return self.revisions.get("main") or next(iter(self.revisions.values()))


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _corrupt(data: bytes) -> bytes:
    return bytes(b ^ 0xFF for b in data)


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.000Z")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, hub: "FakeHub", role: str):
        self.hub = hub
        self.role = role
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request, client_address):  # dropped connections are expected noise
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    timeout = 30
    server: _Server

    def log_message(self, format, *args):  # quiet
        pass

    # -- plumbing ------------------------------------------------------------------------
    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_GET(self):
        self._dispatch("GET")

    def _dispatch(self, method: str) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        path = unquote(split.path)
        self._raw_path = split.path
        self._query = parse_qs(split.query, keep_blank_values=True)
        self._method = method
        self._entry = LoggedRequest(
            server=self.server.role,
            method=method,
            path=path,
            query=self._query,
            range=self.headers.get("Range"),
            headers={
                "-".join(w.capitalize() for w in k.split("-")): v for k, v in self.headers.items()
            },
        )
        hub._record(self._entry)
        try:
            if self.server.role == "cdn":
                self._cdn()
            else:
                self._hub()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self._entry.status = status
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self._method != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        h = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        self._send(status, h, json.dumps(obj).encode())

    def _error(
        self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None
    ) -> None:
        h = {"X-Error-Message": message, **(headers or {})}
        if code:
            h["X-Error-Code"] = code
        self._json({"error": message}, status, h)

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def _check_fault(self, keys: list[str], status_only: bool = False) -> Fault | None:
        """Consume the first matching fault; answer it here if it is a status fault."""
        fault = self.server.hub._take_fault(keys, self._method, status_only)
        if fault is None:
            return None
        self._entry.fault = fault
        if fault.status is not None:
            h = {}
            if fault.retry_after is not None:
                h["Retry-After"] = str(int(fault.retry_after))
            self._error(fault.status, None, f"Injected fault: HTTP {fault.status}", h)
            return None  # handled; caller checks self._entry.status
        return fault

    # -- hub -----------------------------------------------------------------------------
    def _hub(self) -> None:
        hub = self.server.hub
        path = unquote(self._raw_path)
        if path.startswith("/api/models"):
            fault = self._check_fault([path, self._raw_path])
            if self._entry.status is not None:
                return
            del fault
            if self._method != "GET" and self._method != "HEAD":
                return self._send(405)
            return self._api_models()
        if "/resolve/" in self._raw_path:
            repo_id, rest = self._raw_path.lstrip("/").split("/resolve/", 1)
            rev_q, _, file_q = rest.partition("/")
            return self._resolve(unquote(repo_id), unquote(rev_q), unquote(file_q))
        if path in ("/api/whoami-v2",):
            token = self._token()
            if token and token in hub.valid_tokens:
                return self._json(
                    {"type": "user", "name": "fake-user", "auth": {"type": "access_token"}}
                )
            return self._error(401, None, "Invalid credentials in Authorization header")
        self._error(404, None, "Not Found")

    def _auth_repo(self, repo_id: str, *, for_file: bool) -> FakeRepo | None:
        """Return the repo, or send the Hub's error and return None."""
        hub = self.server.hub
        token = self._token()
        if token is not None and hub.valid_tokens and token not in hub.valid_tokens:
            self._error(401, None, "Invalid credentials in Authorization header")
            return None
        authed = token is not None and token in hub.valid_tokens
        with hub._lock:
            repo = hub.repos.get(repo_id)
        if repo is None or (repo.private and not authed):
            self._error(404 if authed else 401, "RepoNotFound", "Repository not found")
            return None
        if for_file and repo.gated:
            allowed = authed and (repo.authorized_tokens is None or token in repo.authorized_tokens)
            if not allowed:
                if not authed:
                    msg = (
                        f"Access to model {repo_id} is restricted. You must have access to it "
                        "and be authenticated to access it. Please log in."
                    )
                    self._error(401, "GatedRepo", msg)
                else:
                    msg = (
                        f"Access to model {repo_id} is restricted and you are not in the "
                        "authorized list. "
                        f"Visit https://huggingface.co/{repo_id} to ask for access."
                    )
                    self._error(403, "GatedRepo", msg)
                return None
        return repo

    def _api_models(self) -> None:
        raw = self._raw_path
        rest = raw[len("/api/models") :].strip("/")
        if not rest:
            return self._list_models()
        # {org}/{name}[/revision/{rev} | /tree/{rev}[/{path}]]  (rev is %-encoded by the lib)
        parts = rest.split("/")
        if len(parts) >= 3 and parts[1] in ("revision", "tree"):
            repo_parts, tail = parts[:1], parts[1:]
        else:
            repo_parts, tail = parts[:2], parts[2:]
        repo_id = unquote("/".join(repo_parts))
        repo = self._auth_repo(repo_id, for_file=False)
        if repo is None:
            return
        if not tail:
            return self._model_info(repo, repo.default)
        kind = tail[0]
        rev_name = unquote(tail[1]) if len(tail) > 1 else "main"
        rev = repo.resolve_revision(rev_name)
        if kind not in ("revision", "tree"):
            return self._error(404, None, "Not Found")
        if rev is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev_name}")
        if kind == "revision":
            return self._model_info(repo, rev)
        sub = unquote("/".join(tail[2:])).strip("/")
        return self._tree(repo, rev, sub)

    def _model_dict(
        self, repo: FakeRepo, rev: FakeRevision, *, blobs: bool, siblings: bool
    ) -> dict:
        d: dict[str, Any] = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": rev.commit,
            "lastModified": rev.last_modified,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "downloads": repo.downloads,
            "likes": repo.likes,
            "trendingScore": 0,
            "tags": list(repo.tags),
            "library_name": "gguf" if "gguf" in repo.tags else None,
        }
        if siblings:
            sibs = []
            for f in rev.files.values():
                s: dict[str, Any] = {"rfilename": f.path}
                if blobs:
                    s["blobId"] = f.git_oid
                    s["size"] = f.size
                    if f.lfs:
                        s["lfs"] = {
                            "sha256": f.sha256,
                            "size": f.size,
                            "pointerSize": LFS_POINTER_SIZE,
                        }
                sibs.append(s)
            d["siblings"] = sibs
            if blobs:
                d["usedStorage"] = sum(f.size for f in rev.files.values())
        d.update(repo.extra)
        return d

    def _model_info(self, repo: FakeRepo, rev: FakeRevision) -> None:
        blobs = self._query.get("blobs", ["false"])[0].lower() == "true"
        self._json(self._model_dict(repo, rev, blobs=blobs, siblings=True))

    def _list_models(self) -> None:
        hub = self.server.hub
        q = self._query
        token = self._token()
        authed = token is not None and token in hub.valid_tokens
        search = (q.get("search") or [""])[0].lower()
        author = (q.get("author") or [None])[0]
        filters = [v for vals in (q.get("filter") or []) for v in vals.split(",") if v]
        sort = (q.get("sort") or [None])[0]
        direction = (q.get("direction") or ["-1"])[0]
        limit = int(q["limit"][0]) if q.get("limit") else None
        cursor = int(q["cursor"][0]) if q.get("cursor") else 0
        full = (q.get("full") or ["false"])[0].lower() == "true"
        with hub._lock:
            repos = list(hub.repos.values())
        out = []
        for r in repos:
            if r.private and not authed:
                continue
            if search and search not in r.repo_id.lower():
                continue
            if author and r.repo_id.split("/")[0] != author:
                continue
            if any(f not in r.tags and f != (r.extra.get("library_name")) for f in filters):
                continue
            out.append(r)
        keys = {
            "downloads": lambda r: r.downloads,
            "likes": lambda r: r.likes,
            "lastModified": lambda r: r.default.last_modified,
            "createdAt": lambda r: r.created_at,
            "trendingScore": lambda r: r.likes,
            "id": lambda r: r.repo_id,
        }
        if sort in keys:
            out.sort(key=keys[sort], reverse=direction != "1")
        page_size = limit if limit is not None else hub.page_size
        page = out[cursor : cursor + page_size]
        headers = {}
        if limit is None and cursor + page_size < len(out):
            nq = {k: v for k, v in q.items() if k != "cursor"}
            nq["cursor"] = [str(cursor + page_size)]
            headers["Link"] = f'<{hub.url}/api/models?{urlencode(nq, doseq=True)}>; rel="next"'
        self._json(
            [self._model_dict(r, r.default, blobs=False, siblings=full) for r in page],
            headers=headers,
        )

    def _tree(self, repo: FakeRepo, rev: FakeRevision, sub: str) -> None:
        recursive = (self._query.get("recursive") or ["false"])[0].lower() == "true"
        prefix = sub + "/" if sub else ""
        files = [f for p, f in sorted(rev.files.items()) if p.startswith(prefix)]
        if sub and not files:
            return self._error(
                404,
                "EntryNotFound",
                f'{sub} does not exist on "{rev.name}"',
                {"X-Repo-Commit": rev.commit},
            )
        entries: list[dict] = []
        seen_dirs: set[str] = set()
        for f in files:
            rel = f.path[len(prefix) :]
            dir_parts = rel.split("/")[:-1]
            for i in range(1 if not recursive else len(dir_parts)):
                if i >= len(dir_parts):
                    break
                d = prefix + "/".join(dir_parts[: i + 1])
                if d not in seen_dirs:
                    seen_dirs.add(d)
                    entries.append(
                        {
                            "type": "directory",
                            "oid": hashlib.sha1(d.encode()).hexdigest(),
                            "size": 0,
                            "path": d,
                        }
                    )
            if dir_parts and not recursive:
                continue
            e: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path}
            if f.lfs:
                e["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": LFS_POINTER_SIZE}
            entries.append(e)
        self._json(entries)

    def _file_headers(self, repo: FakeRepo, rev: FakeRevision, f: FakeFile) -> dict[str, str]:
        etag = f.sha256 if f.lfs else f.git_oid
        h = {
            "X-Repo-Commit": rev.commit,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(f.path.split('/')[-1])}; "
            f'filename="{f.path.split("/")[-1]}";',
            "Content-Type": "application/octet-stream",
        }
        if f.lfs:
            h["X-Linked-Etag"] = f'"{f.sha256}"'
            h["X-Linked-Size"] = str(f.size)
        return h

    def _resolve(self, repo_id: str, rev_name: str, file_path: str) -> None:
        hub = self.server.hub
        repo = self._auth_repo(repo_id, for_file=True)
        if repo is None:
            return
        rev = repo.resolve_revision(rev_name)
        if rev is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev_name}")
        f = rev.files.get(file_path)
        if f is None:
            return self._error(
                404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": rev.commit}
            )
        headers = self._file_headers(repo, rev, f)
        if hub.cdn and f.lfs:
            # Only status faults fire on the redirect; body faults wait for the CDN GET.
            self._check_fault(
                [f"{repo_id}/{file_path}", file_path, unquote(self._raw_path)], status_only=True
            )
            if self._entry.status is not None:
                return
            loc = f"{hub.cdn_url}/repos/{repo_id}/{rev.commit}/{quote(file_path)}"
            loc += "?X-Amz-Signature=fake"
            headers["Location"] = loc
            # A redirect carries no body; Content-Length is that of the (empty) redirect body.
            return self._send(302, headers)
        self._serve_bytes(
            f, headers, [f"{repo_id}/{file_path}", file_path, unquote(self._raw_path)]
        )

    # -- bytes (hub direct or cdn) ---------------------------------------------------------
    def _serve_bytes(self, f: FakeFile, headers: dict[str, str], fault_keys: list[str]) -> None:
        hub = self.server.hub
        fault = self._check_fault(fault_keys)
        if self._entry.status is not None:
            return
        size = f.size
        start, end = 0, size  # [start, end)
        status = 200
        rng = self.headers.get("Range")
        if rng:
            try:
                unit, _, spec = rng.partition("=")
                first, _, last = spec.split(",")[0].strip().partition("-")
                if unit.strip() != "bytes":
                    raise ValueError
                if first == "":
                    start, end = max(0, size - int(last)), size
                else:
                    start = int(first)
                    end = min(size, int(last) + 1) if last else size
                if start >= size or start >= end:
                    return self._send(
                        416,
                        {
                            "Content-Range": f"bytes */{size}",
                            **{k: v for k, v in headers.items() if k.startswith("X-")},
                        },
                    )
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            except ValueError:
                start, end, status = 0, size, 200
        headers["Content-Length"] = str(end - start)
        self._entry.status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self._method == "HEAD":
            return
        chunk = (fault.chunk_size if fault and fault.chunk_size else None) or hub.chunk_size
        budget = fault.drop_after if fault and fault.drop_after is not None else None
        pos = start
        while pos < end:
            n = min(chunk, end - pos)
            if budget is not None:
                n = min(n, budget)
            if fault and fault.delay:
                _sleep(fault.delay)
            if n > 0:
                data = f.read(pos, pos + n)
                if fault and fault.corrupt:
                    data = _corrupt(data)
                self.wfile.write(data)
                pos += n
            if budget is not None:
                budget -= n
                if budget <= 0:
                    self.wfile.flush()
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return

    def _cdn(self) -> None:
        hub = self.server.hub
        raw = self._raw_path
        if not raw.startswith("/repos/"):
            return self._send(404)
        # /repos/{repo_id (1 or 2 parts)}/{commit}/{file...}
        parts = raw[len("/repos/") :].split("/")
        idx = next(
            (
                i
                for i, p in enumerate(parts)
                if len(p) == 40 and all(c in "0123456789abcdef" for c in p)
            ),
            None,
        )
        if idx is None:
            return self._send(404)
        repo_id = unquote("/".join(parts[:idx]))
        commit = parts[idx]
        file_path = unquote("/".join(parts[idx + 1 :]))
        with hub._lock:
            repo = hub.repos.get(repo_id)
        rev = repo.resolve_revision(commit) if repo else None
        f = rev.files.get(file_path) if rev else None
        if f is None:
            body = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>"
            return self._send(403, {"Content-Type": "application/xml"}, body)
        headers = {
            "ETag": f'"{f.sha256}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{file_path.split("/")[-1]}";',
        }
        self._serve_bytes(f, headers, [f"{repo_id}/{file_path}", file_path, unquote(raw)])


class FakeHub:
    """In-process fake of huggingface.co (+ optional LFS CDN). See module docstring."""

    def __init__(self, *, cdn: bool = False, chunk_size: int = 64 * 1024, page_size: int = 1000):
        self.cdn = cdn
        self.chunk_size = chunk_size
        self.page_size = page_size
        self.repos: dict[str, FakeRepo] = {}
        self.valid_tokens: set[str] = set()
        self.faults: dict[str, Fault] = _LockedDict()
        self.requests: list[tuple[str, str, str | None]] = []
        self.log: list[LoggedRequest] = []
        self._lock = threading.RLock()
        self._servers: list[tuple[_Server, threading.Thread]] = []
        self.url = ""
        self.cdn_url = ""

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "FakeHub":
        if self._servers:
            return self
        roles = ["hub"] + (["cdn"] if self.cdn else [])
        for role in roles:
            srv = _Server(self, role)
            t = threading.Thread(
                target=srv.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fake-hub-{role}",
                daemon=True,
            )
            t.start()
            self._servers.append((srv, t))
            url = f"http://127.0.0.1:{srv.server_address[1]}"
            if role == "hub":
                self.url = url
            else:
                self.cdn_url = url
        return self

    def stop(self) -> None:
        for srv, t in self._servers:
            srv.shutdown()
            srv.server_close()
            t.join(timeout=5)
        self._servers = []

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- content ---------------------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | str | Path],
        *,
        revision: str = "main",
        gated: bool | str = False,
        private: bool = False,
        downloads: int = 0,
        likes: int = 0,
        tags: list[str] | None = None,
        last_modified: datetime | str | None = None,
        authorized_tokens: set[str] | None = None,
        lfs: set[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> FakeRepo:
        """Add (or add a revision to) a repo. Returns the FakeRepo.

        files: path → bytes | str (utf-8) | Path (streamed from disk; hashed once here).
        lfs:   explicit set of LFS paths; default: every file whose suffix is not text-like.
        gated: True (= "manual"), "auto", "manual" or False. Gated files need a token in
               ``valid_tokens`` (and in ``authorized_tokens`` if given).
        extra: merged into the info/list dicts (e.g. {"gguf": {...}, "pipeline_tag": ...}).
        """
        built: dict[str, FakeFile] = {}
        for p, content in files.items():
            is_lfs = (
                (p in lfs)
                if lfs is not None
                else (
                    Path(p).suffix.lower() not in NON_LFS_SUFFIXES
                    and Path(p).name != ".gitattributes"
                )
            )
            if isinstance(content, Path):
                h = hashlib.sha256()
                size = 0
                with open(content, "rb") as fh:
                    while block := fh.read(1 << 20):
                        h.update(block)
                        size += len(block)
                sha = h.hexdigest()
                ff = FakeFile(p, size, sha, "", is_lfs, disk=content)
                if not is_lfs:
                    ff.git_oid = _git_blob_sha1(content.read_bytes())
            else:
                data = content.encode() if isinstance(content, str) else bytes(content)
                sha = hashlib.sha256(data).hexdigest()
                ff = FakeFile(
                    p, len(data), sha, _git_blob_sha1(data) if not is_lfs else "", is_lfs, data=data
                )
            if is_lfs:
                spec = "version https://git-lfs.github.com/spec/v1\n"
                pointer = f"{spec}oid sha256:{sha}\nsize {ff.size}\n"
                ff.git_oid = _git_blob_sha1(pointer.encode())
            built[p] = ff
        commit = hashlib.sha1(
            (
                repo_id
                + "\0"
                + revision
                + "\0"
                + "".join(f"{p}:{f.sha256};" for p, f in sorted(built.items()))
            ).encode()
        ).hexdigest()
        if isinstance(last_modified, datetime):
            lm = _iso(last_modified)
        else:
            lm = last_modified or _iso(datetime(2024, 6, 1, tzinfo=timezone.utc))
        with self._lock:
            repo = self.repos.get(repo_id)
            if repo is None:
                repo = FakeRepo(repo_id=repo_id)
                self.repos[repo_id] = repo
            repo.gated = "manual" if gated is True else gated
            repo.private = private
            repo.downloads = downloads
            repo.likes = likes
            repo.tags = list(tags) if tags is not None else ["gguf"]
            repo.authorized_tokens = authorized_tokens
            repo.extra = dict(extra or {})
            repo.revisions[revision] = FakeRevision(revision, commit, built, lm)
        return repo

    def remove_repo(self, repo_id: str) -> None:
        with self._lock:
            self.repos.pop(repo_id, None)

    def commit(self, repo_id: str, revision: str = "main") -> str:
        return self.repos[repo_id].revisions[revision].commit

    def file(self, repo_id: str, path: str, revision: str = "main") -> FakeFile:
        return self.repos[repo_id].revisions[revision].files[path]

    def sha256(self, repo_id: str, path: str, revision: str = "main") -> str:
        return self.file(repo_id, path, revision).sha256

    # -- observation -----------------------------------------------------------------------
    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.log.append(entry)
            self.requests.append((entry.method, entry.path, entry.range))

    def file_requests(self, filename: str, method: str | None = "GET") -> list[LoggedRequest]:
        """Requests (hub resolve or CDN) whose path ends with /filename."""
        with self._lock:
            return [
                e
                for e in self.log
                if e.path.endswith("/" + filename) and (method is None or e.method == method)
            ]

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()
            self.requests.clear()

    # -- faults ----------------------------------------------------------------------------
    def _take_fault(self, keys: list[str], method: str, status_only: bool = False) -> Fault | None:
        with self.faults.lock:
            for k in keys:
                fault = self.faults.get(k)
                if fault is None or not fault.applies_to(method):
                    continue
                if status_only and fault.status is None:
                    continue
                fault.hits += 1
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        del self.faults[k]
                return fault
        return None


class _LockedDict(dict):
    """dict of faults with a lock shared with the request handlers (set/del are atomic anyway)."""

    def __init__(self):
        super().__init__()
        self.lock = threading.RLock()

    def __setitem__(self, key, value):
        with self.lock:
            super().__setitem__(key, value)

    def __delitem__(self, key):
        with self.lock:
            super().__delitem__(key)
