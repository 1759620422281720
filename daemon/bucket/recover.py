"""Recovery on a bucket spool: a host's own hints walked at its start, and a dead host's
taken over by whoever sees its heartbeat stop (docs/bucket-spool.md, "Takeover").

A host's hints are its intents (`active/<host>/<id>`) and its intake markers. Each is
settled against the job's status: a job still running on the host is requeued (its
attempt counted), a committed one is published, anything else only loses the hint.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from daemon.bucket import keys, lease
from daemon.bucket.accept import JobCheck, accept_staged, adopt_marker, read_markers
from daemon.bucket.finish import RETRIES, canceled_final, publish, requeue
from daemon.bucket.status_io import read_status, swap_status
from daemon.spool.crashpoints import NEVER, CrashPoints


def settle_intent(store, job_id: str, epoch: int, owner: str, me: str, crash: CrashPoints = NEVER) -> None:
    """Brings the job an intent of `owner` at `epoch` names (mine, or a dead host's) to a
    state nobody needs to act on, then removes the intents. A swap lost to another host is
    read again: whoever won settled it. An intent ahead of its status stays: the claim it
    announced may still be applied by the server (its answer lost); being conditional on
    the queued status's ETag, it never can once the status moved on, and the intent goes."""
    for _ in range(RETRIES):
        now = read_status(store, job_id)
        if now is None:
            break
        if now.lease["epoch"] < epoch:
            return
        if now.lease["epoch"] > epoch or not lease.owned_by(now.status, owner) or lease.is_final(now.status):
            clear_stale_work(store, job_id, now.lease["epoch"])
            break
        if now.lease["final"] is not None:
            publish(store, now, crash, finisher=me)
            break
        if now.lease["cancel"]:  # asked before the attempt was cut short: it ends canceled
            committed = swap_status(store, now, lease.committed(now.status, canceled_final()))
            if committed is not None:
                publish(store, committed, crash, finisher=me)
                break
            continue
        if requeue(store, now, finisher=me, crash=crash) is not None:
            break
    store.delete([keys.intent_key(owner, job_id, epoch), keys.intent_key(me, job_id, epoch)])


def clear_stale_work(store, job_id: str, epoch: int) -> None:
    """Attempt results of epochs before the status's: never read again (an attempt whose
    host lost the job, or a publish cut short after its end state)."""
    stale = [e.key for e in store.list(f"{keys.WORK}/{job_id}")
             if (parsed := keys.parse_work_key(e.key)) and parsed[1] < epoch]
    store.delete(stale)


def clear_old_attempts(store, older_than: timedelta) -> None:
    """Attempt results left behind in `work/` (an upload that landed after its attempt was
    cleared, a fenced host cut off while it cleaned up): one LIST of work/, and for each job
    with keys older than `older_than`, its status read and the epochs before it removed."""
    cutoff = datetime.now(timezone.utc) - older_than
    jobs = {parsed[0] for e in store.list(keys.WORK)
            if e.last_modified < cutoff and (parsed := keys.parse_work_key(e.key))}
    for job_id in sorted(jobs):
        now = read_status(store, job_id)
        clear_stale_work(store, job_id, now.lease["epoch"] if now else 1 << 62)


def recover_own(store, me: str, check: JobCheck, crash: CrashPoints = NEVER) -> None:
    """At start, after a request failed, and every sweep period while no job of mine runs:
    every intent and intake marker of mine settled. The periodic sweep catches writes of
    mine whose answers were lost and that the server applied after the read-back (a claim
    or a marker landing late)."""
    for entry in list(store.list(keys.intents_folder(me))):
        parsed = keys.parse_intent(entry.key)
        if parsed is not None:
            settle_intent(store, parsed[1], parsed[2], me, me, crash)
    for marker, _ in read_markers(store):
        if marker.host == me:
            accept_staged(store, marker, check, crash)


def take_over(store, dead: str, me: str, check: JobCheck, crash: CrashPoints = NEVER) -> int:
    """A dead host's jobs and drops, settled by me: my intent first (takeover.moved), then
    its status swapped from the dead host's lease (one taker wins). How many hints it left."""
    found = 0
    for entry in list(store.list(keys.intents_folder(dead))):
        parsed = keys.parse_intent(entry.key)
        if parsed is None:
            continue
        found += 1
        _, job_id, epoch = parsed
        store.put(keys.intent_key(me, job_id, epoch), b"")
        crash.hit("takeover.moved")
        settle_intent(store, job_id, epoch, dead, me, crash)
    for marker, etag in read_markers(store):
        if marker.host == dead:
            found += 1
            mine = adopt_marker(store, marker, etag, me)
            if mine is not None:
                crash.hit("takeover.moved")
                accept_staged(store, mine, check, crash)
    return found


# ----------------------------------------------------------------------------- heartbeats

@dataclass
class HostWatch:
    """This host's heartbeat (a counter in `hosts/<me>.json`), and which other hosts' have
    not changed for `lease_seconds` on this observer's own monotonic clock (as on a folder
    spool: no two hosts' clocks are compared)."""

    me: str
    lease_seconds: float
    clock: Callable[[], float] = time.monotonic
    counter: int = 0
    boot: str = field(default_factory=lambda: secrets.token_hex(4))
    # host → (the ETag last seen, when it was first seen so on my clock)
    seen: dict[str, tuple[str | None, float]] = field(default_factory=dict)

    def beat(self, store) -> None:
        self.counter += 1
        body = {"host": self.me, "boot": self.boot, "counter": self.counter}  # no two lives beat alike
        store.put(keys.heartbeat_key(self.me), json.dumps(body).encode())

    def dead_hosts(self, store) -> dict[str, str | None]:
        """One LIST of hosts/: the hosts whose heartbeat stood still for lease_seconds (with
        the heartbeat's ETag, for removing it only if it still stands)."""
        now, dead = self.clock(), {}
        for entry in store.list(keys.HOSTS):
            host = keys.host_of_heartbeat(entry.key)
            if host is None or host == self.me:
                continue
            etag, since = self.seen.get(host, (None, now))
            if etag != entry.etag:
                self.seen[host] = (entry.etag, now)
            elif now - since >= self.lease_seconds:
                dead[host] = entry.etag
        return dead

    def bury(self, store, host: str, etag: str | None) -> None:
        """A dead host with nothing left to take over: its heartbeat removed unless it beat
        again meanwhile (then it is alive, and its own recovery walks its hints)."""
        if etag is not None:
            store.delete_if(keys.heartbeat_key(host), etag)
        self.seen.pop(host, None)
