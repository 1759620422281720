"""A job's files in its outbox folder, opened by the names its status gives.

Whoever can write the spool can write a status.json, so its names are not trusted: a file
is only a plain name (no "/", not "." or "..") in outbox/<id>/; `outbox`, `<id>` and the
name are each opened relative to the one before with O_NOFOLLOW (a link anywhere is not
followed), and only a regular file is taken. What was opened is what is read or served
(through /proc/self/fd/N, the very file whatever its path has become), never the path again.

Every reader of a job's files goes through `JobFolder.open_file`: the native files and
download routes and every personality's video routes (ReadModel.result_file), the live
preview, delivery copies; deleting results goes through `JobFolder.unlink`.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import weakref
from typing import BinaryIO

from daemon.spool.layout import STATUS, Spool, is_valid_job_id

# O_PATH: the file is not opened for reading yet (no FIFO to block on, no device to wake).
NO_LINKS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
STATUS_BYTES = 64 << 20  # a status.json larger than this is not read (none is near it)
# What makes a name "not there": missing, a link or file on the way, a name too long, no access.
ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EACCES})


def plain_name(name: object) -> bool:
    """Whether `name` is one file name in a folder: no path, no link to walk, nothing that
    cannot go in a header's quoted file name (control characters, quotes, backslashes)."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and not any(ch in '"\\' or ord(ch) < 32 or ord(ch) == 127 for ch in name))


def file_signature(st: os.stat_result) -> tuple:
    """Which file, and its size and time of change: equal for the same file left unchanged
    (a status is replaced by a rename, which gives another inode)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def path_signature(path: str) -> tuple | None:
    """file_signature of what `path` names, a link itself rather than its target; None if
    there is nothing there."""
    try:
        return file_signature(os.stat(path, follow_symlinks=False))
    except OSError as exc:
        if exc.errno in ABSENT:
            return None
        raise


class _Descriptor:
    """An open descriptor, closed by `close()`, at the end of a `with`, or when dropped."""

    def __init__(self, fd: int):
        self.fd = fd
        self._close = weakref.finalize(self, os.close, fd)

    def close(self) -> None:
        self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class OpenedFile(_Descriptor):
    """A regular file opened without following links."""

    def __init__(self, fd: int, name: str, st: os.stat_result):
        super().__init__(fd)
        self.name, self.size = name, st.st_size
        self.signature = file_signature(st)
        self.changed_ns = st.st_ctime_ns

    @property
    def proc_path(self) -> str:
        """A path to this very file (for a reader that wants a path: aiohttp's FileResponse)."""
        return f"/proc/self/fd/{self.fd}"

    def reader(self) -> BinaryIO:
        return open(self.proc_path, "rb")

    def read_bytes(self, limit: int | None = None) -> bytes | None:
        """Its bytes, or None when it has more than `limit`."""
        with self.reader() as f:
            if limit is None:
                return f.read()
            # Sized by the fstat at open, not by `limit`: read(limit + 1) allocates that much
            # (64 MiB for a status) on every call. A file grown since is read on to the limit.
            data = f.read(min(limit, self.size) + 1)
            if len(data) > self.size:
                data += f.read(limit + 1 - len(data))
        return None if len(data) > limit else data


def _open_dir(name: str, dir_fd: int | None) -> int | None:
    """`name` under dir_fd as a folder descriptor; None if it is missing or not a real folder."""
    try:
        return os.open(name, NO_LINKS | os.O_DIRECTORY, dir_fd=dir_fd)
    except OSError as exc:  # a link: ENOTDIR (O_NOFOLLOW opens the link itself)
        if exc.errno in ABSENT:
            return None
        raise


class JobFolder(_Descriptor):
    """outbox/<id>/ of one job, opened without following a link (the spool's root is the
    operator's and may be one)."""

    def __init__(self, fd: int, job_id: str):
        super().__init__(fd)
        self.job_id = job_id

    @classmethod
    def open(cls, spool: Spool, job_id: str) -> JobFolder | None:
        """The job's outbox folder; None if the id is no job id, or there is no real folder."""
        if not is_valid_job_id(job_id):
            return None
        root = _open_dir(str(spool.root), None)
        if root is None:
            return None
        try:
            outbox = _open_dir(spool.outbox.name, root)
        finally:
            os.close(root)
        if outbox is None:
            return None
        try:
            fd = _open_dir(job_id, outbox)
        finally:
            os.close(outbox)
        return None if fd is None else cls(fd, job_id)

    def open_file(self, name: object) -> OpenedFile | None:
        """The regular file `name` in this folder; None for any other name or file."""
        if not plain_name(name):
            return None
        try:
            fd = os.open(name, NO_LINKS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in ABSENT:
                return None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a link (opened as itself), FIFO, socket, device, folder
            os.close(fd)
            return None
        return OpenedFile(fd, name, st)

    def read(self, name: str, limit: int = STATUS_BYTES) -> bytes | None:
        found = self.read_signed(name, limit)
        return None if found is None else found[0]

    def read_signed(self, name: str, limit: int = STATUS_BYTES) -> tuple[bytes, OpenedFile] | None:
        """The file's bytes and the file they were read from (closed: its signature and
        change time, taken when it was opened); None as for read()."""
        opened = self.open_file(name)
        if opened is None:
            return None
        with opened:
            try:
                data = opened.read_bytes(limit)
            except PermissionError:  # one the daemon may not read
                return None
        return None if data is None else (data, opened)

    def status(self) -> dict | None:
        """Its status.json as a dict; None if there is none or it is no JSON object."""
        raw = self.read(STATUS)
        try:
            doc = json.loads(raw) if raw is not None else None
        except (ValueError, RecursionError):
            return None
        return doc if isinstance(doc, dict) else None

    def size(self, name: str) -> int:
        """The bytes of the regular file `name` here (0 for any other)."""
        opened = self.open_file(name)
        if opened is None:
            return 0
        with opened:
            return opened.size

    def unlink(self, name: object) -> None:
        """Removes `name` from this folder (a link itself, never what it points to)."""
        if plain_name(name) and name != STATUS:
            try:
                os.unlink(name, dir_fd=self.fd)
            except (FileNotFoundError, IsADirectoryError):
                pass


def open_job_file(spool: Spool, job_id: str, name: str) -> OpenedFile | None:
    """One file of a job's outbox folder (see the module's docstring); None if it is not there
    as a regular file."""
    folder = JobFolder.open(spool, job_id)
    if folder is None:
        return None
    with folder:
        return folder.open_file(name)


def read_job_file(spool: Spool, job_id: str, name: str, limit: int) -> bytes | None:
    """The bytes of one file of a job's outbox folder, opened as open_job_file does; None if
    it is not there as a regular file of at most `limit` bytes."""
    folder = JobFolder.open(spool, job_id)
    if folder is None:
        return None
    with folder:
        return folder.read(name, limit)
