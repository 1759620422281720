"""Recovery: finishing what a crash, a broken spool or a dead host left in an active/ folder.

"Look at each folder" (docs/design.md): at start and when the spool comes back, every entry
of active/<me>/ that no worker runs; on every lease check, every entry of a dead host's
active/<host>/, after renaming it into ours (that rename decides which live host finishes
it), and before them the webhook events and deliveries it still owed (its markers, renamed
into ours the same way by daemon/webhooks/service.py and daemon/delivery/service.py). What cannot be read is
quarantined into R/corrupt/ with a reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import structlog

from contract.errors import ErrorCode
from daemon.spool.crashpoints import CrashPoints
from daemon.spool.fscheck import spool_fault
from daemon.spool.fsops import move, read_json, remove_tree
from daemon.spool.hosts import LeaseTracker
from daemon.jobs.ends import JobEnds
from daemon.spool.quarantine import quarantine
from daemon.spool.layout import API_STAGING, FINAL_DOC, JOB_DOC, RETIRED_PREFIX, Spool, attempts_started, is_valid_job_id
from daemon.spool.status import StatusWriter
from daemon.spool.transitions import Transitions

log = structlog.get_logger()


def recovery_kind(path: Path, name: str) -> str:
    """What an entry of an active/ folder is: intake, publish, retired, ended (a job whose
    end state is recorded), job (a claimed job), or corrupt (nothing we can read)."""
    if name.startswith(".intake."):
        return "intake"
    if name.startswith(".publish-"):
        return "publish"
    if name.startswith(RETIRED_PREFIX):
        return "retired"
    if not is_valid_job_id(name) or not path.is_dir():
        return "corrupt"
    if (path / FINAL_DOC).is_file():
        return "ended"
    return "job" if isinstance(read_json(path / JOB_DOC), dict) else "corrupt"


class Recovery:
    def __init__(self, spool: Spool, transitions: Transitions, ends: JobEnds, statuses: StatusWriter,
                 leases: LeaseTracker, accept: Callable[[Path], None], crash: CrashPoints, lease_seconds: float,
                 owed: Sequence[Callable[[str], None]] = ()):
        self.spool = spool
        self.transitions = transitions
        self.ends = ends
        self.statuses = statuses
        self.leases = leases
        self.accept = accept  # an intake folder: accept it (again)
        self.crash = crash
        self.lease_seconds = lease_seconds
        self.owed = owed  # take_over(dead host) of its markers: webhook events, deliveries
        self._staging_removed: set[str] = set()  # gone hosts whose upload staging went

    def resume_folders(self, reason: str, running: Collection[str]) -> None:
        """Finishes each entry of active/<me>/ that no worker is running: at start (our last
        run's leftovers) and when the spool comes back after a fault."""
        unpublished = self.ends.unpublished
        for name in sorted(os.listdir(self.spool.active)):
            if name in running:
                continue
            path = self.spool.active / name
            if name in unpublished:
                state, fields = unpublished.pop(name)
                self.ends.publish(path, name, state, **fields)
            else:
                self.recover_entry(path, name, reason, owned=True)
        for job_id in list(unpublished):  # their folders were taken while we were blind
            if job_id not in running:
                del unpublished[job_id]
                self.statuses.forget(job_id)  # and its last progress must not be flushed now
                log.warning("job.lost", job_id=job_id, reason="taken over while the spool was unavailable; not published")

    def remove_staging(self, hosts: Collection[str]) -> None:
        """Removes the upload staging folders of `hosts` (inbox/.api-<token>.<host>.part/):
        uploads a SIGKILL or a crash cut short, which no one will finish. Only for this host
        before its API listens, and for hosts whose lease has run out."""
        for name in os.listdir(self.spool.inbox):
            found = API_STAGING.fullmatch(name)
            if found and found["host"] in hosts:
                remove_tree(self.spool.inbox / name)
                log.info("recovery.staging_removed", staging=name, staging_host=found["host"])

    def take_over_dead_hosts(self) -> None:
        dead = self.leases.dead_hosts()  # (which also brings what we know of every host up to date)
        gone = self.leases.gone_hosts()
        if gone - self._staging_removed:  # once per host, each time it is seen gone
            self.remove_staging(gone - self._staging_removed)
        self._staging_removed = gone
        for host in dead:
            # Markers first: a publish of the dead host's redone below then finds the delivery's
            # progress, and its webhook event pending, in our folders (no second copy or event).
            for take_over in self.owed:
                try:
                    take_over(host)
                except OSError as exc:
                    if spool_fault(exc) is not None:
                        raise
                    log.error("recovery.failed", dead_host=host, error=str(exc))
            src = self.spool.active_of(host)
            try:
                names = sorted(os.listdir(src))
            except FileNotFoundError:
                continue
            if names:
                log.warning("host.dead", dead_host=host, jobs=len(names), lease_seconds=self.lease_seconds)
            for name in names:
                self.recover_entry(src / name, name, f"host {host} stopped heart-beating", owned=False)

    def recover_entry(self, path: Path, name: str, reason: str, owned: bool) -> None:
        """Finishes one entry of an active/ folder: ours, or a dead host's, which is first
        renamed into ours."""
        try:
            what = recovery_kind(path, name)
            mine = path if owned else self.spool.active / name
            if not owned:
                if not move(path, mine):
                    return  # another live host took it first
                self.crash.hit("takeover.moved")
            if what == "intake":
                self.accept(mine)
            elif what == "publish":
                self.transitions.finish_publish(mine)
            elif what == "retired":
                self.transitions.remove_retired(mine)
            elif what == "ended":  # the attempt ended; only its commit was missing
                self.transitions.commit(mine, name)
            elif what == "job":
                self._recover_job(mine, name, reason)
            else:
                quarantine(self.spool, mine, f"{'a folder' if mine.is_dir() else 'a file'} in active/ that is no "
                           f"job the daemon can read (no readable {JOB_DOC}); found while: {reason}")
        except OSError as exc:
            if spool_fault(exc) is not None:
                raise
            log.error("recovery.failed", path=str(path), error=str(exc))

    def _recover_job(self, job_dir: Path, job_id: str, reason: str) -> None:
        """A claimed job whose attempt was interrupted: requeued, or failed once its attempts are used up."""
        job = read_json(job_dir / JOB_DOC)
        used = attempts_started(job_dir)
        if used >= job.get("max_attempts", 1):
            self.ends.fail(job_dir, job_id, ErrorCode.WORKER_CRASHED, f"attempt {used} of {used} was interrupted ({reason})")
        else:
            self.ends.requeue(job_dir, job_id, f"{reason}; requeued")
