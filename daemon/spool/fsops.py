"""Filesystem primitives for coordination: atomic writes, renames, exclusive creates.

Only rename, mkdir and create-new are used to coordinate hosts (no flock). Network
filesystems report some races oddly (sshfs gives EPERM where ext4 gives EEXIST), so each
primitive reads the error and then checks what is really on disk.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    """Writes `path` so that a reader sees the old file or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o664)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise


def atomic_write_json(path: Path, doc: dict, fsync: bool = True) -> None:
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    # A lone surrogate (a file name that is not UTF-8) becomes a JSON \u escape that reads back
    # as the same string, instead of an encoding error that would leave a job without a status.
    atomic_write_bytes(path, text.encode("utf-8", "backslashreplace") + b"\n", fsync)


def read_json(path: Path) -> dict | None:
    """The parsed JSON object at `path`, or None if it is missing or not a JSON object. Only a
    regular file counts: a link there is not followed, a FIFO never blocks the reader (anyone
    who writes the spool may put either where a status or marker belongs)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a link; a socket
            return None
        raise
    try:
        with open(fd, "rb") as f:
            doc = json.loads(f.read()) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    # ValueError: bad JSON, not UTF-8, an integer over Python's digit limit; RecursionError: too deep.
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def read_regular_file(path: Path, limit: int) -> tuple[os.stat_result, bytes | None]:
    """The stat of `path` and, if it is a regular file of at most `limit` bytes, its bytes
    (else None). Never follows a symlink, and never blocks on a FIFO swapped in after the check."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
        return st, None
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        chunks, left = [], limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        st = os.fstat(fd)  # the file it really was, at the size it has now
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if not stat.S_ISREG(st.st_mode) or len(data) > limit:
        return st, None
    return st, data


def file_type_words(mode: int) -> str:
    """What a file that is not a regular one is, in words ("a FIFO")."""
    kinds = {stat.S_IFIFO: "a FIFO", stat.S_IFDIR: "a folder", stat.S_IFCHR: "a character device",
             stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}
    return kinds.get(stat.S_IFMT(mode), "not a regular file")


def move(src: Path, dst: Path) -> bool:
    """Renames src to dst. True if this call moved it; False if src was gone (another
    process won the race). dst must not exist; any other error is raised."""
    try:
        if dst.exists():
            raise FileExistsError(errno.EEXIST, "destination exists", str(dst))
        os.rename(src, dst)
    except FileNotFoundError:
        if src.exists() or os.path.lexists(src):
            raise
        return False
    except PermissionError:
        # sshfs maps "exists"/"gone" to EPERM: look at what is on disk.
        if not os.path.lexists(src):
            return False
        raise
    return True


def mkdir_exclusive(path: Path) -> bool:
    """Creates a directory; True if this call created it, False if it already existed."""
    try:
        os.mkdir(path, 0o2775)
        return True
    except FileExistsError:
        return False
    except PermissionError:
        if path.is_dir():
            return False
        raise


def create_exclusive(path: Path, data: bytes = b"") -> bool:
    """Creates a new file; True if this call created it, False if it already existed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o664)
    except FileExistsError:
        return False
    except PermissionError:
        if os.path.lexists(path):
            return False
        raise
    try:
        if data:
            os.write(fd, data)
    finally:
        os.close(fd)
    return True


def remove_tree(path: Path) -> None:
    """Removes a daemon-owned folder tree (never a user's inbox)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def unlink_quietly(path: Path | str) -> None:
    """Removes a file if it is there; an error (gone, or not removable) is left unsaid."""
    try:
        os.unlink(path)
    except OSError:
        pass
