"""Stage and accept on a bucket spool: a complete drop in `inbox/` becomes a job
(docs/bucket-spool.md, "Stage and accept").

    find_drops      LIST inbox/, GET each job file: the drops whose inputs are all there
    stage_drop      intake/<drop> created If-None-Match        → stage.intake_made
    accept_staged   outbox/<id>/status.json created            → accept.id_reserved (accept.invalid_final)
                    each input copied into outbox/<id>/input/  → stage.media_moved
                    queue/<rank>-<usec>-<id>.0                 → accept.queued
                    the drop's inbox keys deleted If-Match     → stage.claimed
                    the intake marker deleted

Every step after the marker is idempotent, and the marker says whose it is: a crash
anywhere is finished by `accept_staged` again (the host's recovery, or a taker's).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from contract.errors import JobError

from daemon.bucket import keys, lease
from daemon.bucket.errors import NotFound, PreconditionFailed, Unavailable
from daemon.bucket.location import check_key
from daemon.bucket.status_io import JSON, Held, create_status, read_status
from daemon.spool.crashpoints import NEVER, CrashPoints

JOB_FILE = "job.json"
JOB_SUFFIX = ".json"
CANCEL_SUFFIX = ".cancel"
MAX_JOB_BYTES = 1024 * 1024
# The ids tried for one drop: NAME, NAME-2 … NAME-<this>.
MAX_ID_CANDIDATES = 1000

# The daemon's job check: the job file's object → the validated job (with `_meta`), or a
# JobError naming what is wrong.
JobCheck = Callable[[dict], dict]


@dataclass(frozen=True)
class Drop:
    """A complete drop: its job file, the inputs it names (inbox key → name inside the
    job's input/), and the ETag of each as listed."""

    job_key: str
    name: str
    job_body: bytes
    etags: dict[str, str]
    inputs: dict[str, str]


@dataclass(frozen=True)
class Marker:
    """intake/<drop>: which host accepts the drop, with which token, and what it saw."""

    host: str
    token: str
    drop: str
    base_id: str
    place: str
    etags: dict[str, str]
    inputs: dict[str, str]

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, body: bytes) -> "Marker":
        return cls(**json.loads(body))

    @property
    def key(self) -> str:
        return keys.intake_key(self.drop)


# ----------------------------------------------------------------------------- finding drops

def drop_name(job_key: str) -> str | None:
    """NAME of `inbox/NAME.json` or `inbox/NAME/job.json`; None for any other key."""
    parts = job_key.split("/")
    if len(parts) == 2 and parts[1].endswith(JOB_SUFFIX) and len(parts[1]) > len(JOB_SUFFIX):
        return parts[1][: -len(JOB_SUFFIX)]
    if len(parts) == 3 and parts[2] == JOB_FILE:
        return parts[1]
    return None


def named_inputs(job_key: str, doc: object) -> dict[str, str]:
    """inbox key → name, for each file the job's `inputs` names (relative to the job file's
    folder); names that are not plain relative keys are left to the job check to refuse."""
    base = job_key.rsplit("/", 1)[0]
    found: dict[str, str] = {}
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    for value in (inputs.values() if isinstance(inputs, dict) else ()):
        for name in (value if isinstance(value, list) else [value]):
            try:
                found[f"{base}/{check_key(name)}"] = name
            except (ValueError, TypeError):
                continue
    return found


def find_drops(store) -> tuple[list[Drop], list[tuple[str, str]]]:
    """One LIST of inbox/: the complete drops (job file there, every input it names there),
    and the `inbox/ID.cancel` files as (key, ETag)."""
    listed = {e.key: e.etag for e in store.list(keys.INBOX)}
    cancels = [(k, etag) for k, etag in listed.items()
               if k.count("/") == 1 and k.endswith(CANCEL_SUFFIX)]
    drops = []
    for job_key in sorted(k for k in listed if drop_name(k) is not None):
        got = store.get(job_key, max_bytes=MAX_JOB_BYTES)
        if got is None:
            continue
        body, etag = got
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None  # complete as it is: the job check fails it
        inputs = named_inputs(job_key, doc)
        if all(k in listed for k in inputs):
            etags = {job_key: etag, **{k: listed[k] for k in inputs}}
            drops.append(Drop(job_key, drop_name(job_key), body, etags, inputs))
    return drops, cancels


# ----------------------------------------------------------------------------- staging

def base_id(drop: Drop) -> str:
    """The job's own `id` when it has a valid one, else NAME (characters no id may hold → '_')."""
    try:
        own = json.loads(drop.job_body).get("id")
    except (ValueError, AttributeError):
        own = None
    if isinstance(own, str) and keys.is_job_id(own):
        return own
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in drop.name).lstrip(".")[:60]
    return cleaned or "job"


def queue_place(drop: Drop) -> str:
    """`<rank>-<usec>` of the job's queue hints: its priority, then now."""
    try:
        priority = json.loads(drop.job_body).get("priority", 0)
        rank = keys.rank_of(priority if isinstance(priority, int) else 0)
    except (ValueError, AttributeError):
        rank = keys.rank_of(0)
    return f"{rank:03d}-{time.time_ns() // 1000:016d}"


def stage_drop(store, drop: Drop, host: str, crash: CrashPoints = NEVER) -> Marker | None:
    """stage.intake_made: the intake marker, created If-None-Match; None when another host
    is accepting the drop. A crash after: the marker says `host`, whose recovery redoes it."""
    marker = Marker(host, secrets.token_hex(8), drop.job_key, base_id(drop), queue_place(drop),
                    drop.etags, drop.inputs)
    try:
        made = store.create(marker.key, marker.encode(), JSON)
    except Unavailable:
        got = store.get(marker.key)  # the create's answer was lost: ours if our token is there
        made = got is not None and Marker.decode(got[0]).token == marker.token
    if not made:
        return None
    crash.hit("stage.intake_made")
    return marker


# ----------------------------------------------------------------------------- accepting

def first_status(marker: Marker, job_id: str, body: bytes, check: JobCheck) -> dict:
    """The job's status at epoch 0: queued, or failed naming what is wrong with the job."""
    try:
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise JobError("invalid_job", f"{marker.drop} is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise JobError("invalid_job", f"{marker.drop} does not hold a JSON object")
        job = check(doc)
        job.setdefault("_meta", {}).update(drop=marker.drop)
        return lease.accepted(job_id, job, marker.token, marker.place)
    except JobError as exc:
        job = {"_meta": {"drop": marker.drop}}
        return lease.accepted(job_id, job, marker.token, marker.place, error=exc.to_status())


def reserve_id(store, marker: Marker, body: bytes | None, check: JobCheck) -> Held | None:
    """The job's status, created under the first free id of NAME, NAME-2 …, or found again by
    the marker's token (an earlier try). None when the job file is gone and no status of
    ours exists (the drop was withdrawn before it was accepted)."""
    for n in range(1, MAX_ID_CANDIDATES + 1):
        job_id = marker.base_id if n == 1 else f"{marker.base_id[:60]}-{n}"
        if body is None:
            there = read_status(store, job_id)
            if there is None:
                return None
            if there.lease["token"] == marker.token:
                return there
            continue
        held = create_status(store, job_id, first_status(marker, job_id, body, check))
        if held is not None:
            return held
    raise RuntimeError(f"{marker.drop}: {MAX_ID_CANDIDATES} ids taken")


def job_body(store, marker: Marker) -> bytes | None:
    """The job file as the marker saw it; None when it is gone or was replaced since (a new
    drop, found on a later turn)."""
    try:
        got = store.get(marker.drop, etag=marker.etags[marker.drop], max_bytes=MAX_JOB_BYTES)
    except PreconditionFailed:
        return None
    return got[0] if got else None


def copy_inputs(store, marker: Marker, job_id: str, crash: CrashPoints) -> None:
    """stage.media_moved (each): server-side copies, conditional on the ETag the marker saw
    where the server honours it. A source already gone was copied by an earlier try."""
    for src, name in marker.inputs.items():
        dst = keys.input_key(job_id, name)
        try:
            store.copy(src, dst, if_match=marker.etags[src])
        except PreconditionFailed:
            store.copy(src, dst)  # replaced since it was listed: the job takes its current version
        except NotFound:
            continue
        crash.hit("stage.media_moved")


def accept_staged(store, marker: Marker, check: JobCheck, crash: CrashPoints = NEVER) -> str | None:
    """Accepts a staged drop, from wherever an earlier try stopped: its job id, or None when
    the drop is gone (withdrawn, or accepted by another host) and no status is ours."""
    body = job_body(store, marker)
    held = reserve_id(store, marker, body, check)
    if held is None:
        store.delete([marker.key])
        return None
    queued = held.status["state"] == "queued"
    crash.hit("accept.id_reserved" if queued else "accept.invalid_final")
    copy_inputs(store, marker, held.job_id, crash)
    if queued and held.lease["epoch"] == 0:
        rank, usec = (int(p) for p in marker.place.split("-"))
        store.put(keys.queue_key(rank, usec, held.job_id, 0), b"")
        crash.hit("accept.queued")
    for key, etag in marker.etags.items():
        store.delete_if(key, etag)
    crash.hit("stage.claimed")
    store.delete([marker.key])
    return held.job_id


def accept_drop(store, drop: Drop, host: str, check: JobCheck, crash: CrashPoints = NEVER) -> str | None:
    """A complete drop, staged and accepted: its job id, or None when another host has it.
    The job file is read again after the marker is made: a listing taken before another
    host accepted the drop and removed its marker finds it gone (else: a second job)."""
    marker = stage_drop(store, drop, host, crash)
    return None if marker is None else accept_staged(store, marker, check, crash)


def read_markers(store) -> list[tuple[Marker, str]]:
    """Every intake marker with its ETag (recovery and takeover only)."""
    found = []
    for entry in store.list(keys.INTAKE):
        got = store.get(entry.key)
        if got is not None:
            found.append((Marker.decode(got[0]), got[1]))
    return found


def adopt_marker(store, marker: Marker, etag: str, host: str) -> Marker | None:
    """A dead host's marker, swapped to `host` (one taker wins); None when another did."""
    mine = Marker(host, marker.token, marker.drop, marker.base_id, marker.place, marker.etags, marker.inputs)
    return mine if store.replace(mine.key, mine.encode(), etag, JSON) is not None else None
