"""The outbox as listings need it: one small JobSummary per job folder (what GET /api/v1/jobs
lists, and what history and the seeds' lists filter and sort on; never whole status
documents), with each `labels.compat`'s jobs kept apart, so a personality's list looks only
at its own. The read model owns it; every listing reads it, none walks the outbox.

Built once when the daemon starts, in a thread of its own; then kept current
- at once by this daemon's status writes (the read model's status listener), its results
  deletions (reread()) and its retention sweeps (removed());
- every REFRESH_SECONDS, in that thread, for what other hosts sharing the spool (and the CLI)
  do: outbox folders that came or went, and jobs not ended whose status.json changed;
- every RECHECK_SECONDS, every status.json is checked (an ended job's status is rewritten
  only by a delivery or a results deletion, which may be another host's or the CLI's).
A status.json is read only as a plain file (no link followed) of at most STATUS_BYTES_MAX,
and one that is no status of its folder's job is not read again until it changes.
Summaries are replaced whole under a lock and read from copies, so a listing in a thread
never sees half an update and never holds up a status write for long.
"""

from __future__ import annotations

import bisect
import contextvars
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from contract.status import FINAL_STATES, LIST_FIELDS
from daemon.outbox.estimates import SIZE_KEYS, Measured
from daemon.spool.fsops import read_regular_file
from contract.status import epoch
from daemon.spool.layout import STATUS, Spool, is_valid_job_id

log = structlog.get_logger()

REFRESH_SECONDS = 3.0
RECHECK_SECONDS = 30.0
# A status.json over this is not a status this daemon wrote: not indexed.
STATUS_BYTES_MAX = 8 << 20
# Distinct values (kinds, models, stages, label sets, file name lists) kept once and shared.
SHARED_MAX = 4096


def _load(raw: bytes) -> dict | None:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) and is_valid_job_id(str(doc.get("id", ""))) else None


class JobSummary:
    """What listings and history keep of one job's status (immutable once made)."""

    __slots__ = ("id", "kind", "state", "model", "stage", "progress", "message", "error", "created_at",
                 "finished_at", "labels", "files", "result_bytes", "videos", "created", "started", "finished", "stamp",
                 "host", "params", "load_seconds", "measured", "sizes", "defaulted")

    def __init__(self, doc: dict, share: Callable[[Any], Any], stamp: int | None = None):
        # Any status.json may be someone's planted file: nothing here may raise on odd values.
        self.id: str = doc["id"]
        self.kind, self.model, self.stage, self.message = (share(_text(doc.get(k))) for k in ("kind", "model", "stage", "message"))
        self.state: str = share(str(doc.get("state")))
        self.progress = _number(doc.get("progress"))
        self.error = doc.get("error") if isinstance(doc.get("error"), dict) else None
        self.created, self.started, self.finished = (epoch(doc.get(k)) for k in ("created_at", "started_at", "finished_at"))
        # Listed as written when they are times (a seed's list turns them into its own form).
        self.created_at = doc["created_at"] if self.created is not None else None
        self.finished_at = doc["finished_at"] if self.finished is not None else None
        labels = doc.get("labels")
        # A label set as pairs, shared by the jobs that have the same (an invalid job's, as given).
        self.labels = share(tuple(labels.items())) if isinstance(labels, dict) and _hashable(labels) else labels
        result = doc.get("result") if self.state == "completed" else None
        files = result.get("files") if isinstance(result, dict) else None
        files = [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []
        self.files: tuple[str, ...] = share(tuple(str(f.get("name")) for f in files))
        self.result_bytes = sum(_size(f.get("size")) for f in files)
        self.videos = sum(1 for f in files if str(f.get("media_type", "")).startswith("video/"))
        self.stamp = stamp  # the status file's (size, mtime, inode), hashed; None: written here, not yet checked
        # What estimates need (daemon/outbox/estimates.py): the job's sizes; a completed run's load,
        # stage seconds and the sizes it ran at (and which of them its job left to the model).
        self.host = share(_text(doc.get("host")))
        job = doc.get("job") if isinstance(doc.get("job"), dict) else {}
        given = job.get("params") if isinstance(job.get("params"), dict) else {}
        self.params = share(tuple((k, given[k]) for k in SIZE_KEYS if _whole(given.get(k)))) or None
        self.load_seconds = self.measured = self.sizes = None
        self.defaulted: frozenset = frozenset()
        if self.run_seconds is not None and isinstance(result, dict):
            model, used = (v if isinstance(v, dict) else {} for v in (result.get("model"), result.get("params")))
            if model.get("loaded") is True and isinstance(model.get("load_seconds"), (int, float)):
                self.load_seconds = float(model["load_seconds"])
            self.measured = Measured.of(result, self.run_seconds)
            self.sizes = {k: used[k] for k in SIZE_KEYS if _whole(used.get(k))}
            self.defaulted = share(frozenset(k for k in SIZE_KEYS if given.get(k) is None))

    @property
    def ended(self) -> bool:
        return self.state in FINAL_STATES

    def label(self, key: str) -> Any:
        if isinstance(self.labels, tuple):
            return next((v for k, v in self.labels if k == key), None)
        return self.labels.get(key) if isinstance(self.labels, dict) else None

    def listed(self) -> dict:
        """The job as GET /api/v1/jobs lists it (contract/status.py LIST_FIELDS)."""
        labels = dict(self.labels) if isinstance(self.labels, tuple) else self.labels
        values = {"id": self.id, "kind": self.kind, "state": self.state, "progress": self.progress, "stage": self.stage,
                  "message": self.message, "error": self.error, "created_at": self.created_at,
                  "finished_at": self.finished_at, "labels": labels}
        return {k: values[k] for k in LIST_FIELDS}

    # What history asks of a past job (daemon/outbox/history.py).
    @property
    def run_seconds(self) -> float | None:
        if self.state != "completed" or self.started is None or self.finished is None:
            return None
        return max(0.0, self.finished - self.started)

    @property
    def wait_seconds(self) -> float | None:
        if self.created is None or self.started is None:
            return None
        return max(0.0, self.started - self.created)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def _number(value) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return value if math.isfinite(value) else 0


def _size(value) -> int:
    if isinstance(value, float) and math.isfinite(value):
        return max(0, int(value))
    return max(0, value) if isinstance(value, int) else 0


def _hashable(labels: dict) -> bool:
    try:
        hash(tuple(labels.items()))
    except TypeError:
        return False
    return True


def _stamp(st: os.stat_result) -> int:
    return hash((st.st_size, st.st_mtime_ns, st.st_ino))


class OutboxIndex:
    def __init__(self, spool: Spool):
        self.spool = spool
        self._outbox = str(spool.outbox)
        self._lock = threading.Lock()
        self._jobs: dict[str, JobSummary] = {}
        self._ids: list[str] = []  # sorted
        self._by_compat: dict[str, set[str]] = {}
        self._unended: set[str] = set()
        self._shared: dict = {}
        self._touched: set[str] | None = None  # ids put while a refresh lists the outbox
        self._refused: dict[str, int] = {}  # folders whose status.json is no status: its stamp, read again once it changes
        # Bumped when an ended job comes, changes or goes (history's estimates and statistics).
        self.version = 0
        self._built = threading.Event()

    # -- keeping it current ---------------------------------------------------------------------
    def start(self) -> None:
        """Builds the index, then refreshes it for as long as the daemon runs, in a thread."""
        run = contextvars.copy_context().run  # the loop's bound fields (host) on every line
        threading.Thread(target=run, args=(self._run,), name="outbox-index", daemon=True).start()

    def _run(self) -> None:
        started = time.monotonic()
        self._refresh_survived(recheck=True)  # a broken spool: listed empty until it reads again
        self._built.set()
        log.info("outbox_index.built", jobs=len(self._jobs), seconds=round(time.monotonic() - started, 3))
        rechecked = time.monotonic()
        while True:
            time.sleep(REFRESH_SECONDS)
            recheck = time.monotonic() - rechecked >= RECHECK_SECONDS
            if self._refresh_survived(recheck) and recheck:
                rechecked = time.monotonic()

    def _refresh_survived(self, recheck: bool) -> bool:
        try:
            self.refresh(recheck)
        except Exception as exc:  # noqa: BLE001 - a bad turn (a spool fault) must not end the thread
            log.warning("outbox_index.refresh_failed", error=str(exc), error_type=type(exc).__name__)
            return False
        return True

    def seen(self, doc: dict) -> None:
        """A status this daemon just wrote (the read model's status listener)."""
        if is_valid_job_id(str(doc.get("id", ""))):
            self._put(JobSummary(doc, self._share))

    def reread(self, job_id: str) -> None:
        """Reads a job's status.json again (its results were just deleted)."""
        self._read(job_id, self._jobs.get(job_id))

    def removed(self, job_id: str) -> None:
        """A job's outbox folder went (this daemon's retention sweep)."""
        with self._lock:
            self._drop(job_id)

    def refresh(self, recheck: bool = False) -> None:
        """Folders that came or went, and changed statuses of the jobs not ended (all of them
        with `recheck`)."""
        with self._lock:
            self._touched = set()
        try:
            present = set(os.listdir(self._outbox))  # names only: a job's is checked once, when it is new
        except OSError:
            self._touched = None
            raise
        with self._lock:
            touched, self._touched = self._touched, None
            # A job written here while the outbox was listed is not gone (the list may predate it).
            for job_id in self._jobs.keys() - present - touched:
                self._drop(job_id)
            known = list(self._jobs.items()) if recheck else [(i, self._jobs[i]) for i in self._unended]
            new = present - self._jobs.keys()
        for job_id in self._refused.keys() - present:
            del self._refused[job_id]
        for job_id in new:
            if is_valid_job_id(job_id):
                self._read(job_id, None)
        for job_id, summary in known:
            try:
                st = os.lstat(self._status_path(job_id))
            except (FileNotFoundError, NotADirectoryError):
                continue  # its folder went since the listing: dropped at the next refresh
            if _stamp(st) != summary.stamp:
                self._read(job_id, summary)

    def _status_path(self, job_id: str) -> str:
        # A plain string: a Path per job interns each name (pathlib), in a table that never shrinks.
        return os.path.join(self._outbox, job_id, STATUS)

    def _read(self, job_id: str, before: JobSummary | None) -> None:
        """Reads outbox/<id>/status.json into the index, unless the summary changed meanwhile
        (this daemon wrote a newer status while the file was read)."""
        path = self._status_path(job_id)
        try:
            if job_id in self._refused and _stamp(os.lstat(path)) == self._refused[job_id]:
                return  # refused as it is: not parsed again every refresh
            st, raw = read_regular_file(path, STATUS_BYTES_MAX)
        except (FileNotFoundError, NotADirectoryError):
            return  # being accepted (no status yet) or gone
        doc = _load(raw) if raw is not None else None
        if doc is None or doc["id"] != job_id:
            self._refused[job_id] = _stamp(st)
            return
        self._refused.pop(job_id, None)
        summary = JobSummary(doc, self._share, _stamp(st))
        with self._lock:
            if self._jobs.get(job_id) is before:
                self._put_locked(summary)

    def _put(self, summary: JobSummary) -> None:
        with self._lock:
            self._put_locked(summary)

    def _put_locked(self, summary: JobSummary) -> None:
        job_id = summary.id
        old = self._jobs.get(job_id)
        if old is None:
            bisect.insort(self._ids, job_id)
        else:
            self._unfile(old)
        self._jobs[job_id] = summary
        if self._touched is not None:
            self._touched.add(job_id)
        compat = summary.label("compat")
        if isinstance(compat, str):
            self._by_compat.setdefault(compat, set()).add(job_id)
        if not summary.ended:
            self._unended.add(job_id)
        if summary.ended or (old is not None and old.ended):
            self.version += 1

    def _drop(self, job_id: str) -> None:
        old = self._jobs.pop(job_id, None)
        if old is None:
            return
        del self._ids[bisect.bisect_left(self._ids, job_id)]
        self._unfile(old)
        self.version += 1

    def _unfile(self, old: JobSummary) -> None:
        compat = old.label("compat")
        if isinstance(compat, str) and compat in self._by_compat:
            self._by_compat[compat].discard(old.id)
            if not self._by_compat[compat]:
                del self._by_compat[compat]
        self._unended.discard(old.id)

    def _share(self, value):
        """One copy of a value many jobs have (their kind, model, label set …)."""
        if not isinstance(value, (str, tuple)):
            return value
        shared = self._shared.get(value)
        if shared is None:
            if len(self._shared) >= SHARED_MAX:
                self._shared = {}  # a bound: values seen before keep their copies
            shared = self._shared[value] = value
        return shared

    # -- reading it -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, job_id: str) -> JobSummary | None:
        return self._jobs.get(job_id)

    def all(self, wait: bool = True) -> list[JobSummary]:
        """Every job, in no order; without `wait` (on the loop), those indexed so far while it
        is being built."""
        if wait:
            self._built.wait()
        with self._lock:
            return list(self._jobs.values())

    def compat(self, name: str) -> list[JobSummary]:
        """The jobs with `labels.compat` = name, in id order."""
        self._built.wait()
        with self._lock:
            ids = list(self._by_compat.get(name, ()))
        return self._summaries(sorted(ids))

    def page(self, after: str, keep: Callable[[JobSummary], bool], limit: int, compat: str | None = None) -> list[JobSummary]:
        """Up to `limit` jobs that `keep`, in id order after `after` (among labels.compat = compat)."""
        self._built.wait()
        with self._lock:
            ids = list(self._by_compat.get(compat, ())) if compat is not None else self._ids[bisect.bisect_right(self._ids, after):]
        if compat is not None:
            ids = sorted(i for i in ids if i > after)
        found = []
        for summary in self._summaries(ids):
            if keep(summary):
                found.append(summary)
                if len(found) == limit:
                    break
        return found

    def _summaries(self, ids: Iterable[str]) -> list[JobSummary]:
        jobs = self._jobs  # a dict's get is atomic: read without the lock (a job gone meanwhile is skipped)
        return [s for i in ids if (s := jobs.get(i)) is not None]
