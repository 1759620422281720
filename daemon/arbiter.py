"""The arbiter: the daemon's main loop (gunicorn-style).

Signal handlers only set a flag and wake the loop. Each turn of the loop takes watcher
hints, accepts complete drops, refreshes the queue, hands jobs to idle workers, beats
the heartbeat, takes over dead hosts' jobs, and restarts dead workers. Workers talk back
over their pipes (read with loop.add_reader), so a message is handled the moment it lands.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from daemon.config import ConfigError, Settings, load_settings
from daemon.crashpoints import ENV as CRASH_ENV
from daemon.crashpoints import CrashPoints
from daemon.devices import worker_devices
from daemon.fds import raise_nofile_limit
from daemon.fscheck import FsClass, classify, spool_fault
from daemon.fsops import create_exclusive, move, read_json
from daemon.hosts import Heartbeat, LeaseTracker
from daemon.intake import Drop, InboxScanner, entry_fault, note_accept_failure, printable, stage_drop
from daemon.jobfile import resolve_inputs
from daemon.notify import Notifier
from daemon.spool import (
    CANCEL_MARK,
    FINAL_DOC,
    JOB_DOC,
    RESULTS_DIR,
    RETIRED_PREFIX,
    QueueName,
    Spool,
    attempts_started,
    is_valid_job_id,
)
from daemon.status import FINAL_STATES, StatusWriter, new_status, utc_now
from daemon.transitions import Transitions
from daemon.watcher import Hints, SpoolWatcher
from daemon.workers import RunningJob, WorkerHandle
from pipeline.errors import ErrorCode, JobError
from pipeline.kinds import load_kinds

log = structlog.get_logger()

# How often a broken spool is probed.
SPOOL_PROBE_SECONDS = 0.5
# A running job that ignores a cancel this long is stopped by killing its worker.
CANCEL_GRACE_SECONDS = 10.0
MAX_RESTART_BACKOFF = 30.0
# A worker that lived this long before exiting starts a new crash streak.
HEALTHY_WORKER_SECONDS = 60.0
# Health turns 503 once this many turns of the main loop in a row have failed.
FAILED_TURNS_UNHEALTHY = 3
# A staged drop whose accept raised this often (over restarts too) is failed `internal`.
MAX_ACCEPT_TRIES = 3


@dataclass
class LoopFailures:
    """Failed turns of the main loop in a row, for health. (Identical failures are logged
    once per 30 s, with a count, by logs.RepeatFilter.)"""

    in_a_row: int = 0
    last: str | None = None

    def failed(self, exc: Exception) -> None:
        self.in_a_row += 1
        self.last = f"{type(exc).__name__}: {str(exc)[:200]}"
        log.error("daemon.tick_failed", error=self.last, exc_info=exc)

    def succeeded(self) -> None:
        if self.in_a_row:
            log.info("daemon.tick_recovered", failed_turns=self.in_a_row, last=self.last)
        self.in_a_row, self.last = 0, None

    def problem(self) -> str | None:
        """Why health is not ok, if the loop keeps failing."""
        if self.in_a_row < FAILED_TURNS_UNHEALTHY:
            return None
        return f"daemon loop failing: {self.in_a_row} turns in a row, last: {self.last}"


class Arbiter:
    def __init__(self, settings: Settings, config_file: Path | None = None):
        self.settings = settings
        self.config_file = config_file
        sc = settings.spool
        self.spool = Spool(sc.root, sc.host)
        self.kinds = load_kinds()
        self.listeners: list = []  # callbacks(doc) for status changes (API events)
        self.statuses = StatusWriter(self.spool, settings.status.progress_interval_seconds, self._status_changed)
        self.crash = CrashPoints.from_env()  # tests only: kill this daemon at a named step
        self.transitions = Transitions(self.spool, settings, self.kinds, self.statuses, self.crash)
        self.scanner = InboxScanner(self.spool.inbox, sc.stable_seconds, sc.input_wait_seconds, settings.limits.job_json_bytes)
        self.scanner.presets = {name: p.accept for name, p in settings.presets.items()}
        self.queue: list[QueueName] = []
        self.workers = [
            WorkerHandle(i, d, settings.workers.model_memory_gb)
            for i, d in enumerate(worker_devices(settings.workers.devices, settings.workers.cpu_workers))
        ]
        self._job_models: dict[str, str | None] = {}  # queued job id → its model (placement)
        self._configure_voices()
        self.heartbeat = Heartbeat(self.spool.hosts, sc.host, sc.lease_seconds)
        self.leases = LeaseTracker(self.spool.hosts, self.spool.active_root, sc.host, sc.lease_seconds)
        self.notifier = Notifier()
        self.watcher: SpoolWatcher | None = None
        self.api_url: str | None = None
        self.started_at = time.time()
        self.stop_requested = False
        self.reload_requested = False
        self.draining = False
        self.counts = {"accepted": 0, "completed": 0, "failed": 0, "canceled": 0, "requeued": 0}
        self.loop_failures = LoopFailures()
        self._accept_retry: set[Path] = set()  # staged drops whose accept raised: tried again on rescans
        self._next_rescan = 0.0
        self._next_beat = 0.0
        self._next_settle = 0.0
        # Why the spool cannot be used now (dead mount, full, read-only); None when fine.
        self.fault: str | None = None
        self._fault_since = 0.0
        self._next_probe = 0.0
        # Why this daemon must not claim on a shared spool (a filesystem without exclusive claims).
        self.paused: str | None = None
        self._opened = False
        self.fs: FsClass | None = None
        # End states that could not be written while the spool was down: job_id → (state, fields).
        self.unpublished: dict[str, tuple[str, dict]] = {}
        self.scratch_root: Path | None = None  # set when the spool is opened (it names the spool)
        self.exit_code = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    # -- life cycle ------------------------------------------------------------
    async def run(self) -> int:
        self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        structlog.contextvars.bind_contextvars(host=self.spool.host)
        started = time.monotonic()
        if self.crash.armed:
            log.warning("test.crash_point_armed", point=self.crash.target, hit=self.crash.at,
                        reason=f"{CRASH_ENV} is set: this daemon kills itself there (tests only)")
        before, after = raise_nofile_limit()  # HTTP clients must not starve spool work of descriptors
        if after != before:
            log.info("daemon.fd_limit_raised", soft_before=before, soft=after)
        try:
            refused = self._open_spool()
        except OSError as exc:
            if spool_fault(exc) is None:
                raise
            self._enter_fault(spool_fault(exc), time.monotonic())
            refused = None
        if refused:
            return refused
        self.watcher = SpoolWatcher(self.wake)
        self.watcher.start()
        self._watch_folders()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._on_stop_signal)
        self.loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        for w in self.workers:
            self._start_worker(w)
        if self.settings.api.enabled:
            from daemon.api import start_api

            self._api_runner, self.api_url = await start_api(self, self.settings.api.host, self.settings.api.port)
        # The first turn (at once: both deadlines are due) lists the queue and beats with the API url.
        self._next_rescan = self._next_beat = 0.0
        self.notifier.ready(self._status_line())
        log.info("daemon.ready", spool=str(self.spool.root), workers=[w.device for w in self.workers],
                 api=self.api_url, recovery_seconds=round(getattr(self, "recovery_seconds", 0.0), 3),
                 start_seconds=round(time.monotonic() - started, 3),
                 filesystem=self.fs.fstype if self.fs else None, fault=self.fault)
        while not self.stop_requested:
            try:
                await asyncio.wait_for(self._wake.wait(), self._next_timeout())
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - the loop must survive a bad turn
                self.loop_failures.failed(exc)
                await asyncio.sleep(0.5)
            else:
                self.loop_failures.succeeded()
        await self.drain()
        return self.exit_code

    def _open_spool(self) -> int | None:
        """Creates the layout, checks who else uses it, recovers what our last run left.
        Returns an exit code if this daemon must not run here."""
        self.spool.create(list(self.settings.presets))
        self.spool_id = self.spool.ensure_identity()
        self.fs = classify(self.spool.root)
        other = self.heartbeat.other_instance_alive()
        if other:
            log.error("daemon.host_in_use", reason=f"another vidspool daemon (pid {other}) runs as host {self.spool.host} on this spool")
            return 1
        refusal = self._shared_refusal()
        if refusal:
            log.error("spool.refused", reason=refusal, filesystem=self.fs.fstype)
            return 2
        # Per host and per spool: two daemons of one name on different spools never share it.
        base = self.settings.workers.scratch_dir or Path(tempfile.gettempdir()) / "vidspool"
        self.scratch_root = base / f"{self.spool.host}-{self.spool_id[:12]}"
        shutil.rmtree(self.scratch_root, ignore_errors=True)  # no worker of ours runs yet
        started = time.monotonic()
        self.resume_folders("daemon restarted")
        self.recovery_seconds = time.monotonic() - started
        self.heartbeat.beat(**self._beat_info())
        self._opened = True
        return None

    def _shared_refusal(self) -> str | None:
        """Why this daemon may not run on a spool whose claims are not exclusive, if so."""
        if self.fs.shared_ok or self.settings.spool.shared is False:
            return None
        if self.settings.spool.shared is True:
            return f"[spool] shared = true, but {self.fs.note}"
        others = self.leases.other_hosts_not_stopped()
        if others:
            return (f"other daemons ({', '.join(others)}) use this spool, and {self.fs.note}; stop them "
                    f"(or remove hosts/<name>.json of hosts that are gone), or run only one daemon here")
        return None

    def wake(self) -> None:
        """Thread-safe: asks the loop to take another turn now."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._wake.set)

    def _on_stop_signal(self) -> None:
        self.stop_requested = True
        self._wake.set()

    def _on_reload_signal(self) -> None:
        self.reload_requested = True
        self._wake.set()

    def _watch_folders(self) -> None:
        self.watcher.watch(self.spool.inbox, "inbox")
        for name in self.settings.presets:
            self.watcher.watch(self.spool.inbox / name, "inbox")
        self.watcher.watch(self.spool.queue, "queue")

    def _next_timeout(self) -> float:
        now = time.monotonic()
        deadlines = [self._next_rescan, self._next_beat]
        if self.scanner.has_unsettled:
            deadlines.append(self._next_settle)
        if self.statuses._pending:
            deadlines.append(now + self.settings.status.progress_interval_seconds / 2)
        deadlines += [w.next_start for w in self.workers if w.process is None]
        return max(0.0, min(deadlines) - now)

    # -- one turn --------------------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        if self.reload_requested:
            self.reload_requested = False
            self.reload()
        hints = self.watcher.take() if self.watcher else Hints()
        if self.fault is not None and now >= self._next_probe:
            self._probe_spool(now)
        if self.fault is None:
            try:
                self._turn(now, hints)
            except OSError as exc:
                reason = spool_fault(exc) or self._identity_fault()
                if reason is None:
                    raise
                self._enter_fault(reason, now)
        self._start_due_workers(now)
        self.notifier.status(self._status_line())
        self.notifier.watchdog()

    def _turn(self, now: float, hints: Hints) -> None:
        """One turn of spool work; any OSError that means a broken spool escapes to tick."""
        for p in hints.moved_in:
            self.scanner.note_moved_in(p)
        for p in hints.written:
            self.scanner.note_written(p)
        periodic = now >= self._next_rescan or hints.overflow
        if periodic:
            self._next_rescan = now + self.settings.spool.rescan_seconds
            problem = self._identity_fault()
            if problem:  # an empty mount point is not an empty queue
                self._enter_fault(problem, now)
                return
        if not self.draining and self.paused is None:
            if periodic:
                self._retry_accepts()
                self.refresh_queue()
            else:
                self._apply_queue_hints(hints)
            settle = self.scanner.has_unsettled and now >= self._next_settle
            if hints.inbox or periodic or settle:
                self._next_settle = now + self.settings.spool.stable_seconds / 3
                self.intake(now)
            self.dispatch()
        beat = self._beat_if_due()
        if (beat or periodic) and not self.draining:  # leases are judged on every rescan too
            self._check_sharing()
            if self.paused is None:
                self.take_over_dead_hosts()
        self.check_running(now)
        self.statuses.flush()

    # -- spool faults --------------------------------------------------------------
    def _enter_fault(self, reason: str, now: float) -> None:
        if self.fault is None:
            self._fault_since = now
        if reason != self.fault:
            log.error("spool.unavailable", reason=reason, spool=str(self.spool.root),
                      action="not accepting or claiming; running jobs keep their results until it is back")
        self.fault = reason
        self._next_probe = now + SPOOL_PROBE_SECONDS

    def _probe_spool(self, now: float) -> None:
        self._next_probe = now + SPOOL_PROBE_SECONDS
        try:
            os.listdir(self.spool.root)
            if self._opened and self._identity_fault():
                self.fault = self._identity_fault()
                return
            if not self._opened:
                refused = self._open_spool()
                if refused:
                    self.exit_code, self.stop_requested = refused, True
                    return
            else:
                self.heartbeat.beat(**self._beat_info())  # proves we can write again
        except OSError as exc:
            if spool_fault(exc) is None:
                raise
            self.fault = spool_fault(exc)
            return
        log.info("spool.recovered", after_seconds=round(now - self._fault_since, 1), reason=self.fault)
        self.fault = None
        self.leases.forget()  # what we saw of other hosts while blind proves nothing
        self._next_rescan = 0.0
        try:
            self.resume_folders("the spool came back")
        except OSError as exc:
            if spool_fault(exc) is None:
                raise
            self._enter_fault(spool_fault(exc), now)

    def _identity_fault(self) -> str | None:
        if not self._opened:
            return None
        try:
            return self.spool.identity_problem(self.spool_id)
        except OSError as exc:
            return spool_fault(exc) or f"cannot read the spool's identity: {exc}"

    def _check_sharing(self) -> None:
        """On a filesystem without exclusive claims, pause while another daemon is alive."""
        if self.fs is None or self.fs.shared_ok or self.settings.spool.shared is False:
            return
        others = self.leases.live_hosts()
        reason = (f"another daemon ({', '.join(others)}) is alive on this spool, and {self.fs.note}"
                  if others else None)
        if reason != self.paused:
            (log.error if reason else log.info)("spool.shared_refused" if reason else "spool.shared_clear", reason=reason)
        self.paused = reason

    # -- intake ----------------------------------------------------------------
    def intake(self, now: float) -> None:
        for drop in self.scanner.scan(now):
            staging = self._stage(drop, now)
            if staging is not None:
                self._accept(staging)
            self._beat_if_due()  # a long burst (slow over sshfs) must not starve our lease

    def _stage(self, drop: Drop, now: float) -> Path | None:
        """Takes a drop out of the inbox (or acts on a cancel file); what goes wrong there
        concerns that drop only: it stays in the inbox, is tried again each scan, logged once."""
        try:
            if drop.form == "cancel":
                self._cancel_file(drop.path)
                return None
            staging = stage_drop(drop, self.spool.active, self.spool.inbox, self.crash)
        except Exception as exc:  # noqa: BLE001 - one drop must never stop the others
            if isinstance(exc, OSError) and entry_fault(exc):
                raise  # the spool, not the drop: tick waits the fault out
            if self.scanner.note_failure(drop.path, exc, now):
                log.exception("intake.stage_failed", drop=printable(str(drop.path)), error=f"{type(exc).__name__}: {exc}")
            return None
        self.scanner.forget(drop.path)
        for p in drop.inputs:
            self.scanner.forget(p)
        return staging

    def _beat_if_due(self) -> bool:
        now = time.monotonic()
        if now < self._next_beat:
            return False
        self._next_beat = now + self.settings.spool.heartbeat_seconds
        self.heartbeat.beat(**self._beat_info())
        return True

    def _accept(self, staging: Path) -> None:
        try:
            qn = self.transitions.accept(staging)
        except Exception as exc:  # noqa: BLE001 - one drop must never stop the intake
            if isinstance(exc, OSError) and spool_fault(exc) is not None:
                raise  # a broken spool, not a bad drop: never fail a job for it; recovery retries
            if not self._accept_failed(staging, exc):
                return
            qn = None
        self.counts["accepted"] += 1
        if qn is None:
            self.counts["failed"] += 1
            return
        i = bisect.bisect_left(self.queue, qn)
        if i == len(self.queue) or self.queue[i] != qn:
            self.queue.insert(i, qn)
        if not self.draining:
            self.dispatch()  # a burst starts running while the rest is still being accepted

    def _accept_failed(self, staging: Path, exc: Exception) -> bool:
        """After an accept raised: the drop stays staged for another try (False), or, after
        MAX_ACCEPT_TRIES, is failed `internal` with its files kept (True)."""
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
        try:
            tries = note_accept_failure(staging)
            if tries < MAX_ACCEPT_TRIES:
                log.exception("intake.accept_failed", staging=str(staging), tries=tries, error=error)
                self._accept_retry.add(staging)
                return False
            log.error("intake.accept_given_up", staging=str(staging), tries=tries, error=error)
            self.transitions.fail_staged(staging, f"accepting the drop failed {tries} times, last: {error}")
        except Exception as again:  # noqa: BLE001 - left staged: the next start tries again
            if isinstance(again, OSError) and spool_fault(again) is not None:
                raise
            log.exception("intake.accept_failed", staging=str(staging), error=f"{type(again).__name__}: {again}")
            return False
        self._accept_retry.discard(staging)
        return True

    def _retry_accepts(self) -> None:
        for staging in sorted(self._accept_retry):
            self._accept_retry.discard(staging)
            if staging.exists():
                self._accept(staging)

    def _cancel_file(self, path: Path) -> None:
        job_id = path.name[: -len(".cancel")]
        outcome = self.cancel(job_id, source="file")
        self.crash.hit("cancel.file_handled")
        try:
            if outcome == "not_found":
                os.rename(path, path.with_name(f".{path.name}.unknown-job"))
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass
        self.scanner.forget(path)

    # -- queue and dispatch ------------------------------------------------------
    def refresh_queue(self) -> None:
        self.queue = self.spool.queued_names()

    def _apply_queue_hints(self, hints: Hints) -> None:
        """Keeps the in-memory queue current from inotify names, without listing the folder
        (the periodic rescan corrects whatever events miss)."""
        if hints.queue_removed:
            self.queue = [q for q in self.queue if str(q) not in hints.queue_removed]
        for name in hints.queue_added:
            qn = QueueName.parse(name)
            if qn is None:
                continue
            i = bisect.bisect_left(self.queue, qn)
            if i == len(self.queue) or self.queue[i] != qn:
                self.queue.insert(i, qn)

    def queue_position(self, job_id: str) -> int | None:
        for i, qn in enumerate(self.queue):
            if qn.job_id == job_id:
                return i + 1
        return None

    def dispatch(self) -> None:
        """Hands the queue, in order, to idle workers: each job to one that already holds its
        model if there is one, else to the one with the most room for another model."""
        while self.queue and not self.draining:
            idle = [w for w in self.workers if w.idle]
            if not idle:
                return
            qn = self.queue.pop(0)
            worker = self._place(idle, self._queued_model(qn) if len(idle) > 1 else None)
            try:
                job_dir = self.transitions.claim(qn)
            except OSError as exc:
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

    @staticmethod
    def _place(idle: list[WorkerHandle], model: str | None) -> WorkerHandle:
        if model is not None:
            for w in idle:
                if w.holds(model):
                    return w
            # No warm copy: the worker with the fewest models keeps the others' models warm.
            return min(idle, key=lambda w: (len(w.models), w.model_state.get("models_bytes", 0), w.index))
        return min(idle, key=lambda w: (len(w.models), w.index))

    def start_job(self, worker: WorkerHandle, job_dir: Path, job_id: str) -> None:
        job = read_json(job_dir / JOB_DOC)
        if job is None:
            log.error("job.unreadable", job_id=job_id, path=str(job_dir))
            return
        if self.transitions.cancel_requested(job_id):
            self._publish(job_dir, job_id, "canceled", error=_canceled())
            return
        used = attempts_started(job_dir)
        if used >= job["max_attempts"]:
            self._publish(job_dir, job_id, "failed", error=JobError(
                ErrorCode.WORKER_CRASHED, f"all {used} attempts crashed").to_status())
            return
        kind = self.kinds.get(job["kind"])
        try:
            if kind is None:
                raise JobError(ErrorCode.INVALID_JOB, f"kind {job['kind']!r} is not installed")
            inputs = resolve_inputs(job.get("inputs") or {}, job_dir, kind, self.settings.limits.input_bytes)
        except JobError as exc:
            self._publish(job_dir, job_id, "failed", error=exc.to_status())
            return
        model_config = None
        if job.get("model"):
            entry = self.settings.models.get(job["model"])
            if entry is None:  # taken out of the registry by a reload while queued
                self._publish(job_dir, job_id, "failed", error=JobError(
                    ErrorCode.MODEL_NOT_FOUND, f"model {job['model']!r} is no longer in the model registry").to_status())
                return
            model_config = entry.model_dump(mode="json")
        attempt = self.transitions.start_attempt(job_dir)
        self.statuses.write(new_status(
            job_id, job, "running", attempt=attempt, host=self.spool.host, device=worker.device,
            started_at=utc_now(), stage="starting", created_at=job["_meta"].get("created_at"),
        ))
        self.crash.hit("attempt.running")
        worker.job = RunningJob(job_id, job, job_dir, attempt)
        log.info("job.started", job_id=job_id, device=worker.device, attempt=attempt, kind=job["kind"])
        sent = worker.send({
            "op": "run", "job_id": job_id, "job": {k: v for k, v in job.items() if k != "_meta"},
            "inputs": {k: [str(p) for p in v] for k, v in inputs.items()},
            "host": self.spool.host, "attempt": attempt,
            "results_dir": str(job_dir / RESULTS_DIR),
            "scratch_dir": str(self.scratch_root / f"{job_id}.{attempt}"),
            "limits": self.settings.limits.model_dump(),
            "model_config": model_config,
            "voices": self.voice_configs(),
            "model_roots": [str(self.settings.registry.dir.resolve())],
        })
        if not sent:
            worker.kill("crash")  # its exit handler requeues the job

    # -- models ---------------------------------------------------------------------
    def models_view(self) -> list[dict]:
        """The registry with where each model is on disk and which workers hold it."""
        from daemon.registry import refresh_models
        from pipeline.models.locate import model_folder

        refresh_models(self.settings)  # list a folder copied into [registry] dir since the last scan
        out = []
        for name, entry in sorted(self.settings.models.items()):
            try:
                folder, problem = str(model_folder(name, entry.model_dump(mode="json"))), None
            except JobError as exc:
                folder, problem = None, exc.message
            out.append({
                "name": name, "path": str(entry.path) if entry.path else None, "repo": entry.repo,
                "kinds": entry.kinds, "pipeline": entry.pipeline, "backend": entry.backend, "dtype": entry.dtype, "offload": entry.offload,
                "defaults": entry.defaults, "folder": folder, "available": problem is None, "problem": problem,
                "loaded_on": [w.device for w in self.workers if w.holds(name)],
                "loading_on": [w.device for w in self.workers if name in w.loading],
            })
        return out

    def load_model(self, name: str) -> str:
        """Asks one worker to load `name` (one that holds it already answers at once);
        returns its device. KeyError: not in the registry; RuntimeError: no worker up."""
        from daemon.registry import refresh_models

        if name not in self.settings.models:
            refresh_models(self.settings)  # a folder copied into [registry] dir since the last scan
        entry = self.settings.models[name]
        for w in self.workers:
            if w.holds(name) or name in w.loading:
                return w.device
        up = [w for w in self.workers if w.alive and w.ready]
        if not up:
            raise RuntimeError("no worker is running")
        worker = self._place([w for w in up if w.idle] or up, name)
        worker.loading.add(name)
        worker.send({"op": "load", "model": name, "config": entry.model_dump(mode="json")})
        return worker.device

    def unload_model(self, name: str) -> list[str]:
        """Asks every worker holding `name` to unload it; returns their devices."""
        devices = []
        for w in self.workers:
            if w.holds(name) and w.alive:
                w.send({"op": "unload", "model": name})
                devices.append(w.device)
        return devices

    # -- messages from workers -------------------------------------------------
    def _start_worker(self, worker: WorkerHandle) -> None:
        worker.warm_imports = bool(self.settings.models)
        worker.start()
        self.loop.add_reader(worker.conn.fileno(), self._on_worker_readable, worker)
        self.loop.add_reader(worker.process.sentinel, self._on_worker_exit, worker)

    def _start_due_workers(self, now: float) -> None:
        if self.stop_requested:
            return
        for w in self.workers:
            if w.process is None and now >= w.next_start:
                self._start_worker(w)

    def _on_worker_readable(self, worker: WorkerHandle) -> None:
        conn = worker.conn
        while conn is not None:
            try:
                if not conn.poll():
                    return
                msg = conn.recv()
            except (EOFError, OSError):
                self.loop.remove_reader(conn.fileno())
                return
            try:
                self._handle_message(worker, msg)
            except OSError as exc:  # a status write on a broken spool
                if spool_fault(exc) is None:
                    raise
                self._enter_fault(spool_fault(exc), time.monotonic())

    def _handle_message(self, worker: WorkerHandle, msg: dict) -> None:
        op = msg.get("op")
        rj = worker.job
        if isinstance(msg.get("model_state"), dict):  # in "ready", "models" and every job's end
            worker.model_state = msg["model_state"]
        if op == "models":
            worker.loading.clear()
            return
        if op == "load_failed":
            worker.loading.discard(msg.get("model"))
            log.error("model.load_failed", device=worker.device, model=msg.get("model"), error=msg.get("error"))
            return
        if op == "log" and "job_id" not in msg:
            fields = {k: v for k, v in msg.items() if k not in ("op", "event", "level")}
            fields.setdefault("device", worker.device)
            getattr(log, msg.get("level", "info"), log.info)(msg.get("event", "worker.log"), **fields)
            return
        if op == "ready":
            worker.ready = True
            self._next_beat = 0.0  # tell hosts/<me>.json at once
            log.info("worker.ready", device=worker.device, pid=msg.get("pid"))
            self._wake.set()
            return
        if rj is None or msg.get("job_id") != rj.job_id:
            return
        if op == "progress":
            if not rj.lost and self.statuses.progress_due(rj.job_id) and not rj.job_dir.exists():
                self._lose(worker, rj)  # never write the status of a job another host now owns
            elif not rj.lost:
                self.statuses.progress(rj.job_id, msg)
        elif op == "log":
            fields = {k: v for k, v in msg.items() if k not in ("op", "event", "level")}
            getattr(log, msg.get("level", "info"), log.info)(msg.get("event", "worker.log"), device=worker.device, **fields)
        elif op in ("done", "failed", "canceled"):
            worker.job = None
            worker.jobs_done += 1
            if rj.lost:
                log.warning("job.lost", job_id=rj.job_id, device=worker.device, reason="the job was taken over; result dropped")
            elif op == "done":
                self._publish(rj.job_dir, rj.job_id, "completed", result=msg["result"])
            elif op == "failed":
                self._publish(rj.job_dir, rj.job_id, "failed", error=msg["error"])
            else:
                self._publish(rj.job_dir, rj.job_id, "canceled", error=_canceled())
            self._wake.set()

    def _on_worker_exit(self, worker: WorkerHandle) -> None:
        self._on_worker_readable(worker)  # messages it sent before dying come first
        self.loop.remove_reader(worker.process.sentinel)
        if worker.conn is not None:
            self.loop.remove_reader(worker.conn.fileno())
        reason = worker.kill_reason
        code = worker.reap()
        rj, worker.job = worker.job, None
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        (log.info if self.stop_requested else log.warning)("worker.exited", device=worker.device, how=how, reason=reason, job_id=rj.job_id if rj else None)
        if rj is not None and not rj.lost:
            self._end_interrupted_attempt(rj, reason, how)
        if not self.stop_requested:
            worker.restarts += 1
            healthy = time.monotonic() - worker.started_at >= HEALTHY_WORKER_SECONDS
            worker.crash_streak = 1 if healthy else worker.crash_streak + 1
            base = self.settings.workers.restart_backoff_seconds
            backoff = min(base * 2 ** (worker.crash_streak - 1), MAX_RESTART_BACKOFF)
            worker.next_start = time.monotonic() + (0 if reason in ("timeout", "cancel", "lost") else backoff)
        self._wake.set()

    def _end_interrupted_attempt(self, rj: RunningJob, reason: str | None, how: str) -> None:
        if reason == "timeout":
            limit = self.settings.workers.job_timeout_seconds
            self._publish(rj.job_dir, rj.job_id, "failed", error=JobError(
                ErrorCode.TIMEOUT, f"ran longer than {limit:g} s ([workers] job_timeout_seconds)").to_status())
        elif reason == "cancel":
            self._publish(rj.job_dir, rj.job_id, "canceled", error=_canceled())
        elif reason == "shutdown":
            self._requeue(rj.job_dir, rj.job_id, "requeued at daemon shutdown", undo_attempt=rj.attempt)
        elif rj.attempt < rj.job["max_attempts"]:
            self._requeue(rj.job_dir, rj.job_id, f"attempt {rj.attempt} crashed (worker {how}); requeued")
        else:
            self._publish(rj.job_dir, rj.job_id, "failed", error=JobError(
                ErrorCode.WORKER_CRASHED, f"the worker crashed ({how}) on attempt {rj.attempt} of {rj.job['max_attempts']}").to_status())

    def _publish(self, job_dir: Path, job_id: str, state: str, **fields) -> None:
        try:
            if self.transitions.publish(job_dir, job_id, state, **fields):
                self.counts[state] += 1
        except OSError as exc:
            reason = spool_fault(exc)
            if reason is None:
                log.error("job.publish_failed", job_id=job_id, error=str(exc))
                return
            # Kept until the spool is back; resume_folders publishes it if we still own it.
            self.unpublished[job_id] = (state, fields)
            self._enter_fault(reason, time.monotonic())

    def _requeue(self, job_dir: Path, job_id: str, reason: str, undo_attempt: int | None = None) -> None:
        try:
            if self.transitions.requeue(job_dir, job_id, reason, undo_attempt):
                self.counts["requeued"] += 1
                self.refresh_queue()
        except OSError as exc:
            if spool_fault(exc) is not None:
                self._enter_fault(spool_fault(exc), time.monotonic())  # resume_folders requeues it
            else:
                log.error("job.requeue_failed", job_id=job_id, error=str(exc))

    # -- cancel ------------------------------------------------------------------
    def cancel(self, job_id: str, source: str = "api") -> str:
        """Cancels a job wherever it is: 'canceled', 'canceling', 'final' or 'not_found'
        (the API answers those two 404 and 409, the CLI exits 1; all are logged)."""
        if not is_valid_job_id(job_id) or not self.spool.job_outbox(job_id).is_dir():
            log.warning("job.cancel_refused", job_id=printable(job_id), source=source, reason="no such job")
            return "not_found"
        status = self.statuses.current(job_id)
        if status is not None and status.get("state") in FINAL_STATES:
            log.warning("job.cancel_refused", job_id=job_id, source=source, reason=f"already {status['state']}",
                        state=status["state"])
            return "final"
        create_exclusive(self.spool.job_outbox(job_id) / CANCEL_MARK, source.encode())
        self.crash.hit("cancel.marked")
        log.info("job.cancel_requested", job_id=job_id, source=source)
        for w in self.workers:
            if w.job is not None and w.job.job_id == job_id:
                self._send_cancel(w)
                return "canceling"
        for qn in self.spool.queued_names():
            if qn.job_id == job_id:
                job_dir = self.transitions.claim(qn)
                if job_dir is not None:
                    self.crash.hit("cancel.claimed")
                    self._publish(job_dir, job_id, "canceled", error=_canceled())
                    self.queue = [q for q in self.queue if q.job_id != job_id]
                    return "canceled"
        return "canceling"  # running on another host, or being accepted: its owner sees the mark

    def _send_cancel(self, worker: WorkerHandle) -> None:
        if worker.job and not worker.job.cancel_sent:
            worker.job.cancel_sent = True
            worker.job.cancel_sent_at = time.monotonic()
            worker.send({"op": "cancel", "job_id": worker.job.job_id})

    # -- checks on running jobs ------------------------------------------------
    def check_running(self, now: float) -> None:
        timeout = self.settings.workers.job_timeout_seconds
        for w in self.workers:
            rj = w.job
            if rj is None:
                continue
            if not rj.job_dir.exists():
                self._lose(w, rj)
            elif rj.cancel_sent and now - rj.cancel_sent_at > CANCEL_GRACE_SECONDS:
                w.kill("cancel")
            elif not rj.cancel_sent and self.transitions.cancel_requested(rj.job_id):
                self._send_cancel(w)
            elif now - rj.started > timeout:
                w.kill("timeout")

    def _lose(self, worker: WorkerHandle, rj: RunningJob) -> None:
        rj.lost = True
        self.statuses.forget(rj.job_id)  # its throttled progress must never be written now
        log.warning("job.lost", job_id=rj.job_id, device=worker.device, reason="job folder taken over by another host")
        worker.kill("lost")

    # -- recovery and takeover -------------------------------------------------
    def resume_folders(self, reason: str) -> None:
        """Looks at each entry of active/<me>/ that no worker is running and finishes it:
        at start (our last run's leftovers) and when the spool comes back after a fault."""
        running = {w.job.job_id for w in self.workers if w.job is not None}
        for name in sorted(os.listdir(self.spool.active)):
            if name in running:
                continue
            path = self.spool.active / name
            if name in self.unpublished:
                state, fields = self.unpublished.pop(name)
                self._publish(path, name, state, **fields)
            else:
                self._recover_entry(path, name, reason, owned=True)
        for job_id in list(self.unpublished):  # their folders were taken while we were blind
            if job_id not in running:
                del self.unpublished[job_id]
                self.statuses.forget(job_id)  # and its last progress must not be flushed now
                log.warning("job.lost", job_id=job_id, reason="taken over while the spool was unavailable; not published")

    def take_over_dead_hosts(self) -> None:
        for host in self.leases.dead_hosts():
            src = self.spool.active_of(host)
            try:
                names = sorted(os.listdir(src))
            except FileNotFoundError:
                continue
            if names:
                log.warning("host.dead", dead_host=host, jobs=len(names), lease_seconds=self.settings.spool.lease_seconds)
            for name in names:
                self._recover_entry(src / name, name, f"host {host} stopped heart-beating", owned=False)

    def _recover_entry(self, path: Path, name: str, reason: str, owned: bool) -> None:
        """Finishes one entry of an active/ folder: ours, or a dead host's, which is first
        renamed into ours (that rename decides which live host finishes it)."""
        try:
            what = recovery_kind(path, name)
            if what is None:
                return  # not a spool entry of ours: left where it is
            mine = path if owned else self.spool.active / name
            if not owned:
                if not move(path, mine):
                    return  # another live host took it first
                self.crash.hit("takeover.moved")
            if what == "intake":
                self._accept(mine)
            elif what == "publish":
                self.transitions.finish_publish(mine)
            elif what == "retired":
                self.transitions.remove_retired(mine)
            elif what == "ended":  # the attempt ended; only its commit was missing
                self.transitions.commit(mine, name)
            else:
                self._recover_job(mine, name, reason)
        except OSError as exc:
            if spool_fault(exc) is not None:
                raise
            log.error("recovery.failed", path=str(path), error=str(exc))

    def _recover_job(self, job_dir: Path, job_id: str, reason: str) -> None:
        """A claimed job whose attempt was interrupted: requeued, or failed once its attempts are used up."""
        job = read_json(job_dir / JOB_DOC)
        used = attempts_started(job_dir)
        if job is not None and used >= job.get("max_attempts", 1):
            self._publish(job_dir, job_id, "failed", error=JobError(
                ErrorCode.WORKER_CRASHED, f"attempt {used} of {used} was interrupted ({reason})").to_status())
        else:
            self._requeue(job_dir, job_id, f"{reason}; requeued")

    # -- reload and shutdown -----------------------------------------------------
    def _configure_voices(self) -> None:
        from pipeline.speech.voices import configure

        configure(self.voice_configs(), [str(self.settings.registry.dir)])

    def voice_configs(self) -> dict[str, dict]:
        return {name: v.model_dump(mode="json") for name, v in self.settings.voices.items()}

    def reload(self) -> None:
        self.notifier.reloading()
        try:
            new = load_settings(self.config_file)
        except ConfigError as exc:
            log.error("daemon.reload_failed", error=str(exc))
            self.notifier.ready(self._status_line())
            return
        for section in ("spool", "workers", "api"):
            if getattr(new, section) != getattr(self.settings, section):
                log.warning("daemon.reload_needs_restart", section=section)
            setattr(new, section, getattr(self.settings, section))
        self.settings = new
        self.transitions.settings = new
        self._configure_voices()
        self.scanner.presets = {name: p.accept for name, p in new.presets.items()}
        self.scanner.json_limit = new.limits.job_json_bytes
        self.spool.create(list(new.presets))
        self._watch_folders()
        log.info("daemon.reloaded", presets=sorted(new.presets), models=sorted(new.models))
        self.notifier.ready(self._status_line())

    async def drain(self) -> None:
        self.draining = True
        self.notifier.stopping()
        deadline = time.monotonic() + self.settings.workers.drain_seconds
        running = [w for w in self.workers if w.job is not None]
        log.info("daemon.draining", running=len(running), drain_seconds=self.settings.workers.drain_seconds)
        while any(w.job is not None for w in self.workers) and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self._wake.wait(), min(0.2, max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                pass
            self._wake.clear()
            now = time.monotonic()
            if self.fault is None:
                try:
                    if now >= self._next_beat:  # keep our lease while jobs finish
                        self._next_beat = now + self.settings.spool.heartbeat_seconds
                        self.heartbeat.beat(state="draining", **self._beat_info())
                    self.check_running(now)
                    self.statuses.flush()
                except OSError as exc:
                    if spool_fault(exc) is None:
                        raise
                    self._enter_fault(spool_fault(exc), now)
        killed = False
        for w in self.workers:
            if w.job is not None:
                w.kill("shutdown")
                killed = True
            elif w.alive:
                w.send({"op": "stop"})
        if killed:
            self.crash.hit("drain.killed")
        end = time.monotonic() + 5
        while any(w.process is not None for w in self.workers) and time.monotonic() < end:
            for w in self.workers:
                if w.process is not None and not w.process.is_alive():
                    self._on_worker_exit(w)
            await asyncio.sleep(0.02)
        for w in self.workers:
            if w.process is not None:
                w.kill("shutdown")
                self._on_worker_exit(w)
        if self.watcher:
            self.watcher.stop()
        if getattr(self, "_api_runner", None) is not None:
            await self._api_runner.cleanup()
        try:
            self.heartbeat.beat(state="stopped", **self._beat_info())
        except OSError as exc:  # others will see our heartbeat stop and take over
            log.error("daemon.stop_unrecorded", reason=str(exc))
        log.info("daemon.stopped", **self.counts)

    # -- reporting -------------------------------------------------------------
    def _status_changed(self, doc: dict) -> None:
        for listener in list(self.listeners):
            listener(doc)

    def _status_line(self) -> str:
        if self.fault:
            return f"spool unavailable: {self.fault}"
        if self.paused:
            return f"not claiming: {self.paused}"
        busy = sum(1 for w in self.workers if w.job is not None)
        alive = sum(1 for w in self.workers if w.alive)
        return f"{len(self.queue)} queued, {busy} running, {alive}/{len(self.workers)} workers, {self.counts['completed']} completed"

    def _beat_info(self) -> dict:
        return {
            "api_url": self.api_url,
            "workers": [w.describe() for w in self.workers],
            "queued_seen": len(self.queue),
            "counts": self.counts,
        }


def recovery_kind(path: Path, name: str) -> str | None:
    """What an entry of an active/ folder is: intake, publish, retired, ended (a job whose
    end state is recorded), job (a claimed job), or None (nothing of ours)."""
    if name.startswith(".intake."):
        return "intake"
    if name.startswith(".publish-"):
        return "publish"
    if name.startswith(RETIRED_PREFIX):
        return "retired"
    if not is_valid_job_id(name):
        return None
    if (path / FINAL_DOC).is_file():
        return "ended"
    return "job" if (path / JOB_DOC).is_file() else None


def _canceled() -> dict:
    return JobError(ErrorCode.CANCELED, "canceled by request").to_status()
