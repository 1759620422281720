"""Retention (SPEC §10.5): ended jobs' outbox folders older than `[outbox] keep_days` go, on
every host sharing the spool, each folder exactly once; `vidspool purge --older-than` does
the same from the command line.

A folder goes by one rename, outbox/<id> → trash/<id>.<host>.<t>-<hex>, and only then is it
measured and removed: whoever wins the rename removes it, so two hosts (or a host and the
CLI) never both do, and a crash mid-remove leaves a trash entry that a later sweep removes.
Before the rename the remover takes the job's results lock (daemon/outbox/results.py's `.deleting`),
so a folder whose results are being deleted is skipped, not pulled from under its deleter.
Only folders whose status is final and whose finished_at is past the cutoff qualify, never a
queued or running job; status.json's mtime is checked before the file is read (a final
status is rewritten only by a delivery, which makes it newer: such a job is kept longer).
A daemon's sweep holds trash/.sweeping (take_lock, stale after LEASE_STALE_SECONDS) so hosts
do not all list a big outbox at once; the per-folder rename stays the guarantee.
"""

from __future__ import annotations

import contextvars
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog

from contract.status import FINAL_STATES, utc_now
from daemon.config import Settings
from daemon.spool.fsops import move, read_json, remove_tree
from contract.status import epoch
from daemon.outbox.results import LOCK, release_lock, take_lock
from daemon.spool.layout import STATUS, Spool, is_valid_job_id

log = structlog.get_logger()

DAY = 86400.0
SWEEP_LEASE = ".sweeping"
LEASE_STALE_SECONDS = 300.0
LEASE_REFRESH_SECONDS = 30.0
# A trash entry this old is a crashed remover's (a live one takes seconds), not one in progress.
LEFTOVER_SECONDS = 600.0


@dataclass(frozen=True)
class Expired:
    job_id: str
    state: str
    finished_at: str


@dataclass(frozen=True)
class Selection:
    """Ended jobs (in `states`) that finished before `cutoff` (unix seconds)."""

    cutoff: float
    states: frozenset[str] = FINAL_STATES

    @classmethod
    def older_than(cls, days: float, states=None) -> "Selection":
        return cls(time.time() - days * DAY, frozenset(states or FINAL_STATES))

    def matches(self, job_id: str, folder) -> Expired | None:
        try:
            if os.stat(folder / STATUS).st_mtime >= self.cutoff:
                return None  # written since the cutoff: not worth reading
        except (FileNotFoundError, NotADirectoryError):
            return None  # gone, or being accepted (no status yet)
        doc = read_json(folder / STATUS) or {}
        finished = epoch(doc.get("finished_at"))
        if doc.get("state") not in self.states or finished is None or finished >= self.cutoff:
            return None
        return Expired(job_id, doc["state"], doc["finished_at"])

    def jobs(self, spool: Spool) -> Iterator[Expired]:
        """The outbox's matching jobs, in id order (listed first: the folder changes as they go)."""
        for name in sorted(n for n in os.listdir(spool.outbox) if is_valid_job_id(n)):
            job = self.matches(name, spool.job_outbox(name))
            if job is not None:
                yield job


def tree_bytes(path) -> int:
    total = 0
    for top, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except FileNotFoundError:
                pass
    return total


def remove_job_folder(spool: Spool, job: Expired, selection: Selection) -> int | None:
    """Moves outbox/<id> into trash/ and removes it: the bytes freed, or None when it is not
    this caller's to remove (gone, another remover's, no longer matching, its results being
    deleted, or a delivery of it still owed)."""
    folder = spool.job_outbox(job.job_id)
    try:
        if not take_lock(folder / LOCK):
            return None
    except FileNotFoundError:
        return None
    target = spool.trash / f"{job.job_id}.{spool.host}.{int(time.time())}-{secrets.token_hex(4)}"
    moved = False
    try:
        if selection.matches(job.job_id, folder) is not None and not _delivery_owed(spool, job.job_id):
            spool.trash.mkdir(mode=0o2775, exist_ok=True)  # a spool made before retention existed
            moved = move(folder, target)
    finally:
        if not moved:
            release_lock(folder / LOCK)
    if not moved:
        return None
    freed = tree_bytes(target)
    remove_tree(target)
    return freed


def _delivery_owed(spool: Spool, job_id: str) -> bool:
    """Whether some host's deliveries/<host>/<id>.json says a copy of its results is owed."""
    try:
        hosts = os.listdir(spool.deliveries.parent)
    except FileNotFoundError:
        return False
    return any(os.path.exists(spool.deliveries.parent / h / f"{job_id}.json") for h in hosts)


def remove_leftovers(spool: Spool, now: float) -> int:
    """Removes trash entries a crashed remover left (older than LEFTOVER_SECONDS); bytes freed."""
    freed = 0
    for name in os.listdir(spool.trash):
        stamp = name.rsplit(".", 1)[-1].split("-", 1)[0]
        if name.startswith(".") or not stamp.isdigit() or now - int(stamp) < LEFTOVER_SECONDS:
            continue
        size = tree_bytes(spool.trash / name)
        remove_tree(spool.trash / name)
        if not os.path.lexists(spool.trash / name):
            log.info("retention.leftover_removed", name=name, bytes=size)
            freed += size
    return freed


class Sweeper:
    """This daemon's sweeps: in a thread of its own (never on the loop), one at a time, every
    [outbox] sweep_seconds while keep_days is set (both read anew each time: SIGHUP)."""

    def __init__(self, spool: Spool, settings: Callable[[], Settings], may_sweep: Callable[[], bool]):
        self.spool = spool
        self.settings = settings
        self.may_sweep = may_sweep  # false while the spool is broken or the daemon drains
        self.removed = 0  # job folders this daemon removed
        self.freed_bytes = 0
        self._on_removed: list[Callable[[str], None]] = []  # called with each job id, from the sweep's thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on_removed(self, listener: Callable[[str], None]) -> None:
        """`listener(job_id)` after each folder this daemon's sweeps remove (the read model's
        outbox index), in the sweep's thread."""
        self._on_removed.append(listener)

    def start(self) -> None:
        run = contextvars.copy_context().run  # the loop's bound fields (host) on every line
        self._thread = threading.Thread(target=run, args=(self._run,), name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ends the sweep at its next folder (a folder half removed is a leftover for later)."""
        self._stop.set()

    def join(self, timeout: float = 2.0) -> None:
        """Waits (off the loop) for the sweep to end, at most `timeout` seconds."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            outbox = self.settings().outbox
            if outbox.keep_days is not None and self.may_sweep():
                try:
                    self.sweep(outbox.keep_days)
                except OSError as exc:  # a broken spool: the daemon's health says so; try again later
                    log.warning("retention.sweep_failed", error=str(exc))
            self._stop.wait(outbox.sweep_seconds)

    def sweep(self, keep_days: float) -> None:
        lease = self.spool.trash / SWEEP_LEASE
        self.spool.trash.mkdir(mode=0o2775, exist_ok=True)
        owner = f"{self.spool.host} pid {os.getpid()} on {socket.gethostname()} since {utc_now()}\n"
        if not take_lock(lease, LEASE_STALE_SECONDS, owner):
            log.debug("retention.sweep_skipped", reason="another host is sweeping")
            return
        try:
            started = refreshed = time.monotonic()
            folders, freed = 0, remove_leftovers(self.spool, time.time())
            self.freed_bytes += freed
            selection = Selection.older_than(keep_days)
            for job in selection.jobs(self.spool):
                if self._stop.is_set():
                    break
                if time.monotonic() - refreshed > LEASE_REFRESH_SECONDS:
                    os.utime(lease)
                    refreshed = time.monotonic()
                size = remove_job_folder(self.spool, job, selection)
                if size is not None:
                    for listener in self._on_removed:
                        listener(job.job_id)
                    log.info("retention.removed", job_id=job.job_id, bytes=size, state=job.state,
                             finished_at=job.finished_at)
                    folders += 1
                    freed += size
                    self.removed += 1
                    self.freed_bytes += size
            log.info("retention.swept", folders=folders, bytes=freed, seconds=round(time.monotonic() - started, 3),
                     keep_days=keep_days)
        finally:
            release_lock(lease)
