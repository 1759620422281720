"""Dispatch: the queue in memory, which idle worker takes which job, starting an attempt,
loading and unloading models on request, and the pause (SPEC §10.4) that holds it all.

The arbiter owns the workers and calls in here each turn; how an attempt *ends* is
daemon/jobs/attempts.py's.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Mapping
from typing import Any
from pathlib import Path

import structlog

from contract import messages as m
from contract.status import new_status, utc_now
from daemon.config import Settings
from daemon.spool.crashpoints import CrashPoints
from daemon.spool.fscheck import spool_fault
from daemon.spool.fsops import read_json
from daemon.jobs.ends import JobEnds
from daemon.jobs.policy import End, Start, Unreadable, before_start, run_message
from daemon.spool.pause import Pause, PauseWatch
from daemon.spool.pause import pause as write_pause
from daemon.spool.pause import resume as remove_pause
from daemon.spool.quarantine import quarantine
from daemon.registry import refresh_models
from daemon.spool.layout import JOB_DOC, QueueName, Spool
from daemon.spool.status import StatusWriter
from daemon.spool.transitions import Transitions
from daemon.spool.watcher import Hints
from daemon.workers import RunningJob, WorkerHandle

log = structlog.get_logger()


class Dispatcher:
    """Hands queued jobs to idle workers, in queue order, while nothing pauses it."""

    def __init__(self, spool: Spool, settings: Callable[[], Settings], kinds: Mapping, workers: list[WorkerHandle],
                 transitions: Transitions, ends: JobEnds, statuses: StatusWriter, clock_for: Callable[[dict, bool], Any],
                 crash: CrashPoints, wake: Callable[[], None], stop_job: Callable[[WorkerHandle, str], None]):
        self.spool, self.settings, self.kinds, self.workers = spool, settings, kinds, workers
        self.transitions, self.ends, self.statuses = transitions, ends, statuses
        # (job, whether its model loads) → the attempt's stage clock: its eta_seconds from past runs
        self.clock_for = clock_for
        self.crash, self.wake = crash, wake
        self.stop_job = stop_job  # asks a worker to stop its job at its next step (attempts.py)
        self.queue: list[QueueName] = []
        self._job_models: dict[str, str | None] = {}  # queued job id → its model (placement)
        # PAUSE / hosts/<me>.pause (daemon/spool/pause.py): claims stop, drops still queue.
        self.pausing = PauseWatch(spool, spool.host)
        self._freeing: set[int] = set()  # workers asked to unload their models while paused
        self.draining = False
        self.scratch_root: Path | None = None  # set when the spool is opened (it names the spool)
        self.on_pause_change: Callable[[], None] = lambda: None  # the heartbeat says it at once

    # -- the queue ---------------------------------------------------------------------------
    def refresh(self, quarantine_odd_names: bool = False) -> None:
        """Lists queue/ again (the periodic rescan; after a requeue)."""
        odd: list[str] = []
        self.queue = self.spool.queued_names(odd if quarantine_odd_names else None)
        for name in odd:  # not a name this daemon (or any) gives a queued job
            quarantine(self.spool, self.spool.queue / name, f"queue/{name!r} is not <rank>-<usec>-<job id>")

    def queued(self, qn: QueueName) -> None:
        """A job entered the queue (accepted here): in line, and running if a worker is free."""
        self._insert(qn)
        if not self.draining:
            self.dispatch()  # a burst starts running while the rest is still being accepted

    def apply_hints(self, hints: Hints) -> None:
        """Keeps the queue current from inotify names, without listing the folder (the
        periodic rescan corrects whatever events miss)."""
        if hints.queue_removed:
            self.queue = [q for q in self.queue if str(q) not in hints.queue_removed]
        for name in hints.queue_added:
            qn = QueueName.parse(name)
            if qn is not None:
                self._insert(qn)

    def forget(self, job_id: str) -> None:
        """A queued job that ended without running (canceled)."""
        self.queue = [q for q in self.queue if q.job_id != job_id]

    def _insert(self, qn: QueueName) -> None:
        i = bisect.bisect_left(self.queue, qn)
        if i == len(self.queue) or self.queue[i] != qn:
            self.queue.insert(i, qn)

    # -- placing and starting ------------------------------------------------------------------
    def dispatch(self) -> None:
        """Hands the queue, in order, to idle workers: each job to one that already holds its
        model if there is one, else to the one with the most room for another model."""
        while self.queue and not self.draining and self.pausing.current is None:
            idle = [w for w in self.workers if w.idle]
            if not idle:
                return
            qn = self.queue.pop(0)
            worker = place(idle, self._queued_model(qn) if len(idle) > 1 else None)
            try:
                job_dir = self.transitions.claim(qn)
            except OSError as exc:
                if spool_fault(exc) is not None:
                    raise
                log.error("claim.failed", job_id=qn.job_id, error=str(exc))
                continue
            finally:
                self._job_models.pop(qn.job_id, None)
            if job_dir is not None:
                self.start_job(worker, job_dir, qn.job_id)

    def _queued_model(self, qn: QueueName) -> str | None:
        if qn.job_id not in self._job_models:
            job = read_json(self.spool.queue / str(qn) / JOB_DOC)
            self._job_models[qn.job_id] = job.get("model") if isinstance(job, dict) else None
        return self._job_models[qn.job_id]

    def start_job(self, worker: WorkerHandle, job_dir: Path, job_id: str) -> None:
        """A claimed job: ended at once if it may not start (daemon/jobs/policy.py), else run."""
        settings = self.settings()
        plan = before_start(job_dir, self.kinds, settings, self.transitions.cancel_requested(job_id))
        if isinstance(plan, Unreadable):
            quarantine(self.spool, job_dir, plan.reason)
            return
        if isinstance(plan, End):
            self.ends.publish(job_dir, job_id, plan.state, error=plan.error)
            return
        self._start(worker, job_dir, job_id, plan, settings)

    def _start(self, worker: WorkerHandle, job_dir: Path, job_id: str, plan: Start, settings: Settings) -> None:
        job, host = plan.job, self.spool.host
        attempt = self.transitions.start_attempt(job_dir)
        loads = job.get("model") is not None and not worker.holds(job.get("model"))
        clock = self.clock_for(job, loads)
        self.statuses.write(new_status(
            job_id, job, "running", attempt=attempt, host=host, device=worker.device,
            started_at=utc_now(), stage="starting", created_at=job["_meta"].get("created_at"),
            eta_seconds=clock.report("starting", None),
        ))
        self.crash.hit("attempt.running")
        worker.job = RunningJob(job_id, job, job_dir, attempt, clock=clock)
        worker.heard()
        log.info("job.started", job_id=job_id, device=worker.device, attempt=attempt, kind=job["kind"])
        if not worker.send(run_message(job_id, plan, attempt, host, job_dir, self.scratch_root, settings)):
            worker.kill("crash")  # its exit handler requeues the job

    # -- models ---------------------------------------------------------------------------------
    def load_model(self, name: str) -> str:
        """Asks one worker to load `name` (one that holds it already answers at once);
        returns its device. KeyError: not in the registry; RuntimeError: no worker up."""
        settings = self.settings()
        if name not in settings.models:
            refresh_models(settings)  # a folder copied into [registry] dir since the last scan
        entry = settings.models[name]
        for w in self.workers:
            if w.holds(name) or name in w.loading:
                return w.device
        up = [w for w in self.workers if w.alive and w.ready]
        if not up:
            raise RuntimeError("no worker is running")
        worker = place([w for w in up if w.idle] or up, name)
        worker.loading.add(name)
        worker.send(m.LoadModel(name, entry.model_dump(mode="json")))
        return worker.device

    def unload_model(self, name: str) -> list[str]:
        """Asks every worker holding `name` to unload it; returns their devices."""
        devices = []
        for w in self.workers:
            if w.holds(name) and w.alive:
                w.send(m.UnloadModel(name))
                devices.append(w.device)
        return devices

    def models_changed(self, worker: WorkerHandle) -> None:
        worker.loading.clear()
        self._freeing.discard(worker.index)  # unloaded (or not all: asked again next turn)

    # -- pause ------------------------------------------------------------------------------------
    def check_pause(self, now: float, force: bool = False) -> None:
        """Reads the pause files (throttled) and does what the pause asks of running jobs
        (`now`: back to the queue at their next step) and idle workers (`free_memory`)."""
        change = self.pausing.refresh(now, force)
        if change is not None:
            before, after = change
            if after is not None:
                log.info("daemon.paused", scope=after.scope, now=after.now, free_memory=after.free_memory,
                         by=after.by, reason=after.reason)
            else:
                log.info("daemon.resumed", was=before.scope if before else None)
                self._freeing.clear()
                self.wake()  # claim what queued meanwhile
            self.on_pause_change()
        paused = self.pausing.current
        if paused is None:
            return
        for w in self.workers:
            if paused.now and w.job is not None and not w.job.lost:
                self.stop_job(w, "pause")
            elif paused.free_memory and w.idle and w.models and w.index not in self._freeing:
                self._freeing.add(w.index)
                for name in w.models:
                    w.send(m.UnloadModel(name))
                log.info("worker.freeing_memory", device=w.device, models=w.models, reason="paused with free_memory")

    def pause(self, host: str | None = None, **fields) -> Pause:
        """Writes the pause file (all hosts, or `host`) and obeys it at once if it is ours."""
        paused = write_pause(self.spool, host, **fields)
        self.check_pause(time.monotonic(), force=True)
        return paused

    def resume(self, host: str | None = None) -> list[str]:
        removed = remove_pause(self.spool, host)
        self.check_pause(time.monotonic(), force=True)
        return removed


def place(idle: list[WorkerHandle], model: str | None) -> WorkerHandle:
    """The idle worker for a job of `model`: one that holds it, else the one with the fewest
    models (it keeps the others' models warm)."""
    if model is not None:
        for w in idle:
            if w.holds(model):
                return w
        return min(idle, key=lambda w: (len(w.models), w.model_state.get("models_bytes", 0), w.index))
    return min(idle, key=lambda w: (len(w.models), w.index))
