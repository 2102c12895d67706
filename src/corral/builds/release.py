"""Download and install prebuilt llama.cpp releases (GitHub releases API).

``install_release(url, dest_root, backend=..., os_name=..., arch=...)``:

1. asks ``{url}/latest`` (or ``{url}/tags/<tag>`` for an explicit version);
2. picks the asset for os/arch/backend with :func:`pick_asset`;
3. refuses when ``dest_root/<tag>-<backend>`` exists (:class:`AlreadyInstalled`) unless
   ``force``;
4. downloads to ``dest_root/.downloads/<asset>.part``, resuming with ``Range: bytes=N-``
   (a dropped connection is retried up to ``attempts`` times, each retry resuming), and
   checks the asset's ``size`` and ``digest`` (``sha256:...``) when GitHub states them.
   A digest mismatch renames the file to ``<asset>.bad`` (kept for inspection) and
   raises :class:`ReleaseDigestMismatch`; nothing is installed;
5. unpacks with :func:`corral.builds.archive.safe_extract` into a hidden staging sibling,
   finds ``llama-server``, runs ``--version`` on it and (on Linux) ``ldd``; a failure
   removes the staging tree and raises :class:`BinaryError` (a missing shared library
   names a Debian package hint);
6. renames the staging tree to ``dest_root/<tag>-<backend>`` (with ``force``, the old
   tree is renamed aside first, and restored if the swap fails), deletes the download.

Asset naming (upstream): ``llama-<tag>-bin-<os>[-<variant>...]-<arch>.<zip|tar.gz>``
with os ``ubuntu``/``macos``/``win``; variants ``vulkan``, ``rocm-7.0``, ``cuda-12.4``,
``hip-radeon``, ``sycl``, ``cpu`` (Windows CPU) or none (Linux CPU, macOS Metal).
``cudart-*`` (CUDA runtime only) and ``*-xcframework`` assets are never picked.
Upstream publishes no CUDA build for Linux: :func:`pick_asset` returns None and the
caller should say "CUDA on Linux needs a source build".
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from corral.builds.archive import find_server, safe_extract, swap_into_place
from corral.builds.resolve import binary_env, binary_version
from corral.errors import (  # the release errors live in the one tree; importable from here too
    AlreadyInstalled,
    BinaryError,
    CorralError,
    NoAsset,
    NotFound,
    ReleaseDigestMismatch,
    ReleaseError,
    UsageError,
)

__all__ = [
    "InstalledBuild",
    "AlreadyInstalled",
    "ReleaseError",
    "ReleaseDigestMismatch",
    "NoAsset",
    "list_releases",
    "get_release",
    "pick_asset",
    "parse_asset_name",
    "install_release",
    "missing_libraries",
    "library_hint",
    "normalise_os",
    "normalise_arch",
]

Progress = Callable[[int, int | None], None]


def _already_installed(target: Path, name: str) -> AlreadyInstalled:
    """The refusal for an installed ``name``, naming its llama-server when there is one."""
    try:
        binary: Path | None = find_server(target)
    except CorralError:
        binary = None
    return AlreadyInstalled(
        f"{name} is already installed at {target}", path=target, name=name, binary=binary
    )


@dataclass(frozen=True)
class InstalledBuild:
    path: Path  # the llama-server binary
    build: str  # release tag, e.g. "b6000"
    backend: str
    version_text: str  # `llama-server --version` output
    root: Path = field(default=Path())  # dest_root/<build>-<backend>
    asset: str = ""
    sha256: str = ""

    @property
    def name(self) -> str:
        return f"{self.build}-{self.backend}"


# --------------------------------------------------------------------------- platform names


def normalise_os(os_name: str) -> str:
    """ "linux" | "macos" | "windows" from sys.platform / HostInfo.os / asset spellings."""
    o = os_name.lower()
    if o.startswith("linux") or o == "ubuntu":
        return "linux"
    if o in ("darwin", "macos", "mac", "osx"):
        return "macos"
    if o in ("win32", "win", "windows", "cygwin"):
        return "windows"
    return o


def normalise_arch(arch: str) -> str:
    """ "x64" | "arm64" | other, from platform.machine() or asset spellings."""
    a = arch.lower()
    if a in ("x86_64", "amd64", "x64", "x86-64"):
        return "x64"
    if a in ("aarch64", "arm64", "armv8", "armv8l"):
        return "arm64"
    return a


_ASSET_RE = re.compile(
    r"llama-(?P<tag>[^-]+)-bin-(?P<os>ubuntu|linux|macos|win)-(?P<rest>.+?)\.(?P<ext>zip|tar\.gz|tgz|tar\.xz)"
)


def parse_asset_name(name: str) -> dict | None:
    """{"os", "arch", "backend", "variant", "ext"} for a llama.cpp binary asset, else None."""
    m = _ASSET_RE.fullmatch(name)
    if not m:
        return None
    parts = m["rest"].split("-")
    arch = normalise_arch(parts[-1])
    variant = parts[:-1]
    os_name = normalise_os(m["os"])
    if not variant or variant == ["cpu"]:
        backend = "metal" if os_name == "macos" else "cpu"
    else:
        head = variant[0]
        backend = {"hip": "rocm", "rocm": "rocm", "cuda": "cuda", "vulkan": "vulkan"}.get(
            head, head
        )
    return {
        "os": os_name,
        "arch": arch,
        "backend": backend,
        "variant": "-".join(variant),
        "ext": m["ext"],
        "tag": m["tag"],
    }


def _version_key(variant: str) -> tuple:
    nums = re.findall(r"\d+", variant)
    return tuple(int(n) for n in nums)


def pick_asset(release: dict, os_name: str, arch: str, backend: str) -> dict | None:
    """The asset dict of ``release`` for this os/arch/backend, or None.

    ``backend`` is one of gpu.best_backend's names ("cuda", "rocm", "metal", "vulkan",
    "cpu"). On macOS "cpu" and "metal" both take the (Metal-enabled) macOS build. Among
    several matches (cuda-12.4 and cuda-13.1) the highest variant version wins; a plain
    (un-suffixed) variant is preferred for CPU.
    """
    want_os, want_arch = normalise_os(os_name), normalise_arch(arch)
    want = backend.lower()
    if want == "hip":
        want = "rocm"
    if want_os == "macos" and want == "cpu":
        want = "metal"
    candidates = []
    for asset in release.get("assets") or []:
        name = asset.get("name") or ""
        info = parse_asset_name(name)
        if info is None or info["os"] != want_os or info["arch"] != want_arch:
            continue
        if info["backend"] != want:
            continue
        candidates.append((_version_key(info["variant"]), name, asset))
    if not candidates:
        return None
    candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)
    return candidates[0][2]


# --------------------------------------------------------------------------- HTTP


def _client(timeout: float, token: str | None = None) -> httpx.Client:
    headers = {"Accept": "application/vnd.github+json", "User-Agent": "corral"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        follow_redirects=True,
        headers=headers,
    )


def _get_json(url: str, timeout: float, client: httpx.Client | None, what: str):
    own = client is None
    c = client or _client(timeout)
    try:
        r = c.get(url)
    except httpx.HTTPError as exc:
        raise ReleaseError(f"cannot reach {url}: {exc}") from None
    finally:
        if own:
            c.close()
    if r.status_code == 404:
        raise NotFound(f"{what} not found ({url})")
    if r.status_code in (403, 429):
        raise ReleaseError(
            f"{url} refused the request (HTTP {r.status_code}, rate limited?): {r.text[:200]}"
        )
    if r.status_code >= 400:
        raise ReleaseError(f"{url} answered HTTP {r.status_code}: {r.text[:200]}")
    try:
        return r.json()
    except ValueError:
        raise ReleaseError(f"{url} did not answer JSON") from None


def list_releases(
    url: str, timeout: float = 30, *, client: httpx.Client | None = None
) -> list[dict]:
    """The releases the API lists (newest first, drafts dropped)."""
    data = _get_json(url.rstrip("/"), timeout, client, "releases")
    if not isinstance(data, list):
        raise ReleaseError(f"{url} did not answer a list of releases")
    return [r for r in data if isinstance(r, dict) and not r.get("draft")]


#: A release tag as asked for by the user (``b6000``, ``6000``): one URL path segment.
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")  # always .fullmatch


def get_release(
    url: str, version: str | None = None, timeout: float = 30, *, client: httpx.Client | None = None
) -> dict:
    """The newest release, or the one tagged ``version`` (e.g. "b6000"; "6000" works too)."""
    base = url.rstrip("/")
    if version:
        if not VERSION_RE.fullmatch(version):
            raise UsageError(f"{version[:60]!r} is not a release tag (like b6000)")
        tag = version if not version.isdigit() else f"b{version}"
        rel = _get_json(f"{base}/tags/{tag}", timeout, client, f"release {tag}")
    else:
        rel = _get_json(f"{base}/latest", timeout, client, "latest release")
    if not isinstance(rel, dict) or not rel.get("tag_name"):
        raise ReleaseError(f"{base} answered a release without a tag_name")
    return rel


def _download(
    client: httpx.Client, asset: dict, part: Path, *, attempts: int, progress: Progress | None
) -> None:
    """Fetch the asset into ``part``, resuming whatever is already there."""
    url = asset.get("browser_download_url") or asset.get("url")
    if not url:
        raise ReleaseError(f"asset {asset.get('name')} has no download URL")
    total = asset.get("size") if isinstance(asset.get("size"), int) else None
    last_exc: Exception | None = None
    for _ in range(max(1, attempts)):
        have = part.stat().st_size if part.exists() else 0
        if total is not None and have == total:
            return
        if total is not None and have > total:
            part.unlink()
            have = 0
        headers = {"Accept": "application/octet-stream", "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with client.stream("GET", url, headers=headers) as r:
                if r.status_code == 416:
                    part.unlink(missing_ok=True)  # our partial file is bogus; start over
                    last_exc = ReleaseError(f"{url}: range not satisfiable")
                    continue
                if r.status_code >= 400:
                    raise ReleaseError(
                        f"download of {asset.get('name')} failed: HTTP {r.status_code} from {r.url}"
                    )
                mode = "ab" if (have and r.status_code == 206) else "wb"
                done = have if mode == "ab" else 0
                if total is None:
                    cl = r.headers.get("Content-Length")
                    if cl and cl.isdigit():
                        total = done + int(cl)
                with open(part, mode) as fh:
                    for chunk in r.iter_raw():  # unchunked, undecoded: every byte received counts
                        fh.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
        except httpx.HTTPError as exc:
            last_exc = exc
            continue
        size = part.stat().st_size
        if total is not None and size != total:
            last_exc = ReleaseError(f"{asset.get('name')}: got {size} of {total} bytes")
            continue
        return
    raise ReleaseError(
        f"download of {asset.get('name')} failed after {attempts} attempts: "
        f"{last_exc} (partial file kept at {part}; run again to resume)"
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- libraries

#: soname prefix -> what to install (Debian/Ubuntu package names).
LIBRARY_HINTS: tuple[tuple[str, str], ...] = (
    ("libvulkan.so", "apt install libvulkan1 (plus a Vulkan driver, e.g. mesa-vulkan-drivers)"),
    ("libgomp.so", "apt install libgomp1"),
    ("libcurl.so", "apt install libcurl4"),
    ("libssl.so", "apt install libssl3"),
    ("libcrypto.so", "apt install libssl3"),
    ("libstdc++.so", "apt install libstdc++6"),
    ("libcudart.so", "install the CUDA runtime (apt install nvidia-cuda-toolkit)"),
    ("libcublas", "install the CUDA runtime (apt install nvidia-cuda-toolkit)"),
    ("libcuda.so", "install the NVIDIA driver"),
    ("libamdhip64.so", "install ROCm (HIP runtime, e.g. apt install rocm-hip-runtime)"),
    ("libhipblas.so", "install ROCm (apt install hipblas)"),
    ("librocblas.so", "install ROCm (apt install rocblas)"),
    ("libOpenCL.so", "apt install ocl-icd-libopencl1"),
)


def library_hint(soname: str) -> str | None:
    for prefix, hint in LIBRARY_HINTS:
        if soname.startswith(prefix):
            return hint
    return None


def run_ldd(binary: Path) -> str | None:
    """``ldd binary`` output (stdout+stderr), or None when ldd is unavailable."""
    ldd = shutil.which("ldd")
    if not ldd:
        return None
    try:
        out = subprocess.run(
            [ldd, str(binary)],
            capture_output=True,
            text=True,
            timeout=30,
            env=binary_env(binary),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout + out.stderr


def missing_libraries(binary: Path) -> list[str]:
    """Shared libraries ``ldd`` reports as "not found" (empty when ldd is unavailable)."""
    text = run_ldd(binary) or ""
    missing = []
    for line in text.splitlines():
        if "not found" in line and "=>" in line:
            lib = line.split("=>", 1)[0].strip()
            if lib and lib not in missing:
                missing.append(lib)
    return missing


def _check_libraries(binary: Path) -> None:
    missing = missing_libraries(binary)
    if not missing:
        return
    hints = []
    for lib in missing:
        h = library_hint(lib)
        hints.append(f"{lib} ({h})" if h else lib)
    raise BinaryError(
        f"{binary.name} needs shared libraries this machine lacks: " + "; ".join(hints),
        detail=run_ldd(binary),
    )


# --------------------------------------------------------------------------- install


def _safe_component(s: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._+-]", "_", s)
    return s.lstrip(".") or "_"


def install_release(
    url: str,
    dest_root: Path,
    *,
    backend: str,
    os_name: str,
    arch: str,
    version: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    timeout: float = 30,
    attempts: int = 3,
    token: str | None = None,
    client: httpx.Client | None = None,
) -> InstalledBuild:
    """Download, verify, unpack and check one release build. See the module docstring."""
    dest_root = Path(dest_root)
    own = client is None
    c = client or _client(timeout, token)
    try:
        release = get_release(url, version, timeout, client=c)
        tag = _safe_component(str(release["tag_name"]))
        backend = backend.lower()
        asset = _asset_or_refuse(release, tag, os_name, arch, backend)
        name = f"{tag}-{_safe_component(backend)}"
        target = dest_root / name
        if os.path.lexists(target) and not force:
            raise _already_installed(target, name)
        downloads = dest_root / ".downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        part = downloads / f"{_safe_component(asset['name'])}.part"
        _download(c, asset, part, attempts=attempts, progress=progress)
    finally:
        if own:
            c.close()
    actual = _check_digest(part, asset)
    rel_server, version_text = _unpack_into_place(part, target, asset["name"], os_name, force)
    part.unlink(missing_ok=True)
    return InstalledBuild(
        path=target / rel_server,
        build=tag,
        backend=backend,
        version_text=version_text,
        root=target,
        asset=asset["name"],
        sha256=actual,
    )


def _asset_or_refuse(release: dict, tag: str, os_name: str, arch: str, backend: str) -> dict:
    """The release's asset for os/arch/backend, or NoAsset listing what it has."""
    asset = pick_asset(release, os_name, arch, backend)
    if asset is not None:
        return asset
    names = [a.get("name", "") for a in release.get("assets") or []]
    msg = f"release {tag} has no {backend} build for {normalise_os(os_name)}/{normalise_arch(arch)}"
    if backend == "cuda" and normalise_os(os_name) == "linux":
        msg += " (llama.cpp publishes no CUDA build for Linux: build from source)"
    raise NoAsset(
        msg,
        tag=tag,
        os_name=os_name,
        arch=arch,
        backend=backend,
        detail="assets: " + ", ".join(names),
    )


def _check_digest(part: Path, asset: dict) -> str:
    """The sha256 of the downloaded ``part``; when the release states a digest and it
    differs, the file is set aside as ``.bad`` and nothing is installed."""
    digest = asset.get("digest") or ""
    actual = _sha256(part)
    if digest.startswith("sha256:"):
        expected = digest.split(":", 1)[1].strip().lower()
        if actual != expected:
            bad = part.with_name(part.name.removesuffix(".part") + ".bad")
            os.replace(part, bad)
            raise ReleaseDigestMismatch(
                f"{asset['name']}: sha256 {actual} does not match the release's {expected}; "
                f"nothing installed (file kept at {bad})"
            )
    return actual


def _unpack_into_place(
    part: Path, target: Path, asset_name: str, os_name: str, force: bool
) -> tuple[Path, str]:
    """Unpack ``part`` into a staging directory beside ``target``, check its llama-server
    runs, and swap it into place: (the server's path inside the build, its --version)."""
    # The archive needs an extension safe_extract can sniff; it sniffs content, so the
    # .part name is fine.
    staging = target.parent / f".{target.name}.installing-{uuid.uuid4().hex[:8]}"
    try:
        safe_extract(part, staging)
        server = find_server(staging)
        if not os.access(server, os.X_OK):
            raise BinaryError(f"{asset_name}: {server.name} is not executable")
        version_text = binary_version(server)
        if sys.platform.startswith("linux") and normalise_os(os_name) == "linux":
            _check_libraries(server)
        rel_server = server.relative_to(staging)
        if not force and os.path.lexists(target):  # installed meanwhile by someone else
            raise _already_installed(target, target.name)
        swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return rel_server, version_text
