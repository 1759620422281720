"""The arbiter: the daemon's main loop, a supervisor (gunicorn's arbiter is the anchor).

It only supervises: signals (a flag and a wake), the worker processes (spawn, pipe, reap,
restart back-off), opening and probing the spool, the heartbeat, reload, drain and the
health line. Each turn takes watcher hints, lets the intake accept complete drops, hands
the queue to daemon/jobs/dispatch.py (placement, start, models, pause), lets recovery take over
dead hosts' jobs, and has daemon/jobs/attempts.py check running jobs. Workers talk back over
their pipes in contract/messages.py's messages (read with loop.add_reader), handed to
attempts.py the moment they land: how an attempt ends is said there, once. Deliveries,
webhooks and retention are daemon/services.py's list; the HTTP fronts, daemon/http/fronts.py's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from contract import messages as m
from daemon.jobs.accepting import Intake
from daemon.jobs.drops import DropReader
from daemon.jobs.jobfile import validate_job
from daemon.http.paths import API
from daemon.jobs.attempts import Attempts
from daemon.config import ConfigError, Settings, load_settings
from daemon.spool.crashpoints import ENV as CRASH_ENV
from daemon.spool.crashpoints import CrashPoints
from daemon.delivery.service import Deliveries
from daemon.devices import worker_devices
from daemon.jobs.dispatch import Dispatcher
from daemon.http.fds import raise_nofile_limit
from daemon.http.fronts import Fronts
from daemon.spool.fscheck import FsClass, classify, spool_fault
from daemon.outbox.estimates import StageClock
from daemon.outbox.history import History
from daemon.view.hostpaths import HostPaths
from daemon.spool.hosts import Heartbeat, LeaseTracker
from daemon.jobs.intake import InboxScanner
from daemon.lines import error_line
from daemon.jobs.ends import JobEnds
from daemon.notify import Notifier
from daemon.outbox.index import OutboxIndex
from daemon.spool.pause import Pause
from daemon.jobs.recovery import Recovery
from daemon.outbox.retention import Sweeper
from daemon.services import Services
from daemon.spool.layout import QueueName, Spool
from daemon.spool.health import SpoolHealth
from daemon.spool.status import StatusWriter
from daemon.spool.transitions import Transitions
from daemon.spool.watcher import Hints, SpoolWatcher
from daemon.webhooks.service import Webhooks
from daemon.workers import WorkerHandle
from pipeline.kinds import load_kinds

log = structlog.get_logger()

MAX_RESTART_BACKOFF = 30.0
# A worker that lived this long before exiting starts a new crash streak.
HEALTHY_WORKER_SECONDS = 60.0
# Health turns 503 once this many turns of the main loop in a row have failed.
FAILED_TURNS_UNHEALTHY = 3


@dataclass
class LoopFailures:
    """Failed turns of the main loop in a row, for health. (Identical failures are logged
    once per 30 s, with a count, by logs.RepeatFilter.)"""

    in_a_row: int = 0
    last: str | None = None

    def failed(self, exc: Exception) -> None:
        self.in_a_row += 1
        self.last = error_line(exc, 200)
        log.error("daemon.tick_failed", error=self.last, exc_info=exc)

    def succeeded(self) -> None:
        if self.in_a_row:
            log.info("daemon.tick_recovered", failed_turns=self.in_a_row, last=self.last)
        self.in_a_row, self.last = 0, None

    def problem(self) -> str | None:
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
        self._listeners: list[Callable[[dict], None]] = []  # status changes, for the read model
        self.statuses = StatusWriter(self.spool, settings.status.progress_interval_seconds, self._status_changed,
                                     shown=HostPaths(lambda: self.settings).status, api=API)
        # The outbox as listings and estimates need it (daemon/outbox/index.py), built in a
        # thread from run(), then kept current by this daemon's status writes and sweeps.
        self.index = OutboxIndex(self.spool)
        self.on_status(self.index.seen)
        # Past runs from the index (daemon/outbox/history.py): each job's estimated stages, its eta_seconds.
        self.history = History(self.index)
        # Presets' deliver_to folders (daemon/delivery/service.py): started by the `completed` status write.
        deliveries = Deliveries(self.spool, self.kinds, lambda: self.settings, self.statuses.current, self.statuses.write)
        # Signed webhooks (daemon/webhooks/service.py): each event recorded by the status write that makes it.
        self.webhooks = Webhooks(self.spool, lambda: self.settings)
        # [outbox] keep_days (daemon/outbox/retention.py): old ended jobs' folders removed, in a thread.
        self.retention = Sweeper(self.spool, lambda: self.settings,
                                 may_sweep=lambda: self._opened and self.health.ok and not self.dispatcher.draining)
        self.retention.on_removed(self.index.removed)
        self.services = Services(deliveries, self.webhooks, self.retention)  # daemon/services.py
        self.on_status(self.services.on_status)
        self.crash = CrashPoints.from_env()  # tests only: kill this daemon at a named step
        self.health = SpoolHealth(self.spool.root)
        self.transitions = Transitions(self.spool, self.statuses, self.crash)
        self.ends = JobEnds(self.transitions, self.statuses, self.health, on_requeued=lambda: self.dispatcher.refresh())
        self.workers = [
            WorkerHandle(i, d, settings.workers.model_memory_gb, settings.workers.compile_cache_dir)
            for i, d in enumerate(worker_devices(settings.workers.devices, settings.workers.cpu_workers))
        ]
        # How attempts end (daemon/jobs/attempts.py), and which worker runs what (daemon/jobs/dispatch.py).
        self.attempts = Attempts(self.spool, lambda: self.settings, self.workers, self.transitions, self.ends,
                                 self.statuses, self.health, self.crash, self.wake)
        self.dispatcher = Dispatcher(self.spool, lambda: self.settings, self.kinds, self.workers, self.transitions,
                                     self.ends, self.statuses, self._stage_clock, self.crash, self.wake, self.attempts.stop)
        self.dispatcher.on_pause_change = self._beat_soon
        self.attempts.dispatcher = self.dispatcher
        self.pausing = self.dispatcher.pausing
        self.scanner = InboxScanner(self.spool.inbox, sc.stable_seconds, sc.input_wait_seconds, settings.limits.job_json_bytes)
        self.scanner.presets = {name: p.accept for name, p in settings.presets.items()}
        drops = DropReader(self.spool, lambda: self.settings, self.kinds)
        self.intake = Intake(self.spool, self.scanner, drops, self.transitions, self.ends, self.crash,
                             on_queued=self.dispatcher.queued, cancel=self.attempts.cancel, keep_lease=self._beat_if_due)
        self.heartbeat = Heartbeat(self.spool.hosts, sc.host, sc.lease_seconds)
        self.leases = LeaseTracker(self.spool.hosts, self.spool.owed_roots, sc.host, sc.lease_seconds)
        self.recovery = Recovery(self.spool, self.transitions, self.ends, self.statuses, self.leases,
                                 accept=self.intake.accept, crash=self.crash, lease_seconds=sc.lease_seconds,
                                 owed=(self.services.take_over,))
        self.notifier = Notifier()
        self.watcher: SpoolWatcher | None = None
        self.fronts = Fronts()  # daemon/http/fronts.py
        self.stop_requested = False
        self.reload_requested = False
        self.loop_failures = LoopFailures()
        self._next_rescan = self._next_beat = self._next_settle = 0.0
        # Why this daemon must not claim on a shared spool (a filesystem without exclusive claims).
        self.sharing_refused: str | None = None
        self._opened = False
        self.fs: FsClass | None = None
        self.recovery_seconds = 0.0
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
        refused = None
        with self.health.guard():
            refused = self._open_spool()
        if refused:
            return refused
        if self._opened:  # before the API listens: no upload to this host is being received
            with self.health.guard():
                self.recovery.remove_staging({self.spool.host})
        self.watcher = SpoolWatcher(self.wake)
        self.watcher.start()
        self._watch_folders()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._on_stop_signal)
        self.loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        for w in self.workers:
            self._start_worker(w)
        self.index.start()
        await self._start_http()
        # The first turn (at once: both deadlines are due) lists the queue and beats with the API url.
        self._next_rescan = self._next_beat = 0.0
        self.notifier.ready(self._status_line())
        log.info("daemon.ready", spool=str(self.spool.root), workers=[w.device for w in self.workers],
                 api=self.fronts.api_url, recovery_seconds=round(self.recovery_seconds, 3),
                 start_seconds=round(time.monotonic() - started, 3),
                 filesystem=self.fs.fstype if self.fs else None, fault=self.health.fault)
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

    async def _start_http(self) -> None:
        from daemon.view.readmodel import ReadModel

        await self.fronts.start(self.settings, lambda: ReadModel(self))

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
        scratch = self.dispatcher.scratch_root = base / f"{self.spool.host}-{self.spool_id[:12]}"
        shutil.rmtree(scratch, ignore_errors=True)  # no worker of ours runs yet
        started = time.monotonic()
        self.recovery.resume_folders("daemon restarted", running=())
        self.recovery_seconds = time.monotonic() - started
        self.heartbeat.beat(**self._beat_info())
        self._opened = True  # before the services: retention sweeps only an opened spool
        self.services.start()  # each takes up what a previous run left
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
        if self.statuses.has_pending:
            deadlines.append(now + self.settings.status.progress_interval_seconds / 2)
        if any(w.job is not None for w in self.workers):  # stalls and timeouts are judged by time
            deadlines.append(now + 1.0)
        deadlines += [w.next_start for w in self.workers if w.process is None]
        return max(0.0, min(deadlines) - now)

    # -- one turn --------------------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        if self.reload_requested:
            self.reload_requested = False
            self.reload()
        hints = self.watcher.take() if self.watcher else Hints()
        if self.health.probe_due(now):
            self._probe_spool(now)
        if self.health.ok:
            try:
                with self.health.guard():
                    self._turn(now, hints)
            except OSError:
                problem = self._identity_fault()  # an error that only a vanished mount explains
                if problem is None:
                    raise
                self.health.enter(problem, now)
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
                self.health.enter(problem, now)
                return
        dispatcher = self.dispatcher
        dispatcher.check_pause(now)
        if not dispatcher.draining and self.sharing_refused is None:
            if periodic:
                self.intake.retry()
                dispatcher.refresh(quarantine_odd_names=True)
            else:
                dispatcher.apply_hints(hints)
            settle = self.scanner.has_unsettled and now >= self._next_settle
            if hints.inbox or periodic or settle:
                self._next_settle = now + self.settings.spool.stable_seconds / 3
                self.intake.take(now)
            dispatcher.dispatch()
        beat = self._beat_if_due()
        if (beat or periodic) and not dispatcher.draining:  # leases are judged on every rescan too
            self._check_sharing()
            if self.sharing_refused is None:
                self.recovery.take_over_dead_hosts()
        self.attempts.check(now)
        self.statuses.flush()

    # -- spool faults --------------------------------------------------------------
    def _probe_spool(self, now: float) -> None:
        try:
            os.listdir(self.spool.root)
            problem = self._identity_fault()
            if problem:
                self.health.still(problem, now)
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
            self.health.still(spool_fault(exc), now)
            return
        self.health.clear(now)
        self.leases.forget()  # what we saw of other hosts while blind proves nothing
        self._next_rescan = 0.0
        with self.health.guard():
            self.recovery.resume_folders("the spool came back", running=self.attempts.running_ids())

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
        if reason != self.sharing_refused:
            (log.error if reason else log.info)("spool.shared_refused" if reason else "spool.shared_clear", reason=reason)
        self.sharing_refused = reason

    def _stage_clock(self, job: dict, will_load: bool) -> StageClock:
        """A starting attempt's stages as past runs estimate them (daemon/outbox/history.py)."""
        return StageClock(self.history.run_plan(job, self.spool.host, will_load=will_load))

    def _beat_soon(self) -> None:
        self._next_beat = 0.0  # hosts/<me>.json says it at the next turn

    def _beat_if_due(self) -> bool:
        now = time.monotonic()
        if now < self._next_beat:
            return False
        self._next_beat = now + self.settings.spool.heartbeat_seconds
        self.heartbeat.beat(**self._beat_info())
        return True

    # -- workers -----------------------------------------------------------------------
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
            worker.heard()
            with self.health.guard():  # a status write on a broken spool
                self._handle_message(worker, msg)

    def _handle_message(self, worker: WorkerHandle, msg: m.FromWorker) -> None:
        if getattr(msg, "model_state", None) is not None:  # Ready, ModelsChanged and every job's end
            worker.model_state = msg.model_state
        if isinstance(msg, m.Ready):
            worker.ready = True
            self._next_beat = 0.0  # tell hosts/<me>.json at once
            log.info("worker.ready", device=worker.device, pid=msg.pid)
            self._wake.set()
        elif isinstance(msg, m.ModelsChanged):
            self.dispatcher.models_changed(worker)
        elif isinstance(msg, m.LoadFailed):
            worker.loading.discard(msg.model)
            log.error("model.load_failed", device=worker.device, model=msg.model, error=msg.error)
        elif isinstance(msg, m.Log):
            getattr(log, msg.level, log.info)(msg.event, **{"device": worker.device, **msg.fields},
                                              **({"job_id": msg.job_id} if msg.job_id else {}))
        elif worker.job is not None and msg.job_id == worker.job.job_id:
            self.attempts.on_message(worker, worker.job, msg)

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
        if rj is not None:
            self.attempts.interrupted(rj, reason, how)
        if not self.stop_requested:
            worker.restarts += 1
            healthy = time.monotonic() - worker.started_at >= HEALTHY_WORKER_SECONDS
            worker.crash_streak = 1 if healthy else worker.crash_streak + 1
            base = self.settings.workers.restart_backoff_seconds
            backoff = min(base * 2 ** (worker.crash_streak - 1), MAX_RESTART_BACKOFF)
            worker.next_start = time.monotonic() + (0 if reason in ("timeout", "cancel", "pause", "lost", "stalled") else backoff)
        self._wake.set()

    # -- reload and shutdown -----------------------------------------------------
    def reload(self) -> None:
        self.notifier.reloading()
        try:
            new = load_settings(self.config_file)
        except ConfigError as exc:
            log.error("daemon.reload_failed", error=str(exc))
            self.notifier.ready(self._status_line())
            return
        for section in ("spool", "workers", "api", "compat"):
            if getattr(new, section) != getattr(self.settings, section):
                log.warning("daemon.reload_needs_restart", section=section)
            setattr(new, section, getattr(self.settings, section))
        self.settings = new
        self.scanner.presets = {name: p.accept for name, p in new.presets.items()}
        self.scanner.json_limit = new.limits.job_json_bytes
        self.spool.create(list(new.presets))
        self._watch_folders()
        log.info("daemon.reloaded", presets=sorted(new.presets), models=sorted(new.models))
        self.notifier.ready(self._status_line())

    async def drain(self) -> None:
        self.dispatcher.draining = True
        self.notifier.stopping()
        deadline = time.monotonic() + self.settings.workers.drain_seconds
        log.info("daemon.draining", running=len(self.attempts.running_ids()), drain_seconds=self.settings.workers.drain_seconds)
        while self.attempts.running_ids() and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self._wake.wait(), min(0.2, max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                pass
            self._wake.clear()
            now = time.monotonic()
            if self.health.ok:
                with self.health.guard():
                    if now >= self._next_beat:  # keep our lease while jobs finish
                        self._next_beat = now + self.settings.spool.heartbeat_seconds
                        self.heartbeat.beat(state="draining", **self._beat_info())
                    self.attempts.check(now)
                    self.statuses.flush()
        killed = False
        for w in self.workers:
            if w.job is not None:
                w.kill("shutdown")
                killed = True
            elif w.alive:
                w.send(m.Stop())
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
        self.services.stop()  # what is in flight is redone at the next start
        await asyncio.to_thread(self.retention.join)  # a sweep ends at its next folder
        if self.watcher:
            self.watcher.stop()
        await self.fronts.stop()
        try:
            self.heartbeat.beat(state="stopped", **self._beat_info())
        except OSError as exc:  # others will see our heartbeat stop and take over
            log.error("daemon.stop_unrecorded", reason=str(exc))
        log.info("daemon.stopped", **self.ends.counts)

    # -- what the read model asks (daemon/view/readmodel.py's Supervisor) ------------------
    def validate_job(self, doc: dict, staging: Path) -> dict:
        """A job submitted through a front, checked as intake will (daemon/jobs/jobfile.py)."""
        return validate_job(doc, staging, self.kinds, self.settings)

    def queued(self) -> list[QueueName]:
        return self.dispatcher.queue

    def cancel(self, job_id: str, source: str = "api") -> str:
        return self.attempts.cancel(job_id, source)

    def load_model(self, name: str) -> str:
        return self.dispatcher.load_model(name)

    def unload_model(self, name: str) -> list[str]:
        return self.dispatcher.unload_model(name)

    def pause(self, host: str | None = None, **fields) -> Pause:
        return self.dispatcher.pause(host, **fields)

    def resume(self, host: str | None = None) -> list[str]:
        return self.dispatcher.resume(host)

    def problems(self) -> list[str]:
        """Why this daemon is not healthy; empty when it is."""
        problems = []
        if self.health.fault:
            problems.append(f"spool unavailable: {self.health.fault}")
        elif not os.access(self.spool.root, os.W_OK) or not os.access(self.spool.outbox, os.W_OK):
            problems.append("spool not writable")
        if self.sharing_refused:
            problems.append(f"not claiming: {self.sharing_refused}")
        if not any(w.alive for w in self.workers):
            problems.append("no live worker")
        if failing := self.loop_failures.problem():  # e.g. one bad inbox entry breaking every turn
            problems.append(failing)
        return problems

    def dropped(self, path: Path) -> None:
        """A front renamed a drop into the inbox: take it at once."""
        self.scanner.note_moved_in(path)
        self.wake()

    def on_status(self, listener: Callable[[dict], None]) -> None:
        self._listeners.append(listener)

    # -- reporting -------------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        return self.ends.counts

    def _status_changed(self, doc: dict) -> None:
        for listener in list(self._listeners):
            listener(doc)

    def _status_line(self) -> str:
        if self.health.fault:
            return f"spool unavailable: {self.health.fault}"
        if self.sharing_refused:
            return f"not claiming: {self.sharing_refused}"
        if self.pausing.current:
            return f"{self.pausing.current.words()}; {len(self.dispatcher.queue)} queued, {len(self.attempts.running_ids())} running"
        busy = len(self.attempts.running_ids())
        alive = sum(1 for w in self.workers if w.alive)
        return f"{len(self.dispatcher.queue)} queued, {busy} running, {alive}/{len(self.workers)} workers, {self.counts['completed']} completed"

    def _beat_info(self) -> dict:
        return {
            "api_url": self.fronts.api_url,
            "compat_urls": self.fronts.compat_urls,
            "workers": [w.describe() for w in self.workers],
            "queued_seen": len(self.dispatcher.queue),
            "counts": self.counts,
            "paused": self.pausing.current.describe() if self.pausing.current else None,
        }
