"""Claim on a bucket spool: queued → running on this host (docs/bucket-spool.md, "Claim").

    LIST queue/, in key order (priority, then first in first out)
    PUT active/<me>/<id>.<epoch + 1>      the intent: whoever finds me dead looks here
    GET outbox/<id>/status.json
    CAS it to running on me, epoch + 1    → claim.moved (the attempt is counted in this write)
    DELETE the queue hint                 → attempt.running

Exactly one host wins a job: the claim is a compare-and-swap from the one ETag the queued
status has. A hint is acted on only when its epoch is the status's.
"""

from __future__ import annotations

import zlib

from daemon.bucket import keys, lease
from daemon.bucket.keys import QueueHint
from daemon.bucket.status_io import Held, read_status, swap_status
from daemon.spool.crashpoints import NEVER, CrashPoints

# How many equal-rank entries at the head of the queue hosts spread their first tries over.
CLAIM_WINDOW = 8


def list_queue(store) -> list[QueueHint]:
    hints = (keys.parse_queue_hint(e.key) for e in store.list(keys.QUEUE))
    return sorted(h for h in hints if h is not None)


def claim_order(hints: list[QueueHint], host: str, window: int = CLAIM_WINDOW) -> list[QueueHint]:
    """The order `host` tries the queue in: the head's equal-rank entries (up to `window`)
    rotated by a hash of the host's name, so racing hosts start on different jobs (a race
    for one key costs about a second on SeaweedFS), then the rest in queue order."""
    if not hints:
        return []
    head = [h for h in hints[:window] if h.rank == hints[0].rank]
    turn = zlib.crc32(host.encode()) % len(head)
    return head[turn:] + head[:turn] + hints[len(head):]


def claim_hint(store, hint: QueueHint, host: str, crash: CrashPoints = NEVER) -> Held | None:
    """Claims the job `hint` names if its status is still queued at the hint's epoch: the
    running status, else None. A stale hint (its status moved past its epoch) is removed."""
    intent = keys.intent_key(host, hint.job_id, hint.epoch + 1)
    store.put(intent, b"")
    now = read_status(store, hint.job_id)
    if now is None:
        store.delete([hint.key, intent])
        return None
    epoch = now.lease["epoch"]
    if now.status["state"] == "queued" and epoch == hint.epoch:
        won = swap_status(store, now, lease.claimed(now.status, host)) or claimed_anyway(store, hint, host)
        if won is not None:
            crash.hit("claim.moved")
            store.delete([hint.key])
            crash.hit("attempt.running")
            return won
        store.delete([intent])
        return None
    if lease.owned_by(now.status, host):
        return None  # mine already (recovery settles it): keep my intent
    # At or past the hint's epoch (and not queued at it): a stale hint, e.g. a requeue's
    # whose swap lost to the job's end. Behind it: a requeue in progress; leave its hint.
    store.delete([hint.key, intent] if epoch >= hint.epoch else [intent])
    return None


def claimed_anyway(store, hint: QueueHint, host: str) -> Held | None:
    """After a failed claim swap: our claim if it landed all the same (its answer lost, then
    another write of the same epoch, e.g. a cancel mark), else None."""
    now = read_status(store, hint.job_id)
    if now is not None and lease.owned_by(now.status, host) and now.lease["epoch"] == hint.epoch + 1 \
            and now.status["state"] == "running":
        return now
    return None


def claim_next(store, host: str, crash: CrashPoints = NEVER, window: int = CLAIM_WINDOW) -> Held | None:
    """The first job of the queue this host wins, or None."""
    for hint in claim_order(list_queue(store), host, window):
        held = claim_hint(store, hint, host, crash)
        if held is not None:
            return held
    return None
