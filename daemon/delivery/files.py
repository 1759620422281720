"""Putting one result file into a delivery folder (SPEC §10.3): never half-visible, never
overwriting.

The bytes go to a hidden temp name in the target folder (".NAME.part-<random>"), are
fsynced, then published with os.link(temp, NAME): create-new, so a file already named NAME is
never replaced (the next try is NAME-2, NAME-3 …); then the temp is unlinked. Where the
filesystem has no hard links (some SMB and FUSE shares answer EPERM, ENOTSUP, EXDEV or EIO),
the temp is renamed after an exists check instead, which a writer racing for the same name could
still beat.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path, PurePosixPath

from contract.status import status_time
from daemon.spool.fsops import unlink_quietly
from daemon.spool.job_files import OpenedFile

# link(2) errors that mean "no hard links here", not "that name is taken" (measured: an
# rclone SMB mount answers EIO; a share that is really broken fails the rename after it too).
NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EMLINK,
                           errno.EIO})
# fsync(2) errors of shares that cannot sync (the copy is as safe as the share makes it).
NO_FSYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
CHUNK_BYTES = 1 << 20
# Under every filesystem's 255-byte limit of a name, with room for "-N" and the temp's
# ".NAME.part-<8 hex>" (15 bytes): counted in bytes as the name is stored (UTF-8).
MAX_NAME_BYTES = 200
API_DROP = re.compile(r"\.api-[^.]+$")  # inbox/<id>.api-<token>: a job POSTed to the API


class Stopped(Exception):
    """The daemon is stopping: the copy was abandoned and its temp removed."""


def drop_stem(doc: dict) -> str:
    """{stem}: the dropped file's name without its extension ("inbox/cards/story.txt" →
    "story"); the job id for jobs that came through the API."""
    name = PurePosixPath(doc.get("drop") or "").name
    if not name or API_DROP.search(name):
        return doc["id"]
    return PurePosixPath(name).stem or doc["id"]


def finished_date(doc: dict) -> str:
    """{date}: the day the job finished, in this host's local time (YYYY-MM-DD)."""
    when = status_time(doc.get("finished_at")) or datetime.now().astimezone()
    return when.astimezone().strftime("%Y-%m-%d")


def delivery_name(template: str, fields: dict[str, str], result_name: str) -> str:
    """The file name `template` gives one result; always a plain, visible name."""
    stem, dot, ext = result_name.rpartition(".")
    if not stem:
        stem, ext = result_name, ""
    name = template.format(**fields, result=stem, ext=ext)
    name = name.rstrip(".") if not ext else name  # "{stem}.{ext}" of a file without an extension
    name = re.sub(r"[/\\\x00]", "_", name).lstrip(".") or result_name
    name = "".join(ch if _storable(ch) else "_" for ch in name)
    if stored_bytes(name) > MAX_NAME_BYTES:
        tail = f".{ext}" if ext and name.endswith(f".{ext}") and stored_bytes(ext) < 32 else ""
        name = cut_to_bytes(name[: len(name) - len(tail)], MAX_NAME_BYTES - stored_bytes(tail)) + tail
    return name


def stored_bytes(text: str) -> int:
    """The bytes of `text` as a file name on disk (UTF-8; a byte that was not UTF-8 in a
    dropped file's name, kept as a surrogate escape, is one byte again)."""
    return len(text.encode("utf-8", "surrogateescape"))


def cut_to_bytes(text: str, limit: int) -> str:
    """The longest start of `text` that is at most `limit` bytes on disk, in whole characters."""
    out, used = [], 0
    for ch in text:
        used += stored_bytes(ch)
        if used > limit:
            break
        out.append(ch)
    return "".join(out)


def _storable(ch: str) -> bool:
    try:
        stored_bytes(ch)
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return False
    return True


def numbered(name: str) -> Iterator[str]:
    """name, then name-2, name-3 … with the number before the extension."""
    yield name
    base, dot, ext = name.rpartition(".")
    if not base:
        base, dot, ext = name, "", ""
    for n in itertools.count(2):
        yield f"{base}-{n}{dot}{ext}"


def temp_name(folder: Path, name: str) -> Path:
    return folder / f".{name}.part-{secrets.token_hex(4)}"


def is_temp_of(name: str) -> Callable[[str], bool]:
    """Whether a file name is one temp_name() gives for `name`."""
    return re.compile(re.escape(f".{name}.part-") + r"[0-9a-f]{8}").fullmatch


def is_numbered(name: str) -> Callable[[str], bool]:
    """Whether a file name is one of numbered(name)."""
    base, dot, ext = name.rpartition(".")
    if not base:
        base, dot, ext = name, "", ""
    return re.compile(f"{re.escape(base)}(-[1-9][0-9]*)?{re.escape(dot + ext)}").fullmatch


def in_folder(folder: str, path: object, name_ok: Callable[[str], bool]) -> bool:
    """Whether `path` is a file right in `folder` whose name passes `name_ok`."""
    return isinstance(path, str) and os.path.dirname(path) == folder and bool(name_ok(os.path.basename(path)))


def write_temp(src: OpenedFile, temp: Path, stop: threading.Event) -> int:
    """Copies the opened result `src` into the new file `temp` and syncs it; returns the bytes
    written. On any failure (or a stop) the temp is removed."""
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o664)
    written = 0
    try:
        with src.reader() as f:
            while chunk := f.read(CHUNK_BYTES):
                if stop.is_set():
                    raise Stopped()
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                written += len(chunk)
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno not in NO_FSYNC:
                raise
    except BaseException:
        os.close(fd)
        unlink_quietly(temp)
        raise
    os.close(fd)
    return written


def publish(temp: Path, wanted: str, before_try: Callable[[Path], None]) -> Path:
    """Gives `temp` its final name in its folder: `wanted`, or the first free one of
    wanted-2, wanted-3 …, never replacing a file. `before_try(final)` runs before each try
    (the caller records where the copy may land, for a redo after a crash)."""
    links = True
    for name in numbered(wanted):
        final = temp.parent / name
        if os.path.lexists(final):
            continue
        before_try(final)
        if links:
            try:
                os.link(temp, final)
            except OSError as exc:
                if os.path.lexists(final):  # taken meanwhile (sshfs may say EPERM for EEXIST)
                    continue
                if exc.errno not in NO_HARD_LINKS:
                    raise
                links = False
            else:
                unlink_quietly(temp)
                return final
        os.rename(temp, final)  # no hard links here: the exists check above is all there is
        return final
    raise AssertionError("unreachable: numbered() never ends")
