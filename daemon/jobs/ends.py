"""Ending and requeuing claimed jobs, for the arbiter, the intake and recovery alike: the
transition, the daemon's counts, and end states kept while the spool is broken."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog

from contract.errors import ErrorCode, JobError
from daemon.spool.fscheck import spool_fault
from daemon.spool.health import SpoolHealth
from daemon.spool.status import StatusWriter
from daemon.spool.transitions import Transitions

log = structlog.get_logger()


def canceled_error() -> dict:
    return JobError(ErrorCode.CANCELED, "canceled by request").to_status()


class JobEnds:
    def __init__(self, transitions: Transitions, statuses: StatusWriter, health: SpoolHealth,
                 on_requeued: Callable[[], None]):
        self.transitions = transitions
        self.statuses = statuses
        self.health = health
        self.on_requeued = on_requeued  # the queue changed: list it again
        self.counts = {"accepted": 0, "completed": 0, "failed": 0, "canceled": 0, "requeued": 0}
        # End states that could not be written while the spool was down: job_id → (state, fields).
        self.unpublished: dict[str, tuple[str, dict]] = {}

    def publish(self, job_dir: Path, job_id: str, state: str, **fields) -> None:
        """Ends a job we own; on a broken spool the end state waits (resume publishes it)."""
        with self.health.guard(on_fault=lambda: self.unpublished.__setitem__(job_id, (state, fields))):
            try:
                if self.transitions.publish(job_dir, job_id, state, **fields):
                    self.counts[state] += 1
            except OSError as exc:
                if spool_fault(exc) is not None:
                    raise  # to the guard: kept for when the spool is back
                self.statuses.forget(job_id)  # its last progress must never be written now
                if not job_dir.exists():
                    log.warning("job.lost", job_id=job_id, reason="the job folder was taken over; not publishing")
                else:
                    log.error("job.publish_failed", job_id=job_id, error=str(exc))

    def requeue(self, job_dir: Path, job_id: str, reason: str, undo_attempt: int | None = None) -> None:
        """Puts a job we own back in the queue; on a broken spool, recovery does it later."""
        with self.health.guard():
            try:
                if self.transitions.requeue(job_dir, job_id, reason, undo_attempt):
                    self.counts["requeued"] += 1
                    self.on_requeued()
            except OSError as exc:
                if spool_fault(exc) is not None:
                    raise  # to the guard: resume_folders requeues it when the spool is back
                log.error("job.requeue_failed", job_id=job_id, error=str(exc))

    def fail(self, job_dir: Path, job_id: str, code: ErrorCode, message: str) -> None:
        self.publish(job_dir, job_id, "failed", error=JobError(code, message).to_status())

    def cancel(self, job_dir: Path, job_id: str) -> None:
        self.publish(job_dir, job_id, "canceled", error=canceled_error())

