"""safe_extract against good release-like archives and hostile ones."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from corral.builds import archive as archive_mod
from corral.builds.archive import (
    TargetExists,
    UnsafeArchive,
    find_server,
    safe_extract,
    server_dir,
)
from corral.errors import BinaryError, CorralError, NotFound

SERVER_SCRIPT = b"#!/bin/sh\necho llama-server\n"

# --------------------------------------------------------------------------- builders
# entries: ("file", name, data, mode) | ("dir", name) | ("sym", name, target)
#          | ("hard", name, target) | ("fifo", name) | ("chr", name) | ("blk", name)


def make_tar(path: Path, entries, compression: str = "gz") -> Path:
    mode = "w" if compression == "" else f"w:{compression}"
    with tarfile.open(path, mode, format=tarfile.GNU_FORMAT) as tf:
        for e in entries:
            kind, name = e[0], e[1]
            ti = tarfile.TarInfo(name)
            if kind == "file":
                data, fmode = e[2], e[3] if len(e) > 3 else 0o644
                ti.size, ti.mode = len(data), fmode
                tf.addfile(ti, io.BytesIO(data))
                continue
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, e[2]
            elif kind == "hard":
                ti.type, ti.linkname = tarfile.LNKTYPE, e[2]
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            elif kind == "chr":
                ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "blk":
                ti.type, ti.devmajor, ti.devminor = tarfile.BLKTYPE, 8, 0
            tf.addfile(ti)
    return path


def make_zip(path: Path, entries) -> Path:
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # duplicate names are the point of some tests
        for e in entries:
            kind, name = e[0], e[1]
            zi = zipfile.ZipInfo(name)
            zi.create_system = 3
            if kind == "file":
                data, fmode = e[2], e[3] if len(e) > 3 else 0o644
                zi.external_attr = (stat.S_IFREG | fmode) << 16
                zi.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(zi, data)
            elif kind == "dir":
                zi.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
                zf.writestr(zi, b"")
            elif kind == "sym":
                zi.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(zi, e[2].encode())
            elif kind == "fifo":
                zi.external_attr = (stat.S_IFIFO | 0o644) << 16
                zf.writestr(zi, b"")
            elif kind == "chr":
                zi.external_attr = (stat.S_IFCHR | 0o644) << 16
                zf.writestr(zi, b"")
            else:  # pragma: no cover
                raise ValueError(kind)
    return path


RELEASE = [
    ("dir", "build/"),
    ("dir", "build/bin/"),
    ("file", "build/bin/llama-server", SERVER_SCRIPT, 0o755),
    ("file", "build/bin/libggml.so.0.26.0", b"\x7fELF fake ggml", 0o644),
    ("sym", "build/bin/libggml.so.0", "libggml.so.0.26.0"),
    ("sym", "build/bin/libggml.so", "libggml.so.0"),
    ("file", "build/bin/libllama.so", b"\x7fELF fake llama", 0o755),
    ("file", "LICENSE", b"MIT\n", 0o644),
]


def snapshot(root: Path) -> set[str]:
    """Every path under root (links not followed), relative."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


@pytest.fixture
def layout(tmp_path):
    """archives live in tmp/src, the target is tmp/home/bin/b1-cpu; '..' escapes land in tmp."""
    (tmp_path / "src").mkdir()
    (tmp_path / "home" / "bin").mkdir(parents=True)
    (tmp_path / "victim").mkdir()
    return tmp_path


def target_of(layout: Path) -> Path:
    return layout / "home" / "bin" / "b1-cpu"


def build(layout: Path, fmt: str, entries) -> Path:
    if fmt == "zip":
        return make_zip(layout / "src" / "a.zip", entries)
    comp = {"tar": "", "tgz": "gz", "txz": "xz", "tbz": "bz2"}[fmt]
    return make_tar(layout / "src" / f"a.{fmt}", entries, comp)


def assert_refused(layout: Path, arc: Path, match: str | None = None, **kw) -> UnsafeArchive:
    before = snapshot(layout)
    with pytest.raises(UnsafeArchive, match=match) as ei:
        safe_extract(arc, target_of(layout), **kw)
    assert snapshot(layout) == before  # nothing written anywhere, staging gone
    assert list((layout / "home" / "bin").iterdir()) == []
    assert ei.value.status == 422 and ei.value.code == "unsafe_archive"
    assert ei.value.exit_code == 2
    return ei.value


# --------------------------------------------------------------------------- good


@pytest.mark.parametrize("fmt", ["tgz", "zip", "tar", "txz", "tbz"])
def test_good_release_extracts(layout, fmt):
    arc = build(layout, fmt, RELEASE)
    target = target_of(layout)
    written = safe_extract(arc, target)
    assert target.is_dir()
    assert [p.name for p in (layout / "home" / "bin").iterdir()] == ["b1-cpu"]  # no staging left
    assert target / "build/bin/llama-server" in written
    assert all(p == target or target in p.parents for p in written)

    server = target / "build/bin/llama-server"
    assert server.read_bytes() == SERVER_SCRIPT
    assert os.access(server, os.X_OK)
    assert stat.S_IMODE(server.stat().st_mode) == 0o755
    lib = target / "build/bin/libggml.so.0.26.0"
    assert stat.S_IMODE(lib.stat().st_mode) == 0o644
    assert stat.S_IMODE((target / "build/bin/libllama.so").stat().st_mode) == 0o755

    so = target / "build/bin/libggml.so"
    assert so.is_symlink() and os.readlink(so) == "libggml.so.0"
    assert os.readlink(target / "build/bin/libggml.so.0") == "libggml.so.0.26.0"
    assert so.resolve() == lib.resolve()
    assert so.read_bytes() == b"\x7fELF fake ggml"

    assert find_server(target) == server
    assert server_dir(target) == target / "build/bin"


def test_relative_link_into_sibling_dir_kept(layout):
    arc = build(
        layout,
        "tgz",
        [
            ("file", "lib/libx.so.1", b"x"),
            ("sym", "bin/libx.so", "../lib/libx.so.1"),
            ("file", "bin/llama-server", SERVER_SCRIPT, 0o755),
            ("sym", "bin/here", "."),
        ],
    )
    safe_extract(arc, target_of(layout))
    t = target_of(layout)
    assert (t / "bin/libx.so").read_bytes() == b"x"
    assert os.readlink(t / "bin/libx.so") == "../lib/libx.so.1"


def test_dot_slash_prefixed_tar_names(layout):
    arc = build(
        layout,
        "tgz",
        [("dir", "./"), ("file", "./llama-server", SERVER_SCRIPT, 0o755), ("dir", "./a//b/")],
    )
    written = safe_extract(arc, target_of(layout))
    t = target_of(layout)
    assert (t / "llama-server").is_file() and (t / "a" / "b").is_dir()
    assert t / "llama-server" in written
    assert find_server(t) == t / "llama-server"
    assert server_dir(t) == t


def test_hardlink_inside_is_copied(layout):
    arc = build(layout, "tgz", [("file", "a", b"data", 0o755), ("hard", "b", "a")])
    safe_extract(arc, target_of(layout))
    t = target_of(layout)
    assert (t / "b").read_bytes() == b"data"
    assert os.stat(t / "a").st_ino != os.stat(t / "b").st_ino


def test_zip_without_unix_modes_gets_default_perms(layout):
    arc = layout / "src" / "win.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        for name in ("llama-server.exe", "ggml.dll"):
            zi = zipfile.ZipInfo(name)
            zi.create_system = 0  # MS-DOS: no unix mode in the high bits
            zi.external_attr = 0x20  # FILE_ATTRIBUTE_ARCHIVE
            zf.writestr(zi, b"MZ")
    safe_extract(arc, target_of(layout))
    exe = target_of(layout) / "llama-server.exe"
    assert stat.S_IMODE(exe.stat().st_mode) == 0o644
    assert find_server(target_of(layout)) == exe


# --------------------------------------------------------------------------- hostile names


@pytest.mark.parametrize("fmt", ["tgz", "zip"])
@pytest.mark.parametrize(
    "name, why",
    [
        ("../evil", r"'\.\.'"),
        ("/abs/evil", "absolute"),
        ("a/../../evil", r"'\.\.'"),
        ("a/../b", r"'\.\.'"),
        ("..", r"'\.\.'"),
        ("a\\..\\..\\evil", "backslash"),
    ],
)
def test_bad_names_refused(layout, fmt, name, why):
    arc = build(layout, fmt, [("file", "ok", b"fine"), ("file", name, b"evil")])
    assert_refused(layout, arc, why)


@pytest.mark.parametrize("fmt", ["tgz", "zip"])
@pytest.mark.parametrize(
    "name, link, why",
    [
        ("passwd", "/etc/passwd", "absolute target"),
        ("x", "../../x", "outside"),
        ("a/b/x", "../../../x", "outside"),
        ("up", "..", "outside"),
        ("empty", "", "empty target"),
    ],
)
def test_bad_symlinks_refused(layout, fmt, name, link, why):
    arc = build(layout, fmt, [("file", "ok", b"fine"), ("sym", name, link)])
    assert_refused(layout, arc, why)


@pytest.mark.parametrize("fmt", ["tgz", "zip"])
def test_symlink_then_file_through_link_refused(layout, fmt):
    victim = layout / "victim"
    arc = build(layout, fmt, [("sym", "lib", str(victim)), ("file", "lib/file", b"pwned")])
    assert_refused(layout, arc)
    assert list(victim.iterdir()) == []


@pytest.mark.parametrize("fmt", ["tgz", "zip"])
def test_inside_symlink_then_file_through_link_refused(layout, fmt):
    # even a link that points inside must not be written through
    arc = build(layout, fmt, [("dir", "real/"), ("sym", "lib", "real"), ("file", "lib/f", b"x")])
    assert_refused(layout, arc, "through symlink")


@pytest.mark.parametrize("fmt", ["tgz", "zip"])
def test_file_then_symlink_same_name_refused(layout, fmt):
    arc = build(layout, fmt, [("file", "lib", b"x"), ("sym", "lib", "/etc/passwd")])
    assert_refused(layout, arc)
    arc2 = build(layout, fmt, [("sym", "lib", "ok"), ("file", "lib", b"x")])
    assert_refused(layout, arc2, "duplicate")


@pytest.mark.parametrize("fmt", ["tgz", "zip"])
def test_case_folded_collision_refused(layout, fmt):
    victim = layout / "victim"
    arc = build(layout, fmt, [("sym", "Lib", str(victim) + "x"), ("file", "lib/f", b"x")])
    assert_refused(layout, arc)
    arc = build(layout, fmt, [("sym", "Lib", "a"), ("file", "lib/f", b"x")])
    assert_refused(layout, arc, "through")


def test_symlink_chain_escaping_via_real_tree_refused(layout):
    # lexically "y/.." is the root, but y -> "." makes it the root's parent
    arc = build(layout, "tgz", [("sym", "y", "."), ("sym", "x", "y/..")])
    assert_refused(layout, arc, "resolves outside")


def test_hardlink_to_outside_refused(layout):
    arc = build(layout, "tgz", [("hard", "passwd", "/etc/passwd")])
    assert_refused(layout, arc, "absolute")
    arc = build(layout, "tgz", [("hard", "x", "../../victim/y")])
    assert_refused(layout, arc, r"'\.\.'")


def test_hardlink_to_symlink_or_missing_refused(layout):
    arc = build(layout, "tgz", [("sym", "s", "ok"), ("hard", "h", "s")])
    assert_refused(layout, arc, "not a file")
    arc = build(layout, "tgz", [("hard", "h", "nothere")])
    assert_refused(layout, arc, "not a file")
    arc = build(layout, "tgz", [("hard", "h", "later"), ("file", "later", b"x")])
    assert_refused(layout, arc, "later")


@pytest.mark.parametrize("kind", ["fifo", "chr", "blk"])
def test_special_tar_entries_refused(layout, kind):
    arc = build(layout, "tgz", [("file", "ok", b"x"), (kind, "dev")])
    assert_refused(layout, arc, "refused")


@pytest.mark.parametrize("kind", ["fifo", "chr"])
def test_special_zip_entries_refused(layout, kind):
    arc = build(layout, "zip", [("file", "ok", b"x"), (kind, "dev")])
    assert_refused(layout, arc, "special file")


@pytest.mark.parametrize("fmt", ["tgz", "zip"])
def test_duplicate_files_refused_but_dirs_ok(layout, fmt):
    arc = build(layout, fmt, [("file", "a", b"1"), ("file", "a", b"2")])
    assert_refused(layout, arc, "duplicate")
    arc = build(layout, fmt, [("dir", "d/"), ("dir", "d/"), ("file", "d/f", b"1")])
    safe_extract(arc, target_of(layout))
    assert (target_of(layout) / "d/f").read_bytes() == b"1"


@pytest.mark.parametrize("fmt", ["tgz", "zip"])
def test_file_under_file_refused(layout, fmt):
    arc = build(layout, fmt, [("file", "a", b"1"), ("file", "a/b", b"2")])
    assert_refused(layout, arc, "through file")


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize("fmt", ["tgz", "zip"])
def test_declared_size_over_limit_refused(layout, fmt):
    arc = build(layout, fmt, [("file", "big", b"\0" * 200_000)])
    assert_refused(layout, arc, "more than 100000 bytes", max_bytes=100_000)


@pytest.mark.parametrize("fmt", ["tgz", "zip"])
def test_write_counter_catches_lying_sizes(layout, fmt, monkeypatch):
    """A bomb whose headers lie: disable the declared-size check; the counter still stops it."""
    real_entry = archive_mod._Budget.entry

    def lying_entry(self, size):
        real_entry(self, 0)

    monkeypatch.setattr(archive_mod._Budget, "entry", lying_entry)
    arc = build(layout, fmt, [("file", "big", b"\0" * 5_000_000)])
    assert_refused(layout, arc, "declared sizes were false", max_bytes=1_000_000)


def test_hardlink_copies_count_against_limit(layout):
    entries = [("file", "a", b"x" * 600)] + [("hard", f"h{i}", "a") for i in range(3)]
    arc = build(layout, "tgz", entries)
    assert_refused(layout, arc, "more than 1000 bytes", max_bytes=1000)


@pytest.mark.parametrize("fmt", ["tgz", "zip"])
def test_too_many_files_refused(layout, fmt):
    arc = build(layout, fmt, [("file", f"f{i}", b"") for i in range(11)])
    assert_refused(layout, arc, "more than 10 entries", max_files=10)
    safe_extract(arc, target_of(layout), max_files=11)


# --------------------------------------------------------------------------- modes


@pytest.mark.parametrize("fmt", ["tgz", "zip"])
def test_setuid_setgid_sticky_stripped(layout, fmt):
    arc = build(
        layout,
        fmt,
        [
            ("file", "suid", b"x", 0o4755),
            ("file", "sgid", b"x", 0o2711),
            ("file", "w", b"x", 0o1777),
        ],
    )
    safe_extract(arc, target_of(layout))
    t = target_of(layout)
    assert stat.S_IMODE((t / "suid").stat().st_mode) == 0o755
    assert stat.S_IMODE((t / "sgid").stat().st_mode) == 0o711
    assert stat.S_IMODE((t / "w").stat().st_mode) == 0o755  # no world write, no sticky


# --------------------------------------------------------------------------- target / corrupt


@pytest.mark.parametrize("existing", ["dir", "emptydir", "file", "symlink"])
def test_target_exists_refused(layout, existing):
    arc = build(layout, "tgz", RELEASE)
    t = target_of(layout)
    if existing == "dir":
        t.mkdir()
        (t / "keep").write_text("mine")
    elif existing == "emptydir":
        t.mkdir()
    elif existing == "file":
        t.write_text("mine")
    else:
        t.symlink_to(layout / "victim")
    before = snapshot(layout)
    with pytest.raises(TargetExists, match="already exists") as ei:
        safe_extract(arc, t)
    assert isinstance(ei.value, CorralError) and ei.value.status == 409
    assert snapshot(layout) == before


@pytest.mark.parametrize("fmt", ["tgz", "zip", "tar", "txz", "tbz"])
def test_truncated_archive_is_clear_error(layout, fmt):
    big = [("file", f"f{i}", os.urandom(20_000)) for i in range(5)]
    arc = build(layout, fmt, big)
    data = arc.read_bytes()
    arc.write_bytes(data[: len(data) // 2])
    err = assert_refused(layout, arc)
    assert "corrupt" in err.message or "not a zip or tar" in err.message


@pytest.mark.parametrize("fmt", ["tgz", "zip"])
def test_flipped_bytes_is_clear_error(layout, fmt):
    arc = build(layout, fmt, [("file", "f", os.urandom(50_000))])
    data = bytearray(arc.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    arc.write_bytes(bytes(data))
    err = assert_refused(layout, arc)
    assert "corrupt" in err.message


@pytest.mark.parametrize("content", [b"", b"hello, not an archive", b"PK\x03\x04garbage"])
def test_not_an_archive(layout, content):
    arc = layout / "src" / "junk.bin"
    arc.write_bytes(content)
    assert_refused(layout, arc)


def test_missing_archive(layout):
    with pytest.raises(NotFound):
        safe_extract(layout / "src" / "nope.tgz", target_of(layout))


def test_unsafe_archive_shape():
    e = UnsafeArchive("x")
    assert isinstance(e, CorralError)
    assert (e.status, e.code, e.exit_code) == (422, "unsafe_archive", 2)
    assert e.to_dict() == {"error": {"code": "unsafe_archive", "message": "x"}}


# --------------------------------------------------------------------------- find_server


def test_find_server_prefers_shallowest(tmp_path):
    (tmp_path / "build/bin").mkdir(parents=True)
    (tmp_path / "build/bin/llama-server").write_bytes(b"x")
    assert find_server(tmp_path) == tmp_path / "build/bin/llama-server"
    (tmp_path / "llama-server").write_bytes(b"x")
    assert find_server(tmp_path) == tmp_path / "llama-server"


def test_find_server_ignores_dirs_and_outside_links(tmp_path):
    root = tmp_path / "root"
    (root / "llama-server").mkdir(parents=True)  # a directory of that name
    outside = tmp_path / "outside-server"
    outside.write_bytes(b"x")
    (root / "sub").mkdir()
    (root / "sub" / "llama-server").symlink_to(outside)
    with pytest.raises(BinaryError):
        find_server(root)
    (root / "sub" / "deeper").mkdir()
    (root / "sub" / "deeper" / "llama-server.exe").write_bytes(b"MZ")
    assert server_dir(root) == root / "sub" / "deeper"


def test_find_server_none(tmp_path):
    (tmp_path / "lib.so").write_bytes(b"x")
    with pytest.raises(BinaryError, match="no llama-server"):
        find_server(tmp_path)


# --------------------------------------------------------------------------- property

SEGMENTS = ["a", "..", ".", "/", "b"]
name_st = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6).map(
    lambda segs: "/".join(segs) if len(segs) % 2 else "".join(segs)
)
entry_st = st.one_of(
    st.tuples(st.just("file"), name_st, st.binary(max_size=8)),
    st.tuples(st.just("dir"), name_st),
    st.tuples(st.just("sym"), name_st, name_st),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(entry_st, min_size=1, max_size=5), fmt=st.sampled_from(["tar", "zip"]))
def test_random_names_never_escape(entries, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        sandbox = base / "x" / "y" / "z"  # deep, so '..' escapes would still land in base
        sandbox.mkdir(parents=True)
        arc = base / ("a.zip" if fmt == "zip" else "a.tar")
        if fmt == "zip":
            make_zip(arc, entries)
        else:
            make_tar(arc, entries, "")
        before = snapshot(base)
        target = sandbox / "out"
        try:
            written = safe_extract(arc, target)
        except UnsafeArchive:
            assert snapshot(base) == before
            return
        after = snapshot(base)
        new = after - before
        out_rel = os.path.relpath(target, base)
        assert all(p == out_rel or p.startswith(out_rel + os.sep) for p in new), new
        assert before <= after
        root_real = os.path.realpath(target)
        for p in written:
            assert p == target or target in p.parents
        for dirpath, dirnames, filenames in os.walk(target):
            for n in dirnames + filenames:
                p = os.path.join(dirpath, n)
                if os.path.islink(p):
                    real = os.path.realpath(p)
                    assert real == root_real or real.startswith(root_real + os.sep)
