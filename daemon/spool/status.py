"""Writing status.json (its shape: contract/status.py), atomically.

Every state change is written at once; progress-only updates are throttled per job.
"""

from __future__ import annotations

import time

from contract.status import PREVIEW_FILE, PROGRESS_KEYS, utc_now
from daemon.spool.fsops import atomic_write_json, read_json
from daemon.spool.layout import Spool


class StatusWriter:
    """Writes outbox/<id>/status.json; keeps the last document of each job this daemon runs
    in memory (its throttled progress)."""

    def __init__(self, spool: Spool, progress_interval: float, on_write=None, shown=None, *, api: str):
        self.spool = spool
        # The path the HTTP API serves jobs under (daemon/http/paths.py's API), for the urls
        # a status gives: the spool knows no HTTP path of its own.
        self.api = api
        self.progress_interval = progress_interval
        self._docs: dict[str, dict] = {}
        self._last_write: dict[str, float] = {}
        self._pending: set[str] = set()
        self._on_write = on_write  # callback(doc) for live listeners (API events)
        # shown(doc): its host paths shortened (daemon/view/hostpaths.py): a status is read by anyone
        # who may read the job; the logs keep the absolute paths.
        self._shown = shown

    def file_url(self, job_id: str, name: str) -> str:
        """Where a result file of the job is served."""
        return f"{self.api}/jobs/{job_id}/files/{name}"

    def preview_of(self, job_id: str, step: int) -> dict:
        """A running status's `preview`: where its live preview.jpg is served, and its step."""
        return {"url": f"{self.api}/jobs/{job_id}/{PREVIEW_FILE}", "step": step}

    @property
    def has_pending(self) -> bool:
        """Whether throttled progress waits to be written (flush() soon)."""
        return bool(self._pending)

    def live(self, job_id: str) -> dict | None:
        """The in-memory status of a job this daemon runs (None otherwise)."""
        return self._docs.get(job_id)

    def current(self, job_id: str) -> dict | None:
        return self._docs.get(job_id) or read_json(self.spool.status_path(job_id))

    def write(self, doc: dict, durable: bool = True) -> None:
        """Writes a status now; `durable` (fsync) for state changes, not for progress."""
        doc["updated_at"] = utc_now()
        if self._shown is not None:
            self._shown(doc)
        job_id = doc["id"]
        atomic_write_json(self.spool.status_path(job_id), doc, fsync=durable)
        self._last_write[job_id] = time.monotonic()
        self._pending.discard(job_id)
        if doc["state"] == "running":
            self._docs[job_id] = doc
        else:  # queued: any host may claim it next, so the file is the truth; ended: done
            self.forget(job_id)
        if self._on_write:
            self._on_write(doc)

    def progress_due(self, job_id: str) -> bool:
        """Whether a progress update now would be written (not just kept in memory)."""
        return time.monotonic() - self._last_write.get(job_id, 0) >= self.progress_interval

    def progress(self, job_id: str, update: dict) -> None:
        """Merges a progress update; writes it if the last write is old enough."""
        doc = self._docs.get(job_id)
        if doc is None or doc["state"] != "running":
            return
        if update.get("preview_step") is not None:  # the worker has just written a new preview.jpg
            doc["preview"] = self.preview_of(job_id, update["preview_step"])
        update = {k: update.get(k) for k in PROGRESS_KEYS if k in update}
        if "progress" in update:
            update["progress"] = max(doc.get("progress") or 0, update["progress"] or 0)
        stage_changed = update.get("stage") not in (None, doc.get("stage"))
        doc.update(update)
        if stage_changed or time.monotonic() - self._last_write.get(job_id, 0) >= self.progress_interval:
            self.write(doc, durable=False)
        else:
            self._pending.add(job_id)

    def flush(self) -> None:
        """Writes throttled progress whose interval has passed (called from the main loop)."""
        now = time.monotonic()
        for job_id in list(self._pending):
            if now - self._last_write.get(job_id, 0) >= self.progress_interval and job_id in self._docs:
                self.write(self._docs[job_id], durable=False)

    def forget(self, job_id: str) -> None:
        self._docs.pop(job_id, None)
        self._last_write.pop(job_id, None)
        self._pending.discard(job_id)
