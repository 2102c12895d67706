"""Unpack untrusted llama.cpp release archives (zip, tar, tar.gz/xz/bz2) safely.

``safe_extract`` reads the whole member list first and refuses the archive — before
writing a byte — when any entry is an absolute path, has a ``..`` component, is a
device/fifo/socket, is a hard or symbolic link whose target would leave the root
(absolute targets are always refused), would be written *through* a link or over
another entry (the link-then-file trick), or when the archive declares more than
``max_bytes`` or holds more than ``max_files`` entries. It then writes everything
into a fresh staging directory beside ``target`` (never following a symlink while
writing, counting the bytes actually produced against ``max_bytes``), checks every
symlink it created with ``realpath``, and renames the staging directory to
``target``. On any failure the staging directory is removed and nothing else was
touched.

Collision checks compare names case-folded and NFC-normalised, so the same archive
is judged identically on case-insensitive (macOS) filesystems.

Permissions: files get ``mode & 0o755`` (plus owner read/write); setuid, setgid and
sticky bits are never kept; directories are ``0o755``. Zip modes come from
``external_attr >> 16``; a zip entry with ``S_IFLNK`` becomes a symlink.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import unicodedata
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from corral.errors import (  # UnsafeArchive, TargetExists: importable from here too
    BinaryError,
    CorralError,
    NotFound,
    TargetExists,
    UnsafeArchive,
)

__all__ = [
    "UnsafeArchive",
    "TargetExists",
    "safe_extract",
    "find_server",
    "server_dir",
    "SERVER_NAMES",
]

DEFAULT_MAX_BYTES = 8 << 30
DEFAULT_MAX_FILES = 10_000
SERVER_NAMES = ("llama-server", "llama-server.exe")

_CHUNK = 1 << 20
_MAX_LINK_TARGET = 4096


# --------------------------------------------------------------------------- members

FILE, DIR, SYMLINK, HARDLINK = "file", "dir", "symlink", "hardlink"


@dataclass
class _Member:
    name: str  # normalised, root-relative, "/"-separated, no "." / ".." parts
    kind: str
    mode: int = 0o644
    size: int = 0  # declared
    link: str = ""  # symlink: raw target; hardlink: normalised root-relative name
    opener: Callable[[], IO[bytes]] | None = field(default=None, repr=False)


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def _normalise(raw: str, *, what: str = "entry") -> str:
    """Root-relative name for an archive entry, or UnsafeArchive."""
    if not isinstance(raw, str):  # pragma: no cover - defensive
        raise UnsafeArchive(f"{what} name is not text")
    if "\x00" in raw:
        raise UnsafeArchive(f"{what} {raw!r}: NUL byte in name")
    if "\\" in raw:
        raise UnsafeArchive(f"{what} {raw!r}: backslash in name")
    if raw.startswith("/"):
        raise UnsafeArchive(f"{what} {raw!r}: absolute path")
    if len(raw) >= 2 and raw[1] == ":" and raw[0].isalpha():
        raise UnsafeArchive(f"{what} {raw!r}: drive-letter path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{what} {raw!r}: '..' in path")
    return "/".join(parts)


def _check_symlink_target(name: str, target: str) -> None:
    if not target:
        raise UnsafeArchive(f"symlink {name!r}: empty target")
    if "\x00" in target or "\\" in target:
        raise UnsafeArchive(f"symlink {name!r} -> {target!r}: invalid characters in target")
    if target.startswith("/") or (len(target) >= 2 and target[1] == ":" and target[0].isalpha()):
        raise UnsafeArchive(f"symlink {name!r} -> {target!r}: absolute target")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith(("../", "/")):
        raise UnsafeArchive(f"symlink {name!r} -> {target!r}: points outside the archive")


def _file_mode(mode: int) -> int:
    perm = mode & 0o755
    return (perm | 0o600) if perm else 0o644


class _Budget:
    def __init__(self, max_bytes: int, max_files: int) -> None:
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.declared = 0
        self.entries = 0
        self.written = 0

    def entry(self, size: int) -> None:
        self.entries += 1
        if self.entries > self.max_files:
            raise UnsafeArchive(f"archive holds more than {self.max_files} entries")
        if size < 0:
            raise UnsafeArchive("archive declares a negative entry size")
        self.declared += size
        if self.declared > self.max_bytes:
            raise UnsafeArchive(f"archive unpacks to more than {self.max_bytes} bytes")

    def wrote(self, n: int) -> None:
        self.written += n
        if self.written > self.max_bytes:
            raise UnsafeArchive(
                f"archive unpacks to more than {self.max_bytes} bytes (declared sizes were false)"
            )


# --------------------------------------------------------------------------- readers


def _zip_members(zf: zipfile.ZipFile, budget: _Budget) -> Iterator[_Member]:
    for info in zf.infolist():
        budget.entry(info.file_size)
        if info.flag_bits & 0x1:
            raise UnsafeArchive(f"entry {info.filename!r} is encrypted")
        mode = info.external_attr >> 16
        fmt = stat.S_IFMT(mode)
        raw = info.filename
        if fmt == stat.S_IFLNK:
            kind = SYMLINK
        elif fmt == stat.S_IFDIR or raw.endswith("/"):
            kind = DIR
        elif fmt in (0, stat.S_IFREG):
            kind = FILE
        else:
            raise UnsafeArchive(f"entry {raw!r}: special file (mode {oct(mode)}) refused")
        name = _normalise(raw)
        opener = (lambda info=info: zf.open(info)) if kind in (FILE, SYMLINK) else None
        member = _Member(name, kind, mode, info.file_size, opener=opener)
        if kind == SYMLINK:
            if info.file_size > _MAX_LINK_TARGET:
                raise UnsafeArchive(f"symlink {raw!r}: target too long")
            with zf.open(info) as fh:
                data = fh.read(_MAX_LINK_TARGET + 1)
            budget.wrote(len(data))
            if len(data) > _MAX_LINK_TARGET:
                raise UnsafeArchive(f"symlink {raw!r}: target too long")
            try:
                member.link = data.decode("utf-8")
            except UnicodeDecodeError:
                raise UnsafeArchive(f"symlink {raw!r}: target is not UTF-8") from None
            member.opener = None
        yield member


def _tar_members(tf: tarfile.TarFile, budget: _Budget) -> Iterator[_Member]:
    # Iterating (rather than getmembers()) lets the limits stop a hostile stream
    # before tarfile decompresses past a huge declared entry.
    for ti in tf:
        raw = ti.name
        if ti.isreg():
            budget.entry(ti.size)
            yield _Member(
                _normalise(raw), FILE, ti.mode, ti.size, opener=lambda ti=ti: tf.extractfile(ti)
            )
        elif ti.isdir():
            budget.entry(0)
            yield _Member(_normalise(raw), DIR, ti.mode)
        elif ti.issym():
            budget.entry(0)
            yield _Member(_normalise(raw), SYMLINK, link=ti.linkname)
        elif ti.islnk():
            budget.entry(0)
            yield _Member(
                _normalise(raw),
                HARDLINK,
                ti.mode,
                link=_normalise(ti.linkname, what=f"hard link {raw!r} target"),
            )
        else:
            kind = (
                "character device"
                if ti.ischr()
                else "block device"
                if ti.isblk()
                else "fifo"
                if ti.isfifo()
                else f"type {ti.type!r}"
            )
            raise UnsafeArchive(f"entry {raw!r}: {kind} refused")


# --------------------------------------------------------------------------- validation


def _validate(members: list[_Member]) -> None:
    """Refuse collisions, writes through links, and links leaving the root."""
    by_key: dict[str, _Member] = {}
    order: dict[str, int] = {}
    for i, m in enumerate(members):
        if not m.name:
            if m.kind == DIR:
                continue  # "./" — the root itself
            raise UnsafeArchive(f"{m.kind} entry with an empty name")
        k = _key(m.name)
        prev = by_key.get(k)
        if prev is not None:
            if prev.kind == DIR and m.kind == DIR:
                continue
            raise UnsafeArchive(f"duplicate entry {m.name!r} ({prev.kind} then {m.kind}) refused")
        by_key[k] = m
        order[k] = i
        if m.kind == SYMLINK:
            _check_symlink_target(m.name, m.link)

    for m in members:
        if not m.name:
            continue
        # every ancestor must be a directory (explicit or implicit), never a link or file
        parts = m.name.split("/")
        for depth in range(1, len(parts)):
            anc = by_key.get(_key("/".join(parts[:depth])))
            if anc is not None and anc.kind != DIR:
                raise UnsafeArchive(
                    f"entry {m.name!r} would be written through {anc.kind} {anc.name!r}"
                )
        if m.kind == HARDLINK:
            src = by_key.get(_key(m.link)) if m.link else None
            if src is None or src.kind != FILE:
                raise UnsafeArchive(
                    f"hard link {m.name!r} -> {m.link!r}: target is not a file in the archive"
                )
            if order[_key(m.link)] > order[_key(m.name)]:
                raise UnsafeArchive(f"hard link {m.name!r} -> {m.link!r}: target comes later")


# --------------------------------------------------------------------------- writing


def _inside(root_real: str, path: str) -> bool:
    return path == root_real or path.startswith(root_real + os.sep)


def _write_file(root: str, root_real: str, m: _Member, budget: _Budget, *, exact: bool) -> None:
    dest = os.path.join(root, *m.name.split("/"))
    parent = os.path.dirname(dest)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    if not _inside(root_real, os.path.realpath(parent)):  # defence in depth
        raise UnsafeArchive(f"entry {m.name!r} resolves outside the archive")
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    count = 0
    try:
        assert m.opener is not None
        try:
            src = m.opener()
        except (KeyError, NotImplementedError, RuntimeError) as exc:
            raise UnsafeArchive(f"cannot read entry {m.name!r}: {exc}") from None
        with src:
            while True:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                count += len(chunk)
                budget.wrote(len(chunk))
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        if exact and count != m.size:
            raise UnsafeArchive(f"entry {m.name!r}: {count} bytes, header says {m.size}")
        os.fchmod(fd, _file_mode(m.mode))
    finally:
        os.close(fd)


def _extract(
    members: list[_Member], staging: str, budget: _Budget, *, exact_sizes: bool
) -> list[str]:
    root_real = os.path.realpath(staging)
    written: list[str] = []
    symlinks: list[str] = []
    for m in members:
        if not m.name:
            continue
        dest = os.path.join(staging, *m.name.split("/"))
        if m.kind == DIR:
            os.makedirs(dest, mode=0o755, exist_ok=True)
            if os.path.islink(dest) or not os.path.isdir(dest):  # pragma: no cover - validated
                raise UnsafeArchive(f"directory {m.name!r} collides with another entry")
            os.chmod(dest, 0o755)
        elif m.kind == FILE:
            _write_file(staging, root_real, m, budget, exact=exact_sizes)
        elif m.kind == SYMLINK:
            os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
            os.symlink(m.link, dest)
            symlinks.append(dest)
        elif m.kind == HARDLINK:
            src = os.path.join(staging, *m.link.split("/"))
            st = os.lstat(src)
            if not stat.S_ISREG(st.st_mode):  # pragma: no cover - validated
                raise UnsafeArchive(f"hard link {m.name!r}: target is not a regular file")
            budget.wrote(st.st_size)
            os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
            # a copy, not a real link: no shared inode with anything
            with open(src, "rb") as fin:
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as fout:
                    shutil.copyfileobj(fin, fout, _CHUNK)
            os.chmod(dest, _file_mode(m.mode or st.st_mode))
        written.append(m.name)
    # Symlinks were checked lexically; now check them on the real tree (a chain
    # like x -> y/.. with y -> . only shows up this way).
    for link in symlinks:
        if not _inside(root_real, os.path.realpath(link)):
            rel = os.path.relpath(link, staging)
            raise UnsafeArchive(f"symlink {rel!r} -> {os.readlink(link)!r} resolves outside")
    return written


# --------------------------------------------------------------------------- API


_READ_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)
try:  # optional decompressors
    import zlib

    _READ_ERRORS += (zlib.error,)
except ImportError:  # pragma: no cover
    pass
try:
    import lzma

    _READ_ERRORS += (lzma.LZMAError,)
except ImportError:  # pragma: no cover
    pass
try:
    import gzip

    _READ_ERRORS += (gzip.BadGzipFile,)
except (ImportError, AttributeError):  # pragma: no cover
    pass


def _drain(tf: tarfile.TarFile, limit: int) -> None:
    """Read the compressed stream to its end so gzip/xz/bz2 verify their checksums
    (tarfile stops at the end-of-archive blocks and would never see a bad CRC)."""
    fh = tf.fileobj
    if fh is None:  # pragma: no cover
        return
    seen = 0
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            return
        seen += len(chunk)
        if seen > limit:
            raise UnsafeArchive(f"archive has more than {limit} bytes of trailing data")


def _is_zip(archive: Path) -> bool:
    with open(archive, "rb") as fh:
        head = fh.read(4)
    return head in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")


def safe_extract(
    archive: Path,
    target: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> list[Path]:
    """Unpack ``archive`` into the new directory ``target``; return the entries written.

    Raises ``UnsafeArchive`` (corrupt, unknown format, or a refused entry),
    ``TargetExists`` if ``target`` already exists, ``NotFound`` if ``archive`` does not.
    The returned paths are under ``target``, in archive order (explicit entries only).
    """
    archive = Path(archive)
    target = Path(target)
    if not archive.is_file():
        raise NotFound(f"archive {archive} not found")
    if os.path.lexists(target):
        raise TargetExists(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    budget = _Budget(max_bytes, max_files)
    staging = tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent)
    try:
        try:
            if _is_zip(archive):
                with zipfile.ZipFile(archive) as zf:
                    members = list(_zip_members(zf, budget))
                    _validate(members)
                    names = _extract(members, staging, budget, exact_sizes=False)
            else:
                try:
                    tf = tarfile.open(archive, mode="r:*")
                except tarfile.ReadError:
                    raise UnsafeArchive(
                        f"{archive.name} is not a zip or tar archive (or is corrupt)"
                    ) from None
                with tf:
                    members = list(_tar_members(tf, budget))
                    _validate(members)
                    names = _extract(members, staging, budget, exact_sizes=True)
                    _drain(tf, max_bytes)
        except CorralError:
            raise
        except _READ_ERRORS as exc:
            raise UnsafeArchive(f"{archive.name} is corrupt or truncated: {exc}") from None
        except OSError as exc:
            if isinstance(exc, (FileExistsError, NotADirectoryError, IsADirectoryError)):
                raise UnsafeArchive(f"{archive.name}: conflicting entries: {exc}") from None
            if exc.errno is not None and exc.filename is not None:
                raise  # a real filesystem problem on our side (disk full, permissions)
            raise UnsafeArchive(f"{archive.name} is corrupt or truncated: {exc}") from None
        os.chmod(staging, 0o755)
        if os.path.lexists(target):
            raise TargetExists(f"{target} already exists")
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [target.joinpath(*n.split("/")) for n in names]


def find_server(root: Path) -> Path:
    """The ``llama-server`` (or ``llama-server.exe``) inside an unpacked tree.

    The shallowest regular file of that name wins (release archives keep it at the
    top or under ``build/bin/``); symlinks are followed only if they stay inside
    ``root``. Raises ``BinaryError`` if there is none.
    """
    root = Path(root)
    root_real = os.path.realpath(root)
    found: list[tuple[int, str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for fn in filenames:
            if fn not in SERVER_NAMES:
                continue
            p = Path(dirpath) / fn
            real = os.path.realpath(p)
            if not _inside(root_real, real) or not os.path.isfile(real):
                continue
            depth = len(p.relative_to(root).parts)
            found.append((depth, str(p.relative_to(root)), p))
    if not found:
        raise BinaryError(f"no llama-server in {root}")
    found.sort(key=lambda t: (t[0], t[1]))
    return found[0][2]


def server_dir(root: Path) -> Path:
    """The directory holding ``llama-server`` (where its shared libraries usually are)."""
    return find_server(root).parent


def swap_into_place(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``, replacing an existing ``target`` (old one removed
    only after the new one is in place; restored if the rename fails)."""
    old: Path | None = None
    if os.path.lexists(target):
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
