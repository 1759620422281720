"""What the outbox says about past jobs: durations per kind and model (per stage and size
for video runs), model loads, outcomes, waits, storage. Behind time estimates
(`estimated_time_seconds`, `eta_seconds` …; daemon/estimates.py) and statistics (Visualizr's
/metrics, the native /api/v1/stats); measured, not constants, and read from the outbox, so
they survive restarts and count every host's jobs.

Read incrementally: a job folder's status.json is reread only when its size or mtime
changed, at most once per REFRESH_SECONDS; status changes of this daemon's own jobs come in
at once through `seen()`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from contract.status import FINAL_STATES
from daemon.estimates import SIZE_KEYS, Measured, RunPlan, plan_run
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
    host: str | None = None
    load_seconds: float | None = None  # a load of its model that it waited for
    measured: Measured | None = None  # a completed video run's work and stage seconds
    sizes: dict | None = None  # the SIZE_KEYS its run used
    defaulted: frozenset = frozenset()  # the SIZE_KEYS its job left to the model

    @classmethod
    def of(cls, doc: dict) -> "Past":
        result = doc.get("result") if doc.get("state") == "completed" and isinstance(doc.get("result"), dict) else {}
        files = [f for f in result.get("files") or [] if isinstance(f, dict)]
        past = cls(str(doc.get("id")), doc.get("kind"), doc.get("model"), str(doc.get("state")),
                   epoch(doc.get("created_at")), epoch(doc.get("started_at")), epoch(doc.get("finished_at")),
                   sum(int(f.get("size") or 0) for f in files),
                   sum(1 for f in files if str(f.get("media_type", "")).startswith("video/")), doc.get("host"))
        if past.run_seconds is None:
            return past
        model, used, given = (value if isinstance(value, dict) else {} for value in (
            result.get("model"), result.get("params"), (doc.get("job") or {}).get("params")))
        loaded = model.get("loaded") is True and isinstance(model.get("load_seconds"), (int, float))
        return dataclasses.replace(
            past, load_seconds=float(model["load_seconds"]) if loaded else None,
            measured=Measured.of(result, past.run_seconds),
            sizes={k: used[k] for k in SIZE_KEYS if isinstance(used.get(k), int)},
            defaulted=frozenset(k for k in SIZE_KEYS if given.get(k) is None))

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
        self._recent: dict[tuple, list[Past]] = {}  # _latest's, until a job ends

    # -- keeping up with the outbox -----------------------------------------------------------
    def seen(self, doc: dict) -> None:
        """A status this daemon just wrote."""
        if is_valid_job_id(str(doc.get("id", ""))):
            self._jobs[doc["id"]] = Past.of(doc)
            self._signatures.pop(doc["id"], None)  # reread at the next refresh
            if doc.get("state") in FINAL_STATES:  # a run to estimate from (progress changes none)
                self._recent.clear()

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
                    self._recent.clear()
        for gone in self._jobs.keys() - present:
            self._jobs.pop(gone, None)
            self._signatures.pop(gone, None)
            self._recent.clear()

    def jobs(self) -> list[Past]:
        self.refresh()
        return list(self._jobs.values())

    # -- estimates --------------------------------------------------------------------------------
    def run_plan(self, job: dict, host: str | None, will_load: bool) -> RunPlan | None:
        """A job's estimated seconds per stage (daemon/estimates.py), from the recent runs of
        its kind and model (of its kind when the model has none; this host's where it has
        any), with its model's load when `will_load`; None before any such run."""
        kind, model = job.get("kind"), job.get("model")
        load = self.load_estimate(model, host) if will_load and model else None
        return plan_run(job.get("params") or {}, self.recent_runs(kind, model, host), load)

    def recent_runs(self, kind: str | None, model: str | None, host: str | None) -> list[Past]:
        """The last RECENT_RUNS completed runs of a kind and model (of the kind when the model
        has none), this host's where it has any, oldest first."""
        def ran(p: Past) -> bool:
            return p.kind == kind and p.run_seconds is not None

        return (self._latest(("runs", kind, model, host), lambda p: ran(p) and p.model == model, host)
                or self._latest(("runs", kind, host), ran, host))

    def load_estimate(self, model: str | None, host: str | None) -> float | None:
        """The median of the recent loads of `model` that jobs waited for (this host's where
        it has any); None if none did."""
        loads = self._latest(("loads", model, host), lambda p: p.model == model and p.load_seconds is not None, host)
        return round(statistics.median(p.load_seconds for p in loads), 3) if loads else None

    def _latest(self, key: tuple, wanted: Callable[[Past], bool], host: str | None) -> list[Past]:
        """The last RECENT_RUNS `wanted` jobs, this host's where it has any, oldest first (kept
        until a job ends: asked on every status request of a queued or running job)."""
        self.refresh()
        if key not in self._recent:
            found = [p for p in self._jobs.values() if wanted(p)]
            here = [p for p in found if p.host == host] or found
            self._recent[key] = sorted(here, key=lambda p: p.finished or 0)[-RECENT_RUNS:]
        return self._recent[key]

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
