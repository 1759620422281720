"""inotify hints (via watchdog's inotify binding): which inbox entries were renamed in,
which are being written, and when to look at the queue. Only hints: the full rescan
every `rescan_seconds` finds whatever events miss (overflow, NFS, other hosts)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger()

try:
    from watchdog.observers.inotify_c import InotifyConstants as C
    from watchdog.observers.inotify_c import InotifyFD
except (ImportError, OSError):  # not Linux: rescans alone
    InotifyFD = None


@dataclass
class Hints:
    """What the watcher saw since the last take()."""

    moved_in: set[Path] = field(default_factory=set)  # inbox entries renamed in
    written: set[Path] = field(default_factory=set)  # inbox entries written in place
    inbox: bool = False  # something changed in an inbox
    queue_added: set[str] = field(default_factory=set)  # queue entry names that appeared
    queue_removed: set[str] = field(default_factory=set)  # and that went away
    overflow: bool = False  # events were lost: rescan everything


class _FolderCallback:
    def __init__(self, watcher: "SpoolWatcher", folder: Path, kind: str):
        self.watcher, self.folder, self.kind = watcher, folder, kind

    def on_event(self, event) -> None:
        name = os.fsdecode(event.name)
        with self.watcher.lock:
            hints = self.watcher.hints
            if self.kind == "inbox":
                hints.inbox = True
                if name:
                    path = self.folder / name
                    if event.is_moved_to:
                        hints.moved_in.add(path)
                    elif event.is_create or event.is_modify or event.is_close_write or event.is_attrib:
                        hints.written.add(path)
            elif name:
                if event.is_moved_to or event.is_create:
                    hints.queue_added.add(name)
                    hints.queue_removed.discard(name)
                elif event.is_moved_from or event.is_delete:
                    hints.queue_removed.add(name)
                    hints.queue_added.discard(name)
        self.watcher.wake()

    def on_watch_deleted(self, wd) -> None:
        pass

    def on_queue_overflow(self) -> None:
        with self.watcher.lock:
            self.watcher.hints.overflow = True
        self.watcher.wake()


class SpoolWatcher:
    """Collects hints in a background thread; the arbiter takes them with `take()`."""


    def __init__(self, wake: Callable[[], None]):
        self.wake = wake
        self.lock = threading.Lock()
        self.hints = Hints()
        self._fd = None
        self._watched: dict[Path, object] = {}

    @property
    def active(self) -> bool:
        return self._fd is not None

    def start(self) -> None:
        if InotifyFD is None:
            return
        try:
            self._fd = InotifyFD()
            self._fd.start()
        except OSError as exc:
            log.warning("watcher.unavailable", error=str(exc))
            self._fd = None

    def watch(self, folder: Path, kind: str) -> None:
        if self._fd is None or folder in self._watched:
            return
        mask = C.IN_MOVED_TO | C.IN_MOVED_FROM | C.IN_CREATE | C.IN_DELETE
        if kind == "inbox":
            mask |= C.IN_MODIFY | C.IN_CLOSE_WRITE | C.IN_ATTRIB
        try:
            self._fd.add_callback(os.fsencode(folder), mask, _FolderCallback(self, folder, kind), id(self))
            self._watched[folder] = True
        except OSError as exc:
            log.warning("watcher.add_failed", folder=str(folder), error=str(exc))

    def take(self) -> Hints:
        with self.lock:
            hints, self.hints = self.hints, Hints()
        return hints

    def stop(self) -> None:
        if self._fd is not None:
            try:
                self._fd.stop()
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass
            self._fd = None
