"""A fake GitHub releases API for llama.cpp: a real HTTP server on 127.0.0.1.

Usage::

    with FakeReleases() as gh:
        install_release(gh.url, dest, backend="cpu", os_name="linux", arch="x86_64")

Endpoints (``base`` = ``/repos/ggml-org/llama.cpp/releases``, ``gh.url`` is the full URL):

* ``GET base``               -> list of releases, newest first
* ``GET base/latest``        -> the newest release
* ``GET base/tags/<tag>``    -> one release (404 JSON like GitHub when unknown)
* ``GET /download/<tag>/<asset>`` -> 302 to ``/objects/<tag>/<asset>`` (like github.com
  redirecting to its object store); the object answers ``Range: bytes=N-`` with 206.

Default releases: ``b6000`` (newest) and ``b5990``, each with real, small archives whose
``build/bin/llama-server`` is a shell script answering ``--version`` (stderr) and
``--help``. Asset names follow upstream conventions (``llama-b6000-bin-ubuntu-x64.zip``,
``...-ubuntu-vulkan-x64.zip``, ``...-ubuntu-rocm-7.0-x64.tar.gz``, ``...-macos-arm64.zip``,
``...-win-cuda-12.4-x64.zip``, ``cudart-llama-bin-win-cuda-12.4-x64.zip``); no CUDA Linux
asset exists, like upstream.

Fault hooks:

* ``gh.add_asset(tag, name, data)`` — any bytes, e.g. ``make_hostile_archive()``.
* ``gh.wrong_digest.add(name)`` — the JSON states a digest that does not match.
* ``gh.drop[name] = (after_bytes, times)`` — the next ``times`` downloads of ``name``
  send the headers (full length) and ``after_bytes`` bytes, then cut the connection.
* ``gh.requests`` — ``(path, range_header_or_None)`` for every request served.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import socket
import stat
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

HELP_FILE = Path(__file__).with_name("llama-server-help.txt")
API_BASE = "/repos/ggml-org/llama.cpp/releases"


def _help_lines(n: int = 40) -> str:
    try:
        return "".join(HELP_FILE.read_text().splitlines(keepends=True)[:n])
    except OSError:  # pragma: no cover
        return "-h,    --help, --usage                  print usage and exit\n"


def server_script(build: int = 6000, commit: str = "abc1234", exit_code: int = 0) -> bytes:
    """A POSIX shell ``llama-server`` that answers ``--version`` and ``--help``."""
    return (
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  --version)\n"
        f"    echo 'version: {build} ({commit})' >&2\n"
        "    echo 'built with cc (GCC) 12.2.0 for x86_64-linux-gnu' >&2\n"
        f"    exit {exit_code} ;;\n"
        "  --help|-h)\n"
        "    cat <<'CORRAL_EOF'\n"
        f"{_help_lines()}"
        "CORRAL_EOF\n"
        "    exit 0 ;;\n"
        "esac\n"
        "echo 'fake llama-server: nothing to do' >&2\n"
        "exit 1\n"
    ).encode()


# --------------------------------------------------------------------------- archives

# entries: (name, kind, payload) with kind "file" (payload bytes, mode), "link" (target), "dir"
Entry = tuple


def _default_entries(build: int, server: bytes | None, prefix: str) -> list[tuple]:
    server = server if server is not None else server_script(build)
    p = prefix.rstrip("/") + "/" if prefix else ""
    return [
        (f"{p}", "dir", None, 0o755),
        (f"{p}llama-server", "file", server, 0o755),
        # release archives carry llama.cpp's other tools beside the server
        (f"{p}rpc-server", "file", b"#!/bin/sh\nexit 0\n", 0o755),
        (f"{p}llama-fit-params", "file", b"#!/bin/sh\nexit 0\n", 0o755),
        (f"{p}libggml.so.0.1", "file", b"\x7fELF fake libggml", 0o644),
        (f"{p}libggml.so.0", "link", "libggml.so.0.1", 0o777),
        (f"{p}libggml.so", "link", "libggml.so.0", 0o777),
        (f"{p}libllama.so", "file", b"\x7fELF fake libllama", 0o644),
        (f"{p}LICENSE", "file", b"MIT\n", 0o644),
    ]


def build_archive(entries: list[tuple], kind: str = "zip") -> bytes:
    """Bytes of a zip or tar(.gz) archive holding ``entries``."""
    buf = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, k, payload, mode in entries:
                if k == "dir":
                    if not name:
                        continue
                    zi = zipfile.ZipInfo(name.rstrip("/") + "/")
                    zi.external_attr = (stat.S_IFDIR | 0o755) << 16
                    zf.writestr(zi, b"")
                elif k == "link":
                    zi = zipfile.ZipInfo(name)
                    zi.external_attr = (stat.S_IFLNK | 0o777) << 16
                    zf.writestr(zi, payload.encode())
                else:
                    zi = zipfile.ZipInfo(name)
                    zi.external_attr = (stat.S_IFREG | mode) << 16
                    zi.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(zi, payload)
    elif kind in ("tar.gz", "tar", "tgz"):
        mode = "w:gz" if kind != "tar" else "w"
        with tarfile.open(fileobj=buf, mode=mode) as tf:
            for name, k, payload, m in entries:
                if k == "dir":
                    if not name:
                        continue
                    ti = tarfile.TarInfo(name.rstrip("/"))
                    ti.type = tarfile.DIRTYPE
                    ti.mode = 0o755
                    tf.addfile(ti)
                elif k == "link":
                    ti = tarfile.TarInfo(name)
                    ti.type = tarfile.SYMTYPE
                    ti.linkname = payload
                    tf.addfile(ti)
                else:
                    ti = tarfile.TarInfo(name)
                    ti.size = len(payload)
                    ti.mode = m
                    tf.addfile(ti, io.BytesIO(payload))
    else:
        raise ValueError(f"unknown archive kind {kind!r}")
    return buf.getvalue()


def make_release_archive(
    kind: str = "tar.gz",
    backend: str = "cpu",
    files: dict | None = None,
    *,
    build: int = 6000,
    server: bytes | None = None,
    prefix: str = "build/bin",
) -> bytes:
    """A llama.cpp-like release archive: ``build/bin/llama-server`` + libs.

    ``files`` adds or replaces entries: ``{name: bytes}`` (mode 0o644, or 0o755 for
    names ending in ``llama-server``) or ``{name: ("link", target)}``. ``backend`` only
    adds a marker lib (e.g. ``libggml-vulkan.so``) so archives differ per backend.
    """
    entries = _default_entries(build, server, prefix)
    p = prefix.rstrip("/") + "/" if prefix else ""
    if backend != "cpu":
        entries.append((f"{p}libggml-{backend}.so", "file", f"fake {backend}".encode(), 0o644))
    for name, value in (files or {}).items():
        entries = [e for e in entries if e[0] != name]
        if isinstance(value, tuple) and value[0] == "link":
            entries.append((name, "link", value[1], 0o777))
        else:
            entries.append((name, "file", value, 0o755 if name.endswith("llama-server") else 0o644))
    return build_archive(entries, kind)


def make_hostile_archive(kind: str = "tar.gz", how: str = "dotdot") -> bytes:
    """An archive ``safe_extract`` must refuse: ``dotdot`` (``../escape``), ``absolute``
    (``/tmp/...``) or ``symlink`` (a link leaving the root, then a file through it)."""
    entries = _default_entries(6000, None, "build/bin")
    if how == "dotdot":
        entries.append(("../../escaped.txt", "file", b"pwned", 0o644))
    elif how == "absolute":
        entries.append(("/tmp/corral-escaped.txt", "file", b"pwned", 0o644))
    elif how == "symlink":
        entries.append(("build/out", "link", "../../..", 0o777))
        entries.append(("build/out/escaped.txt", "file", b"pwned", 0o644))
    else:
        raise ValueError(how)
    return build_archive(entries, kind)


# --------------------------------------------------------------------------- default set


def default_assets(tag: str) -> dict[str, bytes]:
    """The upstream-like asset set of one release (cached: archives are built once)."""
    return dict(_default_assets(tag))


@functools.lru_cache(maxsize=None)
def _default_assets(tag: str) -> tuple[tuple[str, bytes], ...]:
    return tuple(_build_default_assets(tag).items())


def _build_default_assets(tag: str) -> dict[str, bytes]:
    n = int(tag.lstrip("b"))
    t = f"llama-{tag}-bin"
    return {
        f"{t}-ubuntu-x64.zip": make_release_archive("zip", "cpu", build=n),
        f"{t}-ubuntu-vulkan-x64.zip": make_release_archive("zip", "vulkan", build=n),
        f"{t}-ubuntu-rocm-7.0-x64.tar.gz": make_release_archive("tar.gz", "hip", build=n),
        f"{t}-ubuntu-arm64.zip": make_release_archive("zip", "cpu", build=n),
        f"{t}-ubuntu-s390x.zip": make_release_archive("zip", "cpu", build=n),
        f"{t}-macos-arm64.zip": make_release_archive("zip", "metal", build=n),
        f"{t}-macos-x64.zip": make_release_archive("zip", "metal", build=n),
        f"{t}-win-cpu-x64.zip": make_release_archive("zip", "cpu", build=n),
        f"{t}-win-cpu-arm64.zip": make_release_archive("zip", "cpu", build=n),
        f"{t}-win-vulkan-x64.zip": make_release_archive("zip", "vulkan", build=n),
        f"{t}-win-cuda-12.4-x64.zip": make_release_archive("zip", "cuda", build=n),
        f"{t}-win-cuda-13.1-x64.zip": make_release_archive("zip", "cuda", build=n),
        f"{t}-win-hip-radeon-x64.zip": make_release_archive("zip", "hip", build=n),
        f"{t}-win-sycl-x64.zip": make_release_archive("zip", "sycl", build=n),
        "cudart-llama-bin-win-cuda-12.4-x64.zip": build_archive(
            [("cudart64_12.dll", "file", b"MZ fake", 0o644)], "zip"
        ),
        f"llama-{tag}-xcframework.zip": build_archive(
            [("llama.xcframework/Info.plist", "file", b"<plist/>", 0o644)], "zip"
        ),
    }


class FakeReleases:
    """The server. ``releases`` maps tag -> {asset name: bytes}, newest first."""

    def __init__(self, releases: dict[str, dict[str, bytes]] | None = None) -> None:
        if releases is None:
            releases = {"b6000": default_assets("b6000"), "b5990": default_assets("b5990")}
        self.releases: dict[str, dict[str, bytes]] = {t: dict(a) for t, a in releases.items()}
        self.wrong_digest: set[str] = set()
        self.no_digest: set[str] = set()
        self.drop: dict[str, tuple[int, int]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ---------------------------------------------------------------- setup
    def add_asset(self, tag: str, name: str, data: bytes) -> None:
        self.releases.setdefault(tag, {})[name] = data

    def add_release(
        self, tag: str, assets: dict[str, bytes] | None = None, *, newest: bool = True
    ) -> None:
        assets = default_assets(tag) if assets is None else assets
        if newest:
            self.releases = {tag: assets, **{k: v for k, v in self.releases.items() if k != tag}}
        else:
            self.releases[tag] = assets

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.host + API_BASE

    def downloads_of(self, name: str) -> list[str | None]:
        """The Range headers (None = none) of every object request for ``name``."""
        return [r for p, r in self.requests if p.startswith("/objects/") and p.endswith("/" + name)]

    # ---------------------------------------------------------------- JSON
    def release_json(self, tag: str) -> dict:
        assets = []
        for i, (name, data) in enumerate(self.releases[tag].items()):
            digest = hashlib.sha256(data).hexdigest()
            if name in self.wrong_digest:
                digest = hashlib.sha256(b"not-" + data).hexdigest()
            a = {
                "id": 1000 + i,
                "name": name,
                "size": len(data),
                "content_type": "application/zip" if name.endswith(".zip") else "application/gzip",
                "browser_download_url": f"{self.host}/download/{tag}/{name}",
            }
            if name not in self.no_digest:
                a["digest"] = f"sha256:{digest}"
            assets.append(a)
        return {
            "tag_name": tag,
            "name": tag,
            "draft": False,
            "prerelease": False,
            "html_url": f"https://github.com/ggml-org/llama.cpp/releases/tag/{tag}",
            "published_at": "2025-07-01T00:00:00Z",
            "assets": assets,
        }

    # ---------------------------------------------------------------- server
    def __enter__(self) -> FakeReleases:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _send(
                self,
                code: int,
                body: bytes,
                ctype: str = "application/json",
                headers: dict | None = None,
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, code: int, obj) -> None:
                self._send(code, json.dumps(obj).encode())

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                path = unquote(urlsplit(self.path).path)
                with fake._lock:
                    fake.requests.append((path, self.headers.get("Range")))
                if path.rstrip("/") == API_BASE:
                    return self._json(200, [fake.release_json(t) for t in fake.releases])
                if path == API_BASE + "/latest":
                    if not fake.releases:
                        return self._json(404, {"message": "Not Found"})
                    return self._json(200, fake.release_json(next(iter(fake.releases))))
                if path.startswith(API_BASE + "/tags/"):
                    tag = path[len(API_BASE + "/tags/") :]
                    if tag not in fake.releases:
                        return self._json(404, {"message": "Not Found"})
                    return self._json(200, fake.release_json(tag))
                parts = path.strip("/").split("/")
                if len(parts) == 3 and parts[0] in ("download", "objects"):
                    _, tag, name = parts
                    data = fake.releases.get(tag, {}).get(name)
                    if data is None:
                        return self._send(404, b"Not Found", "text/plain")
                    if parts[0] == "download":
                        return self._send(
                            302,
                            b"",
                            "text/plain",
                            {"Location": f"{fake.host}/objects/{tag}/{name}"},
                        )
                    return self._object(name, data)
                return self._json(404, {"message": "Not Found"})

            def _object(self, name: str, data: bytes) -> None:
                start, code = 0, 200
                rng = self.headers.get("Range")
                headers = {"Accept-Ranges": "bytes"}
                if rng and rng.startswith("bytes="):
                    first = rng[6:].split(",")[0]
                    a, _, b = first.partition("-")
                    try:
                        start = int(a)
                        end = int(b) if b else len(data) - 1
                    except ValueError:
                        start, end = 0, len(data) - 1
                    if start >= len(data):
                        return self._send(
                            416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"}
                        )
                    end = min(end, len(data) - 1)
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                    data, code = data[start : end + 1], 206
                with fake._lock:
                    drop = fake.drop.get(name)
                    if drop and drop[1] > 0:
                        fake.drop[name] = (drop[0], drop[1] - 1)
                    else:
                        drop = None
                if drop is None:
                    return self._send(code, data, "application/octet-stream", headers)
                self.send_response(code)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data[: drop[0]])
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), daemon=True, name="fake-releases"
        )
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
