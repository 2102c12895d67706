"""``corral doctor``: is this machine ready to run llama-server through corral?

Each check returns a :class:`Check` (ok / warn / fail with one line of detail and, where
it helps, what to do). The checks only read and probe; they change nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from corral.errors import CorralError
from corral.settings import Settings

LIB_PACKAGES = {
    "libvulkan.so.1": "libvulkan1",
    "libgomp.so.1": "libgomp1",
    "libcurl.so.4": "libcurl4",
    "libssl.so.3": "libssl3",
    "libcudart": "the CUDA runtime (nvidia-cuda-toolkit)",
    "libcublas": "the CUDA runtime (nvidia-cuda-toolkit)",
    "libamdhip64": "ROCm (rocm-hip-runtime)",
}


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn", "fail"
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def missing_libraries(binary: Path, env: dict[str, str] | None = None) -> list[str]:
    """Shared libraries ``ldd`` cannot resolve for ``binary`` (Linux only; [] elsewhere)."""
    if not shutil.which("ldd"):
        return []
    try:
        out = subprocess.run(
            ["ldd", str(binary)], capture_output=True, text=True, timeout=20, env=env
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split("=>")[0].strip() for line in out.stdout.splitlines() if "not found" in line]


def package_hint(lib: str) -> str:
    for prefix, pkg in LIB_PACKAGES.items():
        if lib.startswith(prefix):
            return pkg
    return "the package that provides " + lib


def run_checks(settings: Settings, daemon_alive: bool | None = None) -> list[Check]:
    checks = [_home(settings), _disk(settings)]
    binary_check, binary = _binary(settings)
    checks.append(binary_check)
    if binary is not None:
        checks.append(_libraries(binary))
        checks.append(_devices(binary))
    checks.append(_daemon(settings, daemon_alive))
    return checks


def _home(settings: Settings) -> Check:
    try:
        settings.ensure_dirs()
        with tempfile.NamedTemporaryFile(dir=settings.home):
            pass
    except OSError as exc:
        return Check(
            "home",
            "fail",
            f"{settings.home} is not writable: {exc.strerror}",
            "set CORRAL_HOME to a writable directory",
        )
    return Check("home", "ok", f"{settings.home} is writable")


def _disk(settings: Settings) -> Check:
    free = shutil.disk_usage(settings.home).free
    detail = f"{free / 1e9:.1f} GB free in {settings.home}"
    if free < 5e9:
        return Check("disk", "warn", detail, "models take GBs: free some space")
    return Check("disk", "ok", detail)


def _binary(settings: Settings) -> tuple[Check, Path | None]:
    from corral.builds.resolve import binary_version, resolve_binary
    from corral.store.db import Store

    try:
        store = Store(settings.db_path)
        try:
            resolved = resolve_binary(settings, store)
        finally:
            store.close()
        version = binary_version(resolved.path).splitlines()[0]
    except CorralError as exc:
        return Check(
            "llama-server", "fail", exc.message, "corral update (or corral builds add PATH)"
        ), None
    return Check(
        "llama-server", "ok", f"{resolved.path} ({version}; from {resolved.source})"
    ), resolved.path


def _libraries(binary: Path) -> Check:
    from corral.builds.resolve import binary_env

    missing = missing_libraries(binary, binary_env(binary))
    if missing:
        fix = "install " + ", ".join(sorted({package_hint(lib) for lib in missing}))
        return Check("libraries", "fail", "missing: " + ", ".join(missing), fix)
    return Check("libraries", "ok", "every shared library resolves")


def _devices(binary: Path) -> Check:
    from corral import gpu
    from corral.builds.resolve import binary_env

    try:
        out = subprocess.run(
            [str(binary), "--list-devices"],
            capture_output=True,
            text=True,
            timeout=60,
            env=binary_env(binary),
        )
        text = (out.stdout + out.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("devices", "warn", f"--list-devices failed: {exc}")
    seen = [ln.strip() for ln in text.splitlines()[1:] if ln.strip() and ln.strip() != "(none)"]
    host = gpu.detect()
    if host.gpus and not seen:
        names = ", ".join(g.name for g in host.gpus)
        backend, _ = gpu.best_backend(host)
        return Check(
            "devices",
            "warn",
            f"this build sees no GPU, but the host has {names}",
            f"corral update --backend {backend}",
        )
    if not seen:
        return Check("devices", "ok", "CPU-only build on a CPU-only host")
    return Check("devices", "ok", "the build sees: " + "; ".join(seen))


def _daemon(settings: Settings, alive: bool | None) -> Check:
    from corral.supervisor.process import ProcessOps

    if alive:
        return Check("daemon", "ok", f"answering at {settings.daemon_url}")
    try:
        free = ProcessOps().port_free(settings.host, settings.port)
    except CorralError as exc:
        return Check("daemon", "fail", exc.message)
    if free:
        return Check("daemon", "ok", f"not running; port {settings.port} is free for it")
    return Check(
        "daemon",
        "fail",
        f"port {settings.port} is taken by another program",
        "set CORRAL_PORT to a free port",
    )
