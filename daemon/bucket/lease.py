"""The lease inside a bucket spool's status.json (docs/bucket-spool.md, "The lease inside
status.json"), and the pure functions that make a job's next status from its current one.

    "lease": {"host", "epoch", "seq", "token", "final", "cancel"}

`epoch` grows at every change of owner or state (a queue hint names the epoch it was
written for); `seq` grows at every write, so no two bodies (hence no two ETags) of one
status are ever equal and a stale compare-and-swap cannot succeed; `token` is the intake
marker's, so a redo of accept knows its own status; `final` is the decided end state while
results are published; `cancel` is a cancel asked of another host's attempt; `place` is the job's turn in the queue
(`<rank>-<usec>` of its hints).

Nothing here makes a request: each function returns a new document (its input is left as
it was), and the caller writes it by compare-and-swap.
"""

from __future__ import annotations

import copy
import json

from contract.status import FINAL_STATES, new_status, utc_now

LEASE = "lease"


def lease_of(status: dict) -> dict:
    return status[LEASE]


def encode(status: dict) -> bytes:
    """The bytes a status is written as (a reader sees SPEC §4's status plus "lease")."""
    return json.dumps(status, indent=1, sort_keys=False).encode()


def decode(body: bytes) -> dict:
    doc = json.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get(LEASE), dict):
        raise ValueError("not a bucket spool status (no lease)")
    return doc


def _next(status: dict, **lease_changes) -> dict:
    """A copy of `status` with its lease changed and `seq` one up (every write is unique)."""
    doc = copy.deepcopy(status)
    lease = doc[LEASE]
    lease.update(lease_changes)
    lease["seq"] += 1
    doc["updated_at"] = utc_now()
    return doc


def _new_epoch(status: dict, **lease_changes) -> dict:
    return _next(status, epoch=lease_of(status)["epoch"] + 1, **lease_changes)


# ----------------------------------------------------------------------------- accept

def accepted(job_id: str, job: dict, token: str, place: str = "", error: dict | None = None) -> dict:
    """The first status of a job (epoch 0): queued, or failed when the job is invalid.
    `place` is its queue hint's `<rank>-<usec>`: a requeue keeps the job's turn."""
    state, fields = ("queued", {}) if error is None else ("failed", {"error": error, "finished_at": utc_now()})
    doc = new_status(job_id, job, state, **fields)
    doc[LEASE] = {"host": None, "epoch": 0, "seq": 0, "token": token, "final": None, "cancel": False,
                  "place": place}
    return doc


# ----------------------------------------------------------------------------- owner changes

def claimed(status: dict, host: str) -> dict:
    """queued → running on `host`: the attempt is counted in the same write."""
    doc = _new_epoch(status, host=host, cancel=False, final=None)
    doc.update(state="running", host=host, attempt=doc.get("attempt", 0) + 1, started_at=utc_now(),
               progress=0, stage=None, message=None, finished_at=None)
    return doc


def requeued(status: dict) -> dict:
    """running → queued with no owner (the attempt stays counted)."""
    doc = _new_epoch(status, host=None, cancel=False, final=None)
    doc.update(state="queued", host=None, device=None, stage=None, message=None, progress=0, eta_seconds=None,
               preview=None)
    return doc


def attempts_left(status: dict) -> bool:
    limit = status.get("max_attempts")
    return limit is None or status.get("attempt", 0) < limit


def canceled_queued(status: dict) -> dict:
    """queued → canceled: nothing ran, so nothing is published; one write ends it."""
    doc = _new_epoch(status)
    doc.update(state="canceled", finished_at=utc_now(),
               error={"code": "canceled", "message": "canceled while queued", "retryable": False})
    return doc


def cancel_marked(status: dict) -> dict:
    """A cancel asked of the owner of a running job; the owner's next write fails and reads it."""
    return _next(status, cancel=True)


# ----------------------------------------------------------------------------- the owner's writes

def progressed(status: dict, **fields) -> dict:
    """A running job's progress (SPEC §4's progress keys); the lease is unchanged but for seq."""
    doc = _next(status)
    doc.update(fields)
    return doc


def final_state(state: str, result: dict | None = None, error: dict | None = None, message: str | None = None) -> dict:
    """What `committed` records: the end state, decided before anything is published."""
    if state not in FINAL_STATES:
        raise ValueError(f"{state!r} is not an end state")
    return {"state": state, "finished_at": utc_now(), "result": result, "error": error, "message": message}


def committed(status: dict, final: dict) -> dict:
    """The commit point: the end state is recorded in the lease; the public state still says
    running while the results are copied into the outbox."""
    doc = _next(status, final=final)
    doc["stage"] = "publishing"
    return doc


def published(status: dict) -> dict:
    """The public end state of a committed job (its `final` moved out of the lease)."""
    final = lease_of(status)["final"]
    doc = _new_epoch(status, final=None, cancel=False)
    doc.update(state=final["state"], finished_at=final["finished_at"], result=final["result"],
               error=final["error"], stage=None, eta_seconds=None, preview=None)
    if final["message"] is not None:
        doc["message"] = final["message"]
    if final["state"] == "completed":
        doc["progress"] = 100
    return doc


# ----------------------------------------------------------------------------- questions

def is_final(status: dict) -> bool:
    return status.get("state") in FINAL_STATES


def owned_by(status: dict, host: str) -> bool:
    return lease_of(status)["host"] == host
