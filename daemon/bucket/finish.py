"""A job's writes after its claim on a bucket spool: progress, commit, publish, requeue and
cancel (docs/bucket-spool.md, "Running" to "Cancel").

Every write is a compare-and-swap on the ETag this host last wrote or read. A failed one
is read again and decided again; for the owner that is the fencing: a cancel asked of its
attempt (CancelAsked), or the job taken from it (LeaseLost), after which it writes nothing
more for the job.
"""

from __future__ import annotations

from daemon.bucket import keys, lease
from daemon.bucket.errors import NotFound
from daemon.bucket.status_io import Held, read_status, swap_status
from daemon.spool.crashpoints import NEVER, CrashPoints

# How often one step re-reads and decides again before it gives the turn up.
RETRIES = 5


class LeaseLost(Exception):
    """The job's status moved on without us (requeued or taken over by another host): the
    attempt must stop and write nothing more."""

    def __init__(self, job_id: str, now: Held | None):
        super().__init__(f"{job_id}: the job was taken from this host")
        self.job_id, self.now = job_id, now


class CancelAsked(Exception):
    """A cancel was asked of our attempt; `now` is the status to commit the cancel from."""

    def __init__(self, now: Held):
        super().__init__(f"{now.job_id}: cancel asked")
        self.now = now


def fencing(store, held: Held, host: str) -> Exception:
    """Why an owner's swap failed: CancelAsked when the job is still ours at our epoch with
    `cancel` set, else LeaseLost."""
    now = read_status(store, held.job_id)
    if now is not None and lease.owned_by(now.status, host) and now.lease["epoch"] == held.lease["epoch"] \
            and now.lease["final"] is None and now.status["state"] == "running" and now.lease["cancel"]:
        return CancelAsked(now)
    return LeaseLost(held.job_id, now)


# ----------------------------------------------------------------------------- the owner's writes

def write_progress(store, held: Held, host: str, **fields) -> Held:
    """A progress write (SPEC §4's progress keys). Raises CancelAsked or LeaseLost when the
    status moved on: the fencing (docs/bucket-spool.md, "Running")."""
    new = swap_status(store, held, lease.progressed(held.status, **fields))
    if new is None:
        raise fencing(store, held, host)
    return new


def result_file(job_id: str, name: str, size: int, sha256: str, media_type: str) -> dict:
    return {"name": name, "size": size, "sha256": sha256, "media_type": media_type,
            "url": f"/api/v1/jobs/{job_id}/files/{name}"}


def canceled_final() -> dict:
    return lease.final_state("canceled", error={"code": "canceled", "message": "canceled while running",
                                                "retryable": False})


def commit(store, held: Held, host: str, final: dict, crash: CrashPoints = NEVER) -> Held:
    """commit.final_written: the end state recorded in the lease; only the owner's ETag can.
    A cancel asked meanwhile makes the commit a cancel. A crash after: whoever finds the
    job next finishes the publish with this `final`."""
    new = swap_status(store, held, lease.committed(held.status, final))
    if new is None:
        reason = fencing(store, held, host)
        if not isinstance(reason, CancelAsked):
            raise reason
        new = swap_status(store, reason.now, lease.committed(reason.now.status, canceled_final()))
        if new is None:
            raise fencing(store, reason.now, host)
    crash.hit("commit.final_written")
    return new


def publish(store, held: Held, crash: CrashPoints = NEVER, finisher: str | None = None) -> Held:
    """From a committed status: the attempt's results copied into the outbox
    (publish.results_moved), the public end state (publish.status_written), then the
    attempt's keys removed (publish.removing). Any host may finish it, as often as it is
    cut short: every step is idempotent and the end state is fixed by the commit."""
    final, epoch = held.lease["final"], held.lease["epoch"]
    names = [f["name"] for f in (final["result"] or {}).get("files", [])]
    try:
        for name in names:
            store.copy(keys.work_key(held.job_id, epoch, name), keys.result_key(held.job_id, name))
    except NotFound:
        end = read_status(store, held.job_id)  # another finisher ended it and removed work/
        if end is None or not lease.is_final(end.status):
            raise
        return end
    crash.hit("publish.results_moved")
    end = held
    for _ in range(RETRIES):
        new = swap_status(store, end, lease.published(end.status))
        if new is not None:
            end = new
            break
        end = read_status(store, held.job_id)
        if end is None or lease.is_final(end.status) or end.lease["final"] != final:
            break  # ended by another finisher (or gone): nothing more to write
    crash.hit("publish.status_written")
    owners = {held.lease["host"], finisher} - {None}
    store.delete([keys.work_key(held.job_id, epoch, n) for n in names]
                 + [keys.intent_key(h, held.job_id, epoch) for h in owners])
    crash.hit("publish.removing")
    return end


# ----------------------------------------------------------------------------- requeue

def requeue(store, held: Held, finisher: str, crash: CrashPoints = NEVER) -> Held | None:
    """A running job back to queued (a crashed attempt, a dead host's job): the hint first
    (never queued without one), then the status (requeue.moved), then the attempt's keys
    (requeue.cleared). A job out of attempts fails `worker_crashed` instead. None when the
    status moved on meanwhile (the caller reads again and decides again)."""
    if not lease.attempts_left(held.status):
        attempts = held.status.get("attempt", 0)
        final = lease.final_state("failed", error={"code": "worker_crashed", "retryable": True,
                                                   "message": f"the attempt was cut short {attempts} times"})
        committed = swap_status(store, held, lease.committed(held.status, final))
        if committed is None:
            return None
        end = publish(store, committed, crash, finisher)
        clear_attempt(store, held.job_id, held.lease["epoch"], set())  # the cut attempt's partial results
        return end
    epoch, owner = held.lease["epoch"], held.lease["host"]
    rank, usec = (int(p) for p in held.lease["place"].split("-"))
    store.put(keys.queue_key(rank, usec, held.job_id, epoch + 1), b"")
    new = swap_status(store, held, lease.requeued(held.status))
    if new is None:
        return None
    crash.hit("requeue.moved")
    clear_attempt(store, held.job_id, epoch, {owner, finisher})
    crash.hit("requeue.cleared")
    return new


def clear_attempt(store, job_id: str, epoch: int, hosts: set[str | None]) -> None:
    """Removes an ended attempt's results and the intents of `hosts` for the job."""
    leftovers = [e.key for e in store.list(keys.work_folder(job_id, epoch))]
    store.delete(leftovers + [keys.intent_key(h, job_id, epoch) for h in hosts - {None}])


# ----------------------------------------------------------------------------- cancel

def cancel_job(store, job_id: str, crash: CrashPoints = NEVER) -> str:
    """Cancels a job (an `ID.cancel` drop, the API): a queued one ends canceled at once (its
    hint is then stale, and removed here); a running one gets `lease.cancel` for its owner
    to act on (cancel.marked). What was done: canceled, asked, ended (already) or unknown."""
    for _ in range(RETRIES):
        now = read_status(store, job_id)
        if now is None:
            return "unknown"
        if lease.is_final(now.status) or now.lease["final"] is not None:
            return "ended"
        if now.status["state"] == "queued":
            if swap_status(store, now, lease.canceled_queued(now.status)) is not None:
                crash.hit("cancel.marked")
                rank, usec = (int(p) for p in now.lease["place"].split("-"))
                store.delete([keys.queue_key(rank, usec, job_id, now.lease["epoch"])])
                return "canceled"
        elif now.lease["cancel"] or swap_status(store, now, lease.cancel_marked(now.status)) is not None:
            crash.hit("cancel.marked")
            return "asked"
    return "unknown"
