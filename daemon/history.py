"""What the outbox says about past jobs: durations per kind and model, outcomes, waits,
storage. Behind time estimates (`estimated_time_seconds` …) and statistics (Visualizr's
/metrics, the native /api/v1/stats); measured, not constants, and read from the outbox, so
they survive restarts and count every host's jobs.

Read incrementally: a job folder's status.json is reread only when its size or mtime
changed, at most once per REFRESH_SECONDS; status changes of this daemon's own jobs come in
at once through `seen()`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from contract.status import FINAL_STATES
from daemon.fsops import read_json
from daemon.spool import STATUS, Spool, is_valid_job_id

REFRESH_SECONDS = 5.0
# Estimates rest on the most recent runs of a kind and model.
RECENT_RUNS = 50


def epoch(value) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class Past:
    """One job as far as history cares."""

    id: str
    kind: str | None
    model: str | None
    state: str
    created: float | None
    started: float | None
    finished: float | None
    result_bytes: int
    videos: int  # result files that are videos

    @classmethod
    def of(cls, doc: dict) -> "Past":
        files = ((doc.get("result") or {}).get("files") or []) if doc.get("state") == "completed" else []
        files = [f for f in files if isinstance(f, dict)]
        return cls(str(doc.get("id")), doc.get("kind"), doc.get("model"), str(doc.get("state")),
                   epoch(doc.get("created_at")), epoch(doc.get("started_at")), epoch(doc.get("finished_at")),
                   sum(int(f.get("size") or 0) for f in files),
                   sum(1 for f in files if str(f.get("media_type", "")).startswith("video/")))

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


def _summary(values: list[float]) -> dict:
    if not values:
        return {"average": None, "median": None, "fastest": None, "slowest": None}
    return {"average": round(statistics.fmean(values), 3), "median": round(statistics.median(values), 3),
            "fastest": round(min(values), 3), "slowest": round(max(values), 3)}


def _rate(done: int, failed: int) -> float | None:
    return round(100.0 * done / (done + failed), 1) if done + failed else None


class History:
    def __init__(self, spool: Spool):
        self.spool = spool
        self._jobs: dict[str, Past] = {}
        self._signatures: dict[str, tuple[int, int]] = {}
        self._refreshed = float("-inf")
        self._estimates: dict[tuple, tuple[float | None, int]] = {}  # run_estimate's, until a job changes

    # -- keeping up with the outbox -----------------------------------------------------------
    def seen(self, doc: dict) -> None:
        """A status this daemon just wrote."""
        if is_valid_job_id(str(doc.get("id", ""))):
            self._jobs[doc["id"]] = Past.of(doc)
            self._signatures.pop(doc["id"], None)  # reread at the next refresh
            self._estimates.clear()

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._refreshed < REFRESH_SECONDS:
            return
        self._refreshed = now
        present = set()
        with os.scandir(self.spool.outbox) as it:
            for entry in it:
                if not is_valid_job_id(entry.name):
                    continue
                present.add(entry.name)
                try:
                    st = os.stat(os.path.join(entry.path, STATUS))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                signature = (st.st_size, st.st_mtime_ns)
                if self._signatures.get(entry.name) == signature:
                    continue
                doc = read_json(self.spool.job_outbox(entry.name) / STATUS)
                if doc is not None:
                    self._jobs[entry.name] = Past.of(doc)
                    self._signatures[entry.name] = signature
                    self._estimates.clear()
        for gone in self._jobs.keys() - present:
            self._jobs.pop(gone, None)
            self._signatures.pop(gone, None)
            self._estimates.clear()

    def jobs(self) -> list[Past]:
        self.refresh()
        return list(self._jobs.values())

    # -- estimates --------------------------------------------------------------------------------
    def run_estimate(self, kind: str | None, model: str | None) -> tuple[float | None, int]:
        """The median of the recent completed runs of this kind and model (else of the kind),
        and how many runs it rests on (kept until a job's status changes: it is asked on
        every status request of a queued or running job)."""
        self.refresh()
        key = (kind, model)
        if key not in self._estimates:
            past = [p for p in self._jobs.values() if p.kind == kind and p.run_seconds is not None]
            same = [p for p in past if p.model == model] or past
            recent = sorted(same, key=lambda p: p.finished or 0)[-RECENT_RUNS:]
            self._estimates[key] = ((round(statistics.median(p.run_seconds for p in recent), 3), len(recent))
                                    if recent else (None, 0))
        return self._estimates[key]

    # -- statistics ---------------------------------------------------------------------------------
    def statistics(self, queued: int) -> dict:
        jobs = self.jobs()
        now = time.time()
        day_start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        done = [p for p in jobs if p.state == "completed"]
        failed = [p for p in jobs if p.state == "failed"]
        runs = [p.run_seconds for p in done if p.run_seconds is not None]
        waits = [w for p in jobs if (w := p.wait_seconds) is not None]
        models: dict[str, dict] = {}
        for name in sorted({p.model for p in jobs if p.model}):
            mine = [p for p in jobs if p.model == name]
            stats = self.model_stats(name, mine)
            models[name] = {"generations": stats["total_generations"], "success_rate": stats["success_rate_percent"],
                            "average_time_seconds": stats["average_generation_time_seconds"]}
        try:
            free = shutil.disk_usage(self.spool.outbox).free
        except OSError:
            free = None
        return {
            "requests": {"total": len(jobs), "today": sum(1 for p in jobs if (p.created or 0) >= day_start),
                         "per_hour": round(sum(1 for p in jobs if (p.created or 0) >= now - 86400) / 24, 2),
                         "success_rate_percent": _rate(len(done), len(failed)),
                         "completed": len(done), "failed": len(failed),
                         "canceled": sum(1 for p in jobs if p.state == "canceled")},
            "generation": {f"{k}_seconds": v for k, v in _summary(runs).items()},
            "queue": {"current_length": queued, "max_length_today": self._max_queue_since(jobs, day_start),
                      "average_wait_seconds": round(statistics.fmean(waits), 3) if waits else None},
            "storage": {"total_videos": sum(p.videos for p in done), "total_bytes": sum(p.result_bytes for p in done),
                        "available_bytes": free},
            "models": models,
        }

    def model_stats(self, name: str, jobs: list[Past] | None = None) -> dict:
        mine = [p for p in (self.jobs() if jobs is None else jobs) if p.model == name and p.state in FINAL_STATES]
        done = [p for p in mine if p.state == "completed"]
        runs = [p.run_seconds for p in done if p.run_seconds is not None]
        return {"average_generation_time_seconds": round(statistics.fmean(runs), 3) if runs else None,
                "success_rate_percent": _rate(len(done), sum(1 for p in mine if p.state == "failed")),
                "total_generations": len(mine)}

    @staticmethod
    def _max_queue_since(jobs: list[Past], since: float) -> int:
        """The longest the queue was since `since`: jobs created and not yet started."""
        events = []
        for p in jobs:
            if p.created is None:
                continue
            left = p.started if p.started is not None else (p.finished if p.state in FINAL_STATES else None)
            if left is not None and left < since:
                continue
            events.append((max(p.created, since), 1))
            if left is not None:
                events.append((left, -1))
        length = longest = 0
        for _, step in sorted(events, key=lambda e: (e[0], e[1])):
            length += step
            longest = max(longest, length)
        return longest
