"""corral.builds.release against the fake GitHub releases server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from corral.builds import release as rel
from corral.builds.archive import UnsafeArchive
from corral.builds.release import (
    AlreadyInstalled,
    NoAsset,
    ReleaseDigestMismatch,
    ReleaseError,
    get_release,
    install_release,
    list_releases,
    pick_asset,
)
from corral.errors import BinaryError, NotFound
from tests.fakes.fake_releases import (
    FakeReleases,
    build_archive,
    default_assets,
    make_hostile_archive,
    make_release_archive,
    server_script,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell fake binary")

LINUX = {"os_name": "linux", "arch": "x86_64"}


@pytest.fixture
def gh():
    with FakeReleases() as fake:
        yield fake


@pytest.fixture(autouse=True)
def no_real_ldd(monkeypatch):
    """The fake binaries are shell scripts; ldd has nothing to say about them."""
    monkeypatch.setattr(rel, "run_ldd", lambda binary: "\tnot a dynamic executable\n")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


# --------------------------------------------------------------------------- listing


def test_list_releases_newest_first(gh):
    tags = [r["tag_name"] for r in list_releases(gh.url)]
    assert tags == ["b6000", "b5990"]


def test_latest_and_tag(gh):
    assert get_release(gh.url)["tag_name"] == "b6000"
    assert get_release(gh.url, "b5990")["tag_name"] == "b5990"
    assert get_release(gh.url, "5990")["tag_name"] == "b5990"
    with pytest.raises(NotFound):
        get_release(gh.url, "b1")


def test_unreachable_api_is_a_release_error():
    with pytest.raises(ReleaseError):
        list_releases("http://127.0.0.1:9/repos/x/y/releases", timeout=2)


# --------------------------------------------------------------------------- asset matching


@pytest.fixture
def b6000(gh):
    return gh.release_json("b6000")


@pytest.mark.parametrize(
    "os_name,arch,backend,expected",
    [
        ("linux", "x86_64", "cpu", "llama-b6000-bin-ubuntu-x64.zip"),
        ("linux", "x86_64", "vulkan", "llama-b6000-bin-ubuntu-vulkan-x64.zip"),
        ("linux", "x86_64", "rocm", "llama-b6000-bin-ubuntu-rocm-7.0-x64.tar.gz"),
        ("linux", "aarch64", "cpu", "llama-b6000-bin-ubuntu-arm64.zip"),
        ("macos", "arm64", "metal", "llama-b6000-bin-macos-arm64.zip"),
        ("darwin", "arm64", "cpu", "llama-b6000-bin-macos-arm64.zip"),
        ("darwin", "x86_64", "metal", "llama-b6000-bin-macos-x64.zip"),
        ("windows", "AMD64", "cpu", "llama-b6000-bin-win-cpu-x64.zip"),
        ("win32", "x86_64", "cuda", "llama-b6000-bin-win-cuda-13.1-x64.zip"),
        ("windows", "x86_64", "rocm", "llama-b6000-bin-win-hip-radeon-x64.zip"),
    ],
)
def test_pick_asset(b6000, os_name, arch, backend, expected):
    asset = pick_asset(b6000, os_name, arch, backend)
    assert asset is not None and asset["name"] == expected


def test_no_cuda_on_linux(b6000):
    assert pick_asset(b6000, "linux", "x86_64", "cuda") is None
    assert pick_asset(b6000, "linux", "riscv64", "cpu") is None


def test_cudart_and_xcframework_never_picked(b6000):
    names = {
        pick_asset(b6000, o, a, b) and pick_asset(b6000, o, a, b)["name"]
        for o in ("linux", "macos", "windows")
        for a in ("x64", "arm64")
        for b in ("cpu", "cuda", "vulkan", "metal", "rocm")
    }
    assert not any(n and ("cudart" in n or "xcframework" in n) for n in names)


def test_install_cuda_on_linux_says_build_from_source(gh, tmp_path):
    with pytest.raises(NoAsset, match="source") as ei:
        install_release(gh.url, tmp_path, backend="cuda", **LINUX)
    assert ei.value.backend == "cuda"
    assert not _tree(tmp_path)


# --------------------------------------------------------------------------- installs


def test_install_newest_zip(gh, tmp_path):
    seen = []
    b = install_release(
        gh.url, tmp_path, backend="cpu", progress=lambda d, t: seen.append((d, t)), **LINUX
    )
    assert b.build == "b6000" and b.backend == "cpu" and b.name == "b6000-cpu"
    assert b.root == tmp_path / "b6000-cpu"
    assert b.path == tmp_path / "b6000-cpu" / "build" / "bin" / "llama-server"
    assert os.access(b.path, os.X_OK)
    assert "version: 6000 (abc1234)" in b.version_text
    assert (b.path.parent / "libggml.so").resolve() == (b.path.parent / "libggml.so.0.1").resolve()
    assert (b.path.parent / "libllama.so").is_file()
    assert seen and seen[-1][0] == seen[-1][1]
    # the download is gone, no staging dirs left over
    assert not list((tmp_path / ".downloads").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == [".downloads", "b6000-cpu"]


def test_install_tag_tar_gz(gh, tmp_path):
    b = install_release(gh.url, tmp_path, backend="rocm", version="b5990", **LINUX)
    assert b.build == "b5990" and b.root.name == "b5990-rocm"
    assert b.asset == "llama-b5990-bin-ubuntu-rocm-7.0-x64.tar.gz"
    assert "version: 5990" in b.version_text
    assert (b.path.parent / "libggml-hip.so").is_file()


def test_install_without_digest_still_works(gh, tmp_path):
    gh.no_digest.add("llama-b6000-bin-ubuntu-vulkan-x64.zip")
    b = install_release(gh.url, tmp_path, backend="vulkan", **LINUX)
    assert b.root.name == "b6000-vulkan"


def test_digest_mismatch_refused(gh, tmp_path):
    name = "llama-b6000-bin-ubuntu-x64.zip"
    gh.wrong_digest.add(name)
    with pytest.raises(ReleaseDigestMismatch, match="sha256"):
        install_release(gh.url, tmp_path, backend="cpu", **LINUX)
    assert not (tmp_path / "b6000-cpu").exists()
    assert (tmp_path / ".downloads" / f"{name}.bad").is_file()
    assert _tree(tmp_path) == {".downloads", f".downloads/{name}.bad"}


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_hostile_archive_refused(tmp_path, how, kind):
    dest = tmp_path / "builds"
    ext = "zip" if kind == "zip" else "tar.gz"
    assets = {f"llama-b7000-bin-ubuntu-x64.{ext}": make_hostile_archive(kind, how)}
    before = _tree(tmp_path)
    with FakeReleases({"b7000": assets}) as fake, pytest.raises(UnsafeArchive):
        install_release(fake.url, dest, backend="cpu", **LINUX)
    assert not (dest / "b7000-cpu").exists()
    assert [p.name for p in dest.iterdir()] == [".downloads"]
    assert _tree(tmp_path) - before <= {
        "builds",
        "builds/.downloads",
        f"builds/.downloads/llama-b7000-bin-ubuntu-x64.{ext}.part",
    }
    assert not Path("/tmp/corral-escaped.txt").exists()


def test_already_installed(gh, tmp_path):
    install_release(gh.url, tmp_path, backend="cpu", **LINUX)
    n = len(gh.requests)
    with pytest.raises(AlreadyInstalled, match="b6000-cpu is already installed") as ei:
        install_release(gh.url, tmp_path, backend="cpu", **LINUX)
    assert ei.value.path == tmp_path / "b6000-cpu"
    assert ei.value.binary == tmp_path / "b6000-cpu" / "build" / "bin" / "llama-server"
    assert not any(p.startswith("/objects/") for p, _ in gh.requests[n:])  # no download


def test_force_reinstall_replaces(gh, tmp_path):
    first = install_release(gh.url, tmp_path, backend="cpu", **LINUX)
    (first.root / "marker").write_text("old")
    gh.add_asset(
        "b6000",
        "llama-b6000-bin-ubuntu-x64.zip",
        make_release_archive("zip", server=server_script(6000, "def5678")),
    )
    b = install_release(gh.url, tmp_path, backend="cpu", force=True, **LINUX)
    assert "def5678" in b.version_text
    assert not (b.root / "marker").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".downloads", "b6000-cpu"]


def test_force_reinstall_failure_keeps_old(gh, tmp_path):
    install_release(gh.url, tmp_path, backend="cpu", **LINUX)
    gh.add_asset(
        "b6000",
        "llama-b6000-bin-ubuntu-x64.zip",
        make_release_archive("zip", server=server_script(exit_code=3)),
    )
    with pytest.raises(BinaryError):
        install_release(gh.url, tmp_path, backend="cpu", force=True, **LINUX)
    b = tmp_path / "b6000-cpu" / "build" / "bin" / "llama-server"
    assert b.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".downloads", "b6000-cpu"]


def test_binary_that_does_not_run_leaves_nothing(tmp_path):
    assets = {
        "llama-b7000-bin-ubuntu-x64.zip": make_release_archive(
            "zip", server=server_script(exit_code=1)
        )
    }
    with FakeReleases({"b7000": assets}) as fake, pytest.raises(BinaryError, match="--version"):
        install_release(fake.url, tmp_path, backend="cpu", **LINUX)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".downloads"]


def test_archive_without_server_refused(tmp_path):
    assets = {
        "llama-b7000-bin-ubuntu-x64.zip": build_archive(
            [("build/bin/README", "file", b"hi", 0o644)], "zip"
        )
    }
    with (
        FakeReleases({"b7000": assets}) as fake,
        pytest.raises(BinaryError, match="no llama-server"),
    ):
        install_release(fake.url, tmp_path, backend="cpu", **LINUX)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".downloads"]


# --------------------------------------------------------------------------- resume


def test_dropped_connection_resumes_with_range(gh, tmp_path):
    name = "llama-b6000-bin-ubuntu-x64.zip"
    size = len(gh.releases["b6000"][name])
    gh.drop[name] = (size // 3, 1)
    b = install_release(gh.url, tmp_path, backend="cpu", **LINUX)
    ranges = gh.downloads_of(name)
    assert ranges[0] is None
    assert ranges[1] == f"bytes={size // 3}-"
    assert "version: 6000" in b.version_text


def test_drop_every_time_keeps_part_then_resumes_next_run(gh, tmp_path):
    name = "llama-b6000-bin-ubuntu-x64.zip"
    size = len(gh.releases["b6000"][name])
    gh.drop[name] = (100, 2)
    with pytest.raises(ReleaseError, match="resume"):
        install_release(gh.url, tmp_path, backend="cpu", attempts=2, **LINUX)
    part = tmp_path / ".downloads" / f"{name}.part"
    assert part.stat().st_size == 200
    assert not (tmp_path / "b6000-cpu").exists()
    install_release(gh.url, tmp_path, backend="cpu", **LINUX)
    assert gh.downloads_of(name) == [None, "bytes=100-", "bytes=200-"]
    assert size > 200


def test_stale_oversized_part_restarts(gh, tmp_path):
    name = "llama-b6000-bin-ubuntu-x64.zip"
    (tmp_path / ".downloads").mkdir(parents=True)
    (tmp_path / ".downloads" / f"{name}.part").write_bytes(b"x" * 10_000_000)
    install_release(gh.url, tmp_path, backend="cpu", **LINUX)
    assert gh.downloads_of(name) == [None]


# --------------------------------------------------------------------------- libraries


def test_missing_library_names_package(gh, tmp_path, monkeypatch):
    def fake_ldd(binary):
        return (
            "\tlinux-vdso.so.1 (0x00007ffd)\n"
            "\tlibvulkan.so.1 => not found\n"
            "\tlibgomp.so.1 => not found\n"
            "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n"
        )

    monkeypatch.setattr(rel, "run_ldd", fake_ldd)
    if not sys.platform.startswith("linux"):
        pytest.skip("ldd check runs on Linux only")
    with pytest.raises(BinaryError) as ei:
        install_release(gh.url, tmp_path, backend="vulkan", **LINUX)
    msg = str(ei.value)
    assert "libvulkan.so.1" in msg and "libvulkan1" in msg
    assert "libgomp.so.1" in msg and "libgomp1" in msg
    assert not (tmp_path / "b6000-vulkan").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".downloads"]


def test_library_hints():
    assert "libcurl4" in rel.library_hint("libcurl.so.4")
    assert "CUDA" in rel.library_hint("libcudart.so.12")
    assert "ROCm" in rel.library_hint("libamdhip64.so.6")
    assert rel.library_hint("libfoo.so.1") is None


def test_real_ldd_on_a_script_finds_nothing_missing(tmp_path, monkeypatch):
    monkeypatch.undo()  # use the real run_ldd
    script = tmp_path / "llama-server"
    script.write_bytes(server_script())
    script.chmod(0o755)
    assert rel.missing_libraries(script) == []


def test_default_assets_are_consistent():
    assets = default_assets("b6000")
    assert not any("ubuntu-cuda" in n for n in assets)
