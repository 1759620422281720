"""Taking complete drops out of the inbox and accepting them, one drop at a time: what goes
wrong with one drop concerns that drop only (docs/design.md, "Completeness of drops")."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import structlog

from daemon.spool.crashpoints import CrashPoints
from daemon.spool.fscheck import spool_fault
from daemon.jobs.drops import DropReader
from daemon.jobs.intake import Drop, InboxScanner, entry_fault, note_accept_failure, stage_drop
from daemon.lines import error_line, printable
from daemon.jobs.ends import JobEnds
from daemon.spool.layout import QueueName, Spool
from daemon.spool.transitions import Transitions

log = structlog.get_logger()

# A staged drop whose accept raised this often (over restarts too) is failed `internal`.
MAX_ACCEPT_TRIES = 3


class Intake:
    def __init__(self, spool: Spool, scanner: InboxScanner, drops: DropReader, transitions: Transitions, ends: JobEnds,
                 crash: CrashPoints, on_queued: Callable[[QueueName], None], cancel: Callable[[str, str], str],
                 keep_lease: Callable[[], object]):
        self.spool = spool
        self.scanner = scanner
        self.drops = drops  # reads a staged drop (daemon/jobs/drops.py) before the moves take it
        self.transitions = transitions
        self.ends = ends
        self.crash = crash
        self.on_queued = on_queued  # a job entered the queue
        self.cancel = cancel  # (job id, source) → outcome, for ID.cancel files
        self.keep_lease = keep_lease  # beats the heartbeat if it is due
        self._retry: set[Path] = set()  # staged drops whose accept raised: tried again on rescans

    def take(self, now: float) -> None:
        for drop in self.scanner.scan(now):
            staging = self._stage(drop, now)
            if staging is not None:
                self.accept(staging)
            self.keep_lease()  # a long burst (slow over sshfs) must not starve our lease

    def _stage(self, drop: Drop, now: float) -> Path | None:
        """Takes a drop out of the inbox (or acts on a cancel file); a failure there stays in
        the inbox, is tried again each scan and logged once."""
        try:
            if drop.form == "cancel":
                self._cancel_file(drop.path)
                return None
            staging = stage_drop(drop, self.spool.active, self.spool.inbox, self.crash)
        except Exception as exc:  # noqa: BLE001 - one drop must never stop the others
            if entry_fault(exc):
                raise  # the spool, not the drop: the arbiter waits the fault out
            if self.scanner.note_failure(drop.path, exc, now):
                log.exception("intake.stage_failed", drop=printable(str(drop.path)), error=error_line(exc))
            return None
        self.scanner.forget(drop.path)
        for p in drop.inputs:
            self.scanner.forget(p)
        return staging

    def accept(self, staging: Path) -> None:
        try:
            drop = self.drops.read(staging)
            if drop is None:
                self.transitions.discard(staging)
                qn = None
            else:
                qn = self.transitions.accept(drop)
        except Exception as exc:  # noqa: BLE001 - one drop must never stop the intake
            if spool_fault(exc) is not None:
                raise  # a broken spool, not a bad drop: never fail a job for it; recovery retries
            if not self._accept_failed(staging, exc):
                return
            qn = None
        self.ends.counts["accepted"] += 1
        if qn is None:
            self.ends.counts["failed"] += 1
        else:
            self.on_queued(qn)

    def _accept_failed(self, staging: Path, exc: Exception) -> bool:
        """After an accept raised: the drop stays staged for another try (False), or, after
        MAX_ACCEPT_TRIES, is failed `internal` with its files kept (True)."""
        error = error_line(exc)
        try:
            tries = note_accept_failure(staging)
            if tries < MAX_ACCEPT_TRIES:
                log.exception("intake.accept_failed", staging=str(staging), tries=tries, error=error)
                self._retry.add(staging)
                return False
            log.error("intake.accept_given_up", staging=str(staging), tries=tries, error=error)
            drop = self.drops.read_to_fail(staging)
            if drop is None:
                self.transitions.discard(staging)
            else:
                self.transitions.fail_staged(drop, f"accepting the drop failed {tries} times, last: {error}")
        except Exception as again:  # noqa: BLE001 - left staged: the next start tries again
            if spool_fault(again) is not None:
                raise
            log.exception("intake.accept_failed", staging=str(staging), error=error_line(again))
            return False
        self._retry.discard(staging)
        return True

    def retry(self) -> None:
        for staging in sorted(self._retry):
            self._retry.discard(staging)
            if staging.exists():
                self.accept(staging)

    def _cancel_file(self, path: Path) -> None:
        job_id = path.name[: -len(".cancel")]
        outcome = self.cancel(job_id, "file")
        self.crash.hit("cancel.file_handled")
        try:
            if outcome == "not_found":
                os.rename(path, path.with_name(f".{path.name}.unknown-job"))
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass
        self.scanner.forget(path)
