"""How an attempt ends, in one place (as rq's handle_job_success / _failure / _retry): the
worker's answer (done, failed, canceled), its death (crash, stall, timeout, cancel or pause
kill, shutdown), a job taken over by another host, a cancel asked of a job wherever it is,
and the checks on running jobs that lead to those. Each ends in daemon/jobs/ends.py's publish,
fail, cancel or requeue.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import structlog

from contract import messages as m
from contract.errors import ErrorCode
from contract.status import FINAL_STATES
from daemon.config import Settings
from daemon.spool.crashpoints import CrashPoints
from daemon.jobs.dispatch import Dispatcher
from daemon.spool.fsops import create_exclusive
from daemon.lines import printable
from daemon.jobs.ends import JobEnds
from daemon.spool.layout import CANCEL_MARK, Spool, is_valid_job_id
from daemon.spool.health import SpoolHealth
from daemon.spool.status import StatusWriter
from daemon.spool.transitions import Transitions
from daemon.workers import RunningJob, WorkerHandle

log = structlog.get_logger()

# A running job that ignores a cancel this long is stopped by killing its worker.
CANCEL_GRACE_SECONDS = 10.0
# Why a job that `pause --now` stopped is queued again (its attempt undone).
PAUSED_NOW = "requeued: paused with now"


def folder_gone(path: Path) -> bool:
    """Whether a job folder is surely gone (taken over); a broken spool cannot tell, and then
    the end is published later or found lost by recovery."""
    try:
        return not path.exists()
    except OSError:
        return False


class Attempts:
    """The running attempts of this daemon's workers, and every way one ends."""

    def __init__(self, spool: Spool, settings: Callable[[], Settings], workers: list[WorkerHandle],
                 transitions: Transitions, ends: JobEnds, statuses: StatusWriter, health: SpoolHealth,
                 crash: CrashPoints, wake: Callable[[], None]):
        self.spool, self.settings, self.workers = spool, settings, workers
        self.transitions, self.ends, self.statuses, self.health = transitions, ends, statuses, health
        self.crash, self.wake = crash, wake
        self.dispatcher: Dispatcher | None = None  # set by the arbiter: cancels of queued jobs

    def running_ids(self) -> set[str]:
        return {w.job.job_id for w in self.workers if w.job is not None}

    # -- what the worker says ---------------------------------------------------------------------
    def on_message(self, worker: WorkerHandle, rj: RunningJob, msg: m.FromWorker) -> None:
        """A message of the job `worker` runs: its progress, or how it ended."""
        if isinstance(msg, m.Progress):
            self._progress(worker, rj, msg)
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
            self.wake()

    def _progress(self, worker: WorkerHandle, rj: RunningJob, msg: m.Progress) -> None:
        if rj.lost:
            return
        if self.statuses.progress_due(rj.job_id) and not rj.job_dir.exists():
            self.lose(worker, rj)  # never write the status of a job another host now owns
            return
        update = msg.update()  # its eta_seconds is the worker's stage's; the status's is the job's
        update["eta_seconds"] = rj.clock.report(msg.stage, msg.eta_seconds) if rj.clock else msg.eta_seconds
        self.statuses.progress(rj.job_id, update)

    # -- a worker that died with a job ----------------------------------------------------------------
    def interrupted(self, rj: RunningJob, reason: str | None, how: str) -> None:
        """The worker running `rj` exited (`reason`: why we killed it, None: it died)."""
        if rj.lost:
            return
        settings = self.settings().workers
        with self.health.guard():
            if reason == "timeout":
                self.ends.fail(rj.job_dir, rj.job_id, ErrorCode.TIMEOUT,
                               f"ran longer than {settings.job_timeout_seconds:g} s ([workers] job_timeout_seconds)")
            elif reason == "cancel":
                self.ends.cancel(rj.job_dir, rj.job_id)
            elif reason in ("shutdown", "pause"):
                why = "requeued at daemon shutdown" if reason == "shutdown" else PAUSED_NOW
                self.ends.requeue(rj.job_dir, rj.job_id, why, undo_attempt=rj.attempt)
            else:
                what = (f"the worker stopped answering ({how} after {settings.stall_seconds:g} s without "
                        "progress or heartbeat, [workers] stall_seconds)" if reason == "stalled" else f"the worker crashed ({how})")
                if rj.attempt < rj.job["max_attempts"]:
                    self.ends.requeue(rj.job_dir, rj.job_id, f"attempt {rj.attempt}: {what}; requeued")
                else:
                    self.ends.fail(rj.job_dir, rj.job_id, ErrorCode.WORKER_CRASHED,
                                   f"{what} on attempt {rj.attempt} of {rj.job['max_attempts']}")

    # -- checks on running jobs ------------------------------------------------------------------------
    def check(self, now: float) -> None:
        """Each turn: a job taken over is dropped; one that ignores its cancel, runs past its
        timeout or went silent past the stall limit has its worker killed."""
        settings = self.settings().workers
        for w in self.workers:
            rj = w.job
            if rj is None or w.kill_reason is not None:
                continue
            if not rj.job_dir.exists():
                self.lose(w, rj)
            elif rj.cancel_sent and now - rj.cancel_sent_at > CANCEL_GRACE_SECONDS:
                w.kill(rj.stop_reason)
            elif not rj.cancel_sent and self.transitions.cancel_requested(rj.job_id):
                self.stop(w)
            elif now - rj.started > settings.job_timeout_seconds:
                w.kill("timeout")
            elif now - w.last_heard > settings.stall_seconds:
                log.warning("worker.stalled", device=w.device, job_id=rj.job_id, silent_seconds=round(now - w.last_heard, 1))
                w.kill("stalled")

    def lose(self, worker: WorkerHandle, rj: RunningJob) -> None:
        """Another host took the job over: its status is never written here again."""
        rj.lost = True
        self.statuses.forget(rj.job_id)  # its throttled progress must never be written now
        log.warning("job.lost", job_id=rj.job_id, device=worker.device, reason="job folder taken over by another host")
        worker.kill("lost")

    def stop(self, worker: WorkerHandle, why: str = "cancel") -> None:
        """Asks the worker to stop the job at its next step: to cancel it, or (`pause`) to
        requeue it without counting the attempt."""
        if worker.job and not worker.job.cancel_sent:
            worker.job.cancel_sent = True
            worker.job.stop_reason = why
            worker.job.cancel_sent_at = time.monotonic()
            worker.send(m.CancelJob(worker.job.job_id))

    # -- cancel ----------------------------------------------------------------------------------------
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
                self.stop(w)
                return "canceling"
        for qn in self.spool.queued_names():
            if qn.job_id == job_id:
                job_dir = self.transitions.claim(qn)
                if job_dir is not None:
                    self.crash.hit("cancel.claimed")
                    self.ends.cancel(job_dir, job_id)
                    if self.dispatcher is not None:
                        self.dispatcher.forget(job_id)
                    return "canceled"
        return "canceling"  # running on another host, or being accepted: its owner sees the mark
