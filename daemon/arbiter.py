"""The arbiter: the daemon's main loop, a supervisor (gunicorn's arbiter is the anchor).

Signal handlers only set a flag and wake the loop. Each turn takes watcher hints, lets the
intake accept complete drops, refreshes the queue, hands jobs to idle workers, beats the
heartbeat, lets recovery take over dead hosts' jobs, checks running jobs (lost, canceled,
timed out, stalled) and restarts dead workers. Workers talk back over their pipes in
contract/messages.py's messages (read with loop.add_reader), so a result or a crash is
handled the moment it lands. What a job needs before it starts is daemon/jobs/policy.py's;
how jobs end, daemon/jobs/ends.py's; recovery, daemon/jobs/recovery.py's; what the HTTP fronts
see, daemon/view/readmodel.py's.
"""

from __future__ import annotations

import asyncio
import bisect
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
from contract.errors import ErrorCode
from contract.status import FINAL_STATES, new_status, utc_now
from daemon.jobs.accepting import Intake
from daemon.jobs.drops import DropReader
from daemon.config import ConfigError, Settings, load_settings
from daemon.spool.crashpoints import ENV as CRASH_ENV
from daemon.spool.crashpoints import CrashPoints
from daemon.delivery.service import Deliveries
from daemon.devices import worker_devices
from daemon.outbox.estimates import StageClock
from daemon.http.fds import raise_nofile_limit
from daemon.http.paths import API
from daemon.spool.fscheck import FsClass, classify, spool_fault
from daemon.spool.fsops import create_exclusive, read_json
from daemon.outbox.history import History
from daemon.view.hostpaths import HostPaths
from daemon.spool.hosts import Heartbeat, LeaseTracker
from daemon.jobs.intake import InboxScanner
from daemon.lines import error_line, printable
from daemon.jobs.ends import JobEnds
from daemon.jobs.jobfile import validate_job
from daemon.jobs.policy import End, Start, Unreadable, before_start, run_message
from daemon.notify import Notifier
from daemon.outbox.index import OutboxIndex
from daemon.spool.pause import Pause, PauseWatch
from daemon.spool.pause import pause as write_pause
from daemon.spool.pause import resume as remove_pause
from daemon.spool.quarantine import quarantine
from daemon.jobs.recovery import Recovery
from daemon.registry import refresh_models
from daemon.outbox.retention import Sweeper
from daemon.spool.layout import CANCEL_MARK, JOB_DOC, QueueName, Spool, is_valid_job_id
from daemon.spool.health import SpoolHealth
from daemon.spool.status import StatusWriter
from daemon.spool.transitions import Transitions
from daemon.spool.watcher import Hints, SpoolWatcher
from daemon.webhooks.service import Webhooks
from daemon.workers import RunningJob, WorkerHandle
from pipeline.kinds import load_kinds

log = structlog.get_logger()

# A running job that ignores a cancel this long is stopped by killing its worker.
CANCEL_GRACE_SECONDS = 10.0
MAX_RESTART_BACKOFF = 30.0
# A worker that lived this long before exiting starts a new crash streak.
HEALTHY_WORKER_SECONDS = 60.0
# Health turns 503 once this many turns of the main loop in a row have failed.
FAILED_TURNS_UNHEALTHY = 3


# Why a job that `pause --now` stopped is queued again (its attempt undone).
PAUSED_NOW = "requeued: paused with now"


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


def folder_gone(path: Path) -> bool:
    """Whether a job folder is surely gone (taken over); a broken spool cannot tell, and then
    the end is published later or found lost by recovery."""
    try:
        return not path.exists()
    except OSError:
        return False


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
        self.deliveries = Deliveries(self.spool, self.kinds, lambda: self.settings, self.statuses.current, self.statuses.write)
        self.on_status(self.deliveries.on_status)
        # Signed webhooks (daemon/webhooks/service.py): each event recorded by the status write that makes it.
        self.webhooks = Webhooks(self.spool, lambda: self.settings)
        self.on_status(self.webhooks.on_status)
        # [outbox] keep_days (daemon/outbox/retention.py): old ended jobs' folders removed, in a thread.
        self.retention = Sweeper(self.spool, lambda: self.settings,
                                 may_sweep=lambda: self._opened and self.health.ok and not self.draining)
        self.retention.on_removed(self.index.removed)
        self.crash = CrashPoints.from_env()  # tests only: kill this daemon at a named step
        self.health = SpoolHealth(self.spool.root)
        self.transitions = Transitions(self.spool, self.statuses, self.crash)
        self.ends = JobEnds(self.transitions, self.statuses, self.health, on_requeued=self.refresh_queue)
        self.scanner = InboxScanner(self.spool.inbox, sc.stable_seconds, sc.input_wait_seconds, settings.limits.job_json_bytes)
        self.scanner.presets = {name: p.accept for name, p in settings.presets.items()}
        drops = DropReader(self.spool, lambda: self.settings, self.kinds)
        self.intake = Intake(self.spool, self.scanner, drops, self.transitions, self.ends, self.crash,
                             on_queued=self._queued, cancel=self.cancel, keep_lease=self._beat_if_due)
        self.heartbeat = Heartbeat(self.spool.hosts, sc.host, sc.lease_seconds)
        self.leases = LeaseTracker(self.spool.hosts, self.spool.owed_roots, sc.host, sc.lease_seconds)
        self.recovery = Recovery(self.spool, self.transitions, self.ends, self.statuses, self.leases,
                                 accept=self.intake.accept, crash=self.crash, lease_seconds=sc.lease_seconds,
                                 owed=(self.webhooks.take_over, self.deliveries.take_over))
        self.queue: list[QueueName] = []
        self.workers = [
            WorkerHandle(i, d, settings.workers.model_memory_gb, settings.workers.compile_cache_dir)
            for i, d in enumerate(worker_devices(settings.workers.devices, settings.workers.cpu_workers))
        ]
        self._job_models: dict[str, str | None] = {}  # queued job id → its model (placement)
        self.notifier = Notifier()
        self.watcher: SpoolWatcher | None = None
        self.api_url: str | None = None
        self.compat_urls: dict[str, str] = {}
        self._compat_runners: list = []
        self.stop_requested = False
        self.reload_requested = False
        self.draining = False
        self.loop_failures = LoopFailures()
        self._next_rescan = self._next_beat = self._next_settle = 0.0
        # Why this daemon must not claim on a shared spool (a filesystem without exclusive claims).
        self.sharing_refused: str | None = None
        # PAUSE / hosts/<me>.pause (daemon/spool/pause.py): claims stop, drops still queue.
        self.pausing = PauseWatch(self.spool, sc.host)
        self._freeing: set[int] = set()  # workers asked to unload their models while paused
        self._opened = False
        self.fs: FsClass | None = None
        self.scratch_root: Path | None = None  # set when the spool is opened (it names the spool)
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
                 api=self.api_url, recovery_seconds=round(self.recovery_seconds, 3),
                 start_seconds=round(time.monotonic() - started, 3),
                 filesystem=self.fs.fstype if self.fs else None, fault=self.health.fault)
        self.retention.start()
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
        """The native API and the seed personalities: one read model, on this loop, sharing
        the connection budget."""
        from daemon.view.readmodel import ReadModel

        personalities = self.settings.compat.enabled()
        listeners = len(personalities) + bool(self.settings.api.enabled)
        if not listeners:
            return
        view = ReadModel(self)
        if self.settings.api.enabled:
            from daemon.http.api import start_api

            self._api_runner, self.api_url = await start_api(view, self.settings.api.host, self.settings.api.port, listeners)
        if personalities:
            from daemon.http.compat import start_personalities
            from daemon.http.fds import connection_budget

            budget = connection_budget(self.settings.api.max_connections, listeners)
            self._compat_runners, self.compat_urls = await start_personalities(view, budget)

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
        self.recovery.resume_folders("daemon restarted", running=())
        self.recovery_seconds = time.monotonic() - started
        self.heartbeat.beat(**self._beat_info())
        self.deliveries.resume()  # what a previous run left undelivered
        self.webhooks.resume()  # its sender process, which takes up what a previous run left unsent
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
        self._check_pause(now)
        if not self.draining and self.sharing_refused is None:
            if periodic:
                self.intake.retry()
                self.refresh_queue(quarantine_odd_names=True)
            else:
                self._apply_queue_hints(hints)
            settle = self.scanner.has_unsettled and now >= self._next_settle
            if hints.inbox or periodic or settle:
                self._next_settle = now + self.settings.spool.stable_seconds / 3
                self.intake.take(now)
            self.dispatch()
        beat = self._beat_if_due()
        if (beat or periodic) and not self.draining:  # leases are judged on every rescan too
            self._check_sharing()
            if self.sharing_refused is None:
                self.recovery.take_over_dead_hosts()
        self.check_running(now)
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
            self.recovery.resume_folders("the spool came back", running=self._running_ids())

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

    def _check_pause(self, now: float, force: bool = False) -> None:
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
                self._wake.set()  # claim what queued meanwhile
            self._next_beat = 0.0  # hosts/<me>.json says it at once
        paused = self.pausing.current
        if paused is None:
            return
        for w in self.workers:
            if paused.now and w.job is not None and not w.job.lost:
                self._send_cancel(w, "pause")
            elif paused.free_memory and w.idle and w.models and w.index not in self._freeing:
                self._freeing.add(w.index)
                for name in w.models:
                    w.send(m.UnloadModel(name))
                log.info("worker.freeing_memory", device=w.device, models=w.models, reason="paused with free_memory")

    def pause(self, host: str | None = None, **fields) -> Pause:
        """Writes the pause file (all hosts, or `host`) and obeys it at once if it is ours."""
        paused = write_pause(self.spool, host, **fields)
        self._check_pause(time.monotonic(), force=True)
        return paused

    def resume(self, host: str | None = None) -> list[str]:
        removed = remove_pause(self.spool, host)
        self._check_pause(time.monotonic(), force=True)
        return removed

    def _beat_if_due(self) -> bool:
        now = time.monotonic()
        if now < self._next_beat:
            return False
        self._next_beat = now + self.settings.spool.heartbeat_seconds
        self.heartbeat.beat(**self._beat_info())
        return True

    # -- queue and dispatch ------------------------------------------------------
    def refresh_queue(self, quarantine_odd_names: bool = False) -> None:
        odd: list[str] = []
        self.queue = self.spool.queued_names(odd if quarantine_odd_names else None)
        for name in odd:  # not a name this daemon (or any) gives a queued job
            quarantine(self.spool, self.spool.queue / name, f"queue/{name!r} is not <rank>-<usec>-<job id>")

    def _queued(self, qn: QueueName) -> None:
        """A job entered the queue (accepted here): in line, and running if a worker is free."""
        i = bisect.bisect_left(self.queue, qn)
        if i == len(self.queue) or self.queue[i] != qn:
            self.queue.insert(i, qn)
        if not self.draining:
            self.dispatch()  # a burst starts running while the rest is still being accepted

    def _apply_queue_hints(self, hints: Hints) -> None:
        """Keeps the in-memory queue current from inotify names, without listing the folder
        (the periodic rescan corrects whatever events miss)."""
        if hints.queue_removed:
            self.queue = [q for q in self.queue if str(q) not in hints.queue_removed]
        for name in hints.queue_added:
            qn = QueueName.parse(name)
            if qn is not None:
                i = bisect.bisect_left(self.queue, qn)
                if i == len(self.queue) or self.queue[i] != qn:
                    self.queue.insert(i, qn)

    def dispatch(self) -> None:
        """Hands the queue, in order, to idle workers: each job to one that already holds its
        model if there is one, else to the one with the most room for another model."""
        while self.queue and not self.draining and self.pausing.current is None:
            idle = [w for w in self.workers if w.idle]
            if not idle:
                return
            qn = self.queue.pop(0)
            worker = self._place(idle, self._queued_model(qn) if len(idle) > 1 else None)
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
        plan = before_start(job_dir, self.kinds, self.settings, self.transitions.cancel_requested(job_id))
        if isinstance(plan, Unreadable):
            quarantine(self.spool, job_dir, plan.reason)
            return
        if isinstance(plan, End):
            self.ends.publish(job_dir, job_id, plan.state, error=plan.error)
            return
        self._start(worker, job_dir, job_id, plan)

    def _start(self, worker: WorkerHandle, job_dir: Path, job_id: str, plan: Start) -> None:
        job = plan.job
        attempt = self.transitions.start_attempt(job_dir)
        loads = job.get("model") is not None and not worker.holds(job.get("model"))
        clock = StageClock(self.history.run_plan(job, self.spool.host, will_load=loads))
        self.statuses.write(new_status(
            job_id, job, "running", attempt=attempt, host=self.spool.host, device=worker.device,
            started_at=utc_now(), stage="starting", created_at=job["_meta"].get("created_at"),
            eta_seconds=clock.report("starting", None),
        ))
        self.crash.hit("attempt.running")
        worker.job = RunningJob(job_id, job, job_dir, attempt, clock=clock)
        worker.heard()
        log.info("job.started", job_id=job_id, device=worker.device, attempt=attempt, kind=job["kind"])
        if not worker.send(run_message(job_id, plan, attempt, self.spool.host, job_dir, self.scratch_root, self.settings)):
            worker.kill("crash")  # its exit handler requeues the job

    # -- models ---------------------------------------------------------------------
    def load_model(self, name: str) -> str:
        """Asks one worker to load `name` (one that holds it already answers at once);
        returns its device. KeyError: not in the registry; RuntimeError: no worker up."""
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
            worker.loading.clear()
            self._freeing.discard(worker.index)  # unloaded (or not all: asked again next turn)
        elif isinstance(msg, m.LoadFailed):
            worker.loading.discard(msg.model)
            log.error("model.load_failed", device=worker.device, model=msg.model, error=msg.error)
        elif isinstance(msg, m.Log):
            getattr(log, msg.level, log.info)(msg.event, **{"device": worker.device, **msg.fields},
                                              **({"job_id": msg.job_id} if msg.job_id else {}))
        elif worker.job is not None and msg.job_id == worker.job.job_id:
            self._job_message(worker, worker.job, msg)

    def _job_message(self, worker: WorkerHandle, rj: RunningJob, msg: m.FromWorker) -> None:
        if isinstance(msg, m.Progress):
            if not rj.lost and self.statuses.progress_due(rj.job_id) and not rj.job_dir.exists():
                self._lose(worker, rj)  # never write the status of a job another host now owns
            elif not rj.lost:
                update = msg.update()  # its eta_seconds is the worker's stage's; the status's is the job's
                update["eta_seconds"] = rj.clock.report(msg.stage, msg.eta_seconds) if rj.clock else msg.eta_seconds
                self.statuses.progress(rj.job_id, update)
        elif isinstance(msg, (m.Done, m.Failed, m.Canceled)):
            worker.job = None
            worker.jobs_done += 1
            if not rj.lost and folder_gone(rj.job_dir):
                rj.lost = True
                self.statuses.forget(rj.job_id)  # another host owns it now: never write its status
            if rj.lost:
                log.warning("job.lost", job_id=rj.job_id, device=worker.device, reason="the job was taken over; result dropped")
            elif isinstance(msg, m.Done):
                self.ends.publish(rj.job_dir, rj.job_id, "completed", result=msg.result)
            elif isinstance(msg, m.Failed):
                self.ends.publish(rj.job_dir, rj.job_id, "failed", error=msg.error)
            elif rj.stop_reason == "pause":
                self.ends.requeue(rj.job_dir, rj.job_id, PAUSED_NOW, undo_attempt=rj.attempt)
            else:
                self.ends.cancel(rj.job_dir, rj.job_id)
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
            worker.next_start = time.monotonic() + (0 if reason in ("timeout", "cancel", "pause", "lost", "stalled") else backoff)
        self._wake.set()

    def _end_interrupted_attempt(self, rj: RunningJob, reason: str | None, how: str) -> None:
        with self.health.guard():
            if reason == "timeout":
                limit = self.settings.workers.job_timeout_seconds
                self.ends.fail(rj.job_dir, rj.job_id, ErrorCode.TIMEOUT, f"ran longer than {limit:g} s ([workers] job_timeout_seconds)")
            elif reason == "cancel":
                self.ends.cancel(rj.job_dir, rj.job_id)
            elif reason in ("shutdown", "pause"):
                why = "requeued at daemon shutdown" if reason == "shutdown" else PAUSED_NOW
                self.ends.requeue(rj.job_dir, rj.job_id, why, undo_attempt=rj.attempt)
            else:
                what = (f"the worker stopped answering ({how} after {self.settings.workers.stall_seconds:g} s without "
                        "progress or heartbeat, [workers] stall_seconds)" if reason == "stalled" else f"the worker crashed ({how})")
                if rj.attempt < rj.job["max_attempts"]:
                    self.ends.requeue(rj.job_dir, rj.job_id, f"attempt {rj.attempt}: {what}; requeued")
                else:
                    self.ends.fail(rj.job_dir, rj.job_id, ErrorCode.WORKER_CRASHED,
                                   f"{what} on attempt {rj.attempt} of {rj.job['max_attempts']}")

    def _running_ids(self) -> set[str]:
        return {w.job.job_id for w in self.workers if w.job is not None}

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
                    self.ends.cancel(job_dir, job_id)
                    self.queue = [q for q in self.queue if q.job_id != job_id]
                    return "canceled"
        return "canceling"  # running on another host, or being accepted: its owner sees the mark

    def _send_cancel(self, worker: WorkerHandle, why: str = "cancel") -> None:
        """Asks the worker to stop the job at its next step: to cancel it, or (`pause`) to
        requeue it without counting the attempt."""
        if worker.job and not worker.job.cancel_sent:
            worker.job.cancel_sent = True
            worker.job.stop_reason = why
            worker.job.cancel_sent_at = time.monotonic()
            worker.send(m.CancelJob(worker.job.job_id))

    # -- checks on running jobs ------------------------------------------------
    def check_running(self, now: float) -> None:
        timeout, stall = self.settings.workers.job_timeout_seconds, self.settings.workers.stall_seconds
        for w in self.workers:
            rj = w.job
            if rj is None or w.kill_reason is not None:
                continue
            if not rj.job_dir.exists():
                self._lose(w, rj)
            elif rj.cancel_sent and now - rj.cancel_sent_at > CANCEL_GRACE_SECONDS:
                w.kill(rj.stop_reason)
            elif not rj.cancel_sent and self.transitions.cancel_requested(rj.job_id):
                self._send_cancel(w)
            elif now - rj.started > timeout:
                w.kill("timeout")
            elif now - w.last_heard > stall:
                log.warning("worker.stalled", device=w.device, job_id=rj.job_id, silent_seconds=round(now - w.last_heard, 1))
                w.kill("stalled")

    def _lose(self, worker: WorkerHandle, rj: RunningJob) -> None:
        rj.lost = True
        self.statuses.forget(rj.job_id)  # its throttled progress must never be written now
        log.warning("job.lost", job_id=rj.job_id, device=worker.device, reason="job folder taken over by another host")
        worker.kill("lost")

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
        self.draining = True
        self.notifier.stopping()
        deadline = time.monotonic() + self.settings.workers.drain_seconds
        log.info("daemon.draining", running=len(self._running_ids()), drain_seconds=self.settings.workers.drain_seconds)
        while self._running_ids() and time.monotonic() < deadline:
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
                    self.check_running(now)
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
        self.deliveries.stop()  # copies in flight are redone at the next start
        self.webhooks.stop()  # pending events stay in their markers for the next start
        await asyncio.to_thread(self.retention.stop)  # a sweep ends at its next folder
        if self.watcher:
            self.watcher.stop()
        for runner in self._compat_runners:
            await runner.cleanup()
        if getattr(self, "_api_runner", None) is not None:
            await self._api_runner.cleanup()
        try:
            self.heartbeat.beat(state="stopped", **self._beat_info())
        except OSError as exc:  # others will see our heartbeat stop and take over
            log.error("daemon.stop_unrecorded", reason=str(exc))
        log.info("daemon.stopped", **self.ends.counts)

    # -- what the read model asks (daemon/view/readmodel.py's Supervisor) ------------------
    def queued(self) -> list[QueueName]:
        return self.queue

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

    def validate_job(self, doc: dict, staging: Path) -> dict:
        """A job submitted through a front, checked as intake will (daemon/jobs/jobfile.py)."""
        return validate_job(doc, staging, self.kinds, self.settings)

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
            return f"{self.pausing.current.words()}; {len(self.queue)} queued, {len(self._running_ids())} running"
        busy = len(self._running_ids())
        alive = sum(1 for w in self.workers if w.alive)
        return f"{len(self.queue)} queued, {busy} running, {alive}/{len(self.workers)} workers, {self.counts['completed']} completed"

    def _beat_info(self) -> dict:
        return {
            "api_url": self.api_url,
            "compat_urls": self.compat_urls,
            "workers": [w.describe() for w in self.workers],
            "queued_seen": len(self.queue),
            "counts": self.counts,
            "paused": self.pausing.current.describe() if self.pausing.current else None,
        }
