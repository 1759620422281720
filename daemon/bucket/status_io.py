"""Reading and writing a bucket spool job's status.json: the first write an exclusive
create, every later one a compare-and-swap on the ETag the writer read or wrote last.

A write whose answer was lost (Unavailable) has an unknown outcome; it is read back before
anyone decides (docs/bucket-spool.md, "Steps"): the body we sent is there → it was written;
the old ETag is still there → it was not (Unavailable again, to retry later); anything
else → someone else wrote, as with a 412.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.bucket import keys
from daemon.bucket.errors import Unavailable
from daemon.bucket.lease import decode, encode, lease_of

JSON = "application/json"


@dataclass(frozen=True)
class Held:
    """A job's status as this host last read or wrote it, with that version's ETag: the
    base of the host's next compare-and-swap."""

    job_id: str
    status: dict
    etag: str

    @property
    def lease(self) -> dict:
        return lease_of(self.status)


def read_status(store, job_id: str) -> Held | None:
    got = store.get(keys.status_key(job_id))
    if got is None:
        return None
    body, etag = got
    return Held(job_id, decode(body), etag)


def create_status(store, job_id: str, status: dict) -> Held | None:
    """Writes the job's first status (If-None-Match). When the key exists, the status there
    if its lease carries our token (an earlier try of ours), else None (another job's id)."""
    key, body = keys.status_key(job_id), encode(status)
    try:
        etag = store.create(key, body, JSON)
    except Unavailable:
        there = read_status(store, job_id)
        if there is None:
            raise  # not applied: the id is still free, try again later (not the next id)
    else:
        if etag is not None:
            return Held(job_id, status, etag)
        there = read_status(store, job_id)
    if there is not None and there.lease["token"] == lease_of(status)["token"]:
        return there
    return None


def swap_status(store, held: Held, status: dict) -> Held | None:
    """Writes `status` only if the job's status is still `held`'s version: the new Held, or
    None when someone else wrote it since (the caller reads again and decides again)."""
    key, body = keys.status_key(held.job_id), encode(status)
    try:
        etag = store.replace(key, body, held.etag, JSON)
    except Unavailable:
        got = store.get(key)
        if got is not None and got[0] == body:
            return Held(held.job_id, status, got[1])
        if got is not None and got[1] == held.etag:
            raise  # not applied: unchanged, try again later
        return None
    return None if etag is None else Held(held.job_id, status, etag)
