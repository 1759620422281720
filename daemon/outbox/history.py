"""What the outbox says about past jobs: durations per kind and model (per stage and size
for video runs), model loads, outcomes, waits, storage. Behind time estimates
(`estimated_time_seconds`, `eta_seconds` …; daemon/outbox/estimates.py) and statistics (Visualizr's
/metrics, the native /api/v1/stats); measured, not constants, and read from the outbox, so
they survive restarts and count every host's jobs.

The jobs are the outbox index's summaries (daemon/outbox/index.py: kept current there, never
a walk of the outbox here); what is computed from them is kept until an ended job changes
(the index's version), statistics at most STATS_FRESH_SECONDS.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from contract.status import FINAL_STATES
from daemon.outbox.estimates import RunPlan, plan_run

if TYPE_CHECKING:
    from daemon.outbox.index import JobSummary, OutboxIndex

# Estimates rest on the most recent runs of a kind and model.
RECENT_RUNS = 50
# Statistics count queued and running jobs too (not in the index's version): recomputed this often at most.
STATS_FRESH_SECONDS = 1.0


def _summary(values: list[float]) -> dict:
    if not values:
        return {"average": None, "median": None, "fastest": None, "slowest": None}
    return {"average": round(statistics.fmean(values), 3), "median": round(statistics.median(values), 3),
            "fastest": round(min(values), 3), "slowest": round(max(values), 3)}


def _rate(done: int, failed: int) -> float | None:
    return round(100.0 * done / (done + failed), 1) if done + failed else None


class History:
    """Called on the loop (estimates, a model's figures: cached, never waiting for the index
    to be built) and in the read model's listing threads (statistics)."""

    def __init__(self, index: OutboxIndex):
        self.index = index
        self._cache: tuple[int, dict] = (-1, {})  # (index version, answers): replaced whole, never half

    def _cached(self) -> dict:
        version, answers = self._cache
        if version != self.index.version:
            version, answers = self._cache = (self.index.version, {})
        return answers

    def jobs(self, wait: bool = True) -> list[JobSummary]:
        """Every job; on the loop (wait=False) while the index is built, those in it so far."""
        return self.index.all(wait)

    def completed_since(self, since: float) -> int:
        return sum(1 for p in self.jobs() if p.state == "completed" and (p.finished or 0) >= since)

    # -- estimates --------------------------------------------------------------------------------
    def run_plan(self, job: dict, host: str | None, will_load: bool) -> RunPlan | None:
        """A job's estimated seconds per stage (daemon/outbox/estimates.py), from the recent runs of
        its kind and model (of its kind when the model has none; this host's where it has
        any), with its model's load when `will_load`; None before any such run."""
        kind, model = job.get("kind"), job.get("model")
        load = self.load_estimate(model, host) if will_load and model else None
        return plan_run(job.get("params") or {}, self.recent_runs(kind, model, host), load)

    def recent_runs(self, kind: str | None, model: str | None, host: str | None) -> list[JobSummary]:
        """The last RECENT_RUNS completed runs of a kind and model (of the kind when the model
        has none), this host's where it has any, oldest first."""
        def ran(p: JobSummary) -> bool:
            return p.kind == kind and p.run_seconds is not None

        return (self._latest(("runs", kind, model, host), lambda p: ran(p) and p.model == model, host)
                or self._latest(("runs", kind, host), ran, host))

    def load_estimate(self, model: str | None, host: str | None) -> float | None:
        """The median of the recent loads of `model` that jobs waited for (this host's where
        it has any); None if none did."""
        loads = self._latest(("loads", model, host), lambda p: p.model == model and p.load_seconds is not None, host)
        return round(statistics.median(p.load_seconds for p in loads), 3) if loads else None

    def _latest(self, key: tuple, wanted: Callable[[JobSummary], bool], host: str | None) -> list[JobSummary]:
        """The last RECENT_RUNS `wanted` jobs, this host's where it has any, oldest first (kept
        until an ended job changes: asked on every status request of a queued or running job,
        never waiting for the index to be built)."""
        answers = self._cached()
        if key not in answers:
            found = [p for p in self.jobs(wait=False) if wanted(p)]
            here = [p for p in found if p.host == host] or found
            answers[key] = sorted(here, key=lambda p: p.finished or 0)[-RECENT_RUNS:]
        return answers[key]

    # -- statistics ---------------------------------------------------------------------------------
    def statistics(self, queued: int) -> dict:
        answers = self._cached()
        kept = answers.get(("statistics", queued))
        if kept is not None and time.monotonic() - kept[0] < STATS_FRESH_SECONDS:
            return kept[1]
        jobs = self.jobs()
        now = time.time()
        day_start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        done = [p for p in jobs if p.state == "completed"]
        failed = [p for p in jobs if p.state == "failed"]
        runs = [p.run_seconds for p in done if p.run_seconds is not None]
        waits = [w for p in jobs if (w := p.wait_seconds) is not None]
        by_model: dict[str, list[JobSummary]] = {}
        for p in jobs:
            if p.model:
                by_model.setdefault(p.model, []).append(p)
        models: dict[str, dict] = {}
        for name in sorted(by_model):
            stats = self.model_stats(name, by_model[name])
            models[name] = {"generations": stats["total_generations"], "success_rate": stats["success_rate_percent"],
                            "average_time_seconds": stats["average_generation_time_seconds"]}
        try:
            free = shutil.disk_usage(self.index.spool.outbox).free
        except OSError:
            free = None
        figures = {
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
        answers[("statistics", queued)] = (time.monotonic(), figures)
        return figures

    def model_stats(self, name: str, jobs: list[JobSummary] | None = None) -> dict:
        """A model's ended jobs: average run, success rate, how many (kept until an ended job
        changes when asked for on its own)."""
        answers = self._cached()
        if jobs is None and ("model", name) in answers:
            return answers[("model", name)]
        mine = [p for p in (self.jobs(wait=False) if jobs is None else jobs) if p.model == name and p.state in FINAL_STATES]
        done = [p for p in mine if p.state == "completed"]
        runs = [p.run_seconds for p in done if p.run_seconds is not None]
        stats = {"average_generation_time_seconds": round(statistics.fmean(runs), 3) if runs else None,
                 "success_rate_percent": _rate(len(done), sum(1 for p in mine if p.state == "failed")),
                 "total_generations": len(mine)}
        if jobs is None:
            answers[("model", name)] = stats
        return stats

    @staticmethod
    def _max_queue_since(jobs: list[JobSummary], since: float) -> int:
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
