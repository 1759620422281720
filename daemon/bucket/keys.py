"""The bucket spool's key layout (docs/bucket-spool.md, "Keys"): one function per kind of
key, all relative to the spool's prefix, and the parsing of the keys whose names carry
data (queue hints, intents, intake markers, attempt results, heartbeats).

Only `outbox/<id>/status.json` is truth; every other key the daemons write is a hint that
is checked against the status before anyone acts on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INBOX = "inbox"
OUTBOX = "outbox"
QUEUE = "queue"
ACTIVE = "active"
INTAKE = "intake"
WORK = "work"
HOSTS = "hosts"
STATUS_FILE = "status.json"
LOG_FILE = "log.jsonl"
INPUT_FOLDER = "input"

# SPEC §3's job ids, and host names: one key segment each.
_JOB_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
# queue/<rank>-<usec>-<id>.<epoch>: rank 000 (priority 100) … 200 (priority -100), usec 16 digits.
_HINT = re.compile(r"(?P<rank>\d{3})-(?P<usec>\d{16})-(?P<id>.+)\.(?P<epoch>\d+)")
MAX_PRIORITY = 100


def is_job_id(value: str) -> bool:
    return bool(_JOB_ID.fullmatch(value))


def check_host(host: str) -> str:
    if not _HOST.fullmatch(host):
        raise ValueError(f"host name {host!r} is not one key segment of [A-Za-z0-9._-] (1-100, not starting with '.')")
    return host


def _job(job_id: str) -> str:
    if not is_job_id(job_id):
        raise ValueError(f"job id {job_id!r} is not 1-64 of [A-Za-z0-9._-], not starting with '.'")
    return job_id


# ----------------------------------------------------------------------------- the job's own keys

def job_folder(job_id: str) -> str:
    return f"{OUTBOX}/{_job(job_id)}"


def status_key(job_id: str) -> str:
    """THE job: created If-None-Match, then written only by compare-and-swap."""
    return f"{job_folder(job_id)}/{STATUS_FILE}"


def input_key(job_id: str, name: str) -> str:
    """A user's file, copied here when the job is accepted."""
    return f"{job_folder(job_id)}/{INPUT_FOLDER}/{name}"


def result_key(job_id: str, name: str) -> str:
    """A result, copied here from work/ after the commit."""
    return f"{job_folder(job_id)}/{name}"


def log_key(job_id: str) -> str:
    return f"{job_folder(job_id)}/{LOG_FILE}"


# ----------------------------------------------------------------------------- queue hints

@dataclass(frozen=True, order=True)
class QueueHint:
    """queue/<rank>-<usec>-<id>.<epoch>: the job is queued at lease epoch `epoch`. Ordered
    as the keys are listed: priority, then first in first out."""

    rank: int
    usec: int
    job_id: str
    epoch: int

    @property
    def key(self) -> str:
        return queue_key(self.rank, self.usec, self.job_id, self.epoch)

    def at_epoch(self, epoch: int) -> "QueueHint":
        """The same place in the queue for a later epoch (a requeue keeps the job's turn)."""
        return QueueHint(self.rank, self.usec, self.job_id, epoch)


def rank_of(priority: int) -> int:
    """Higher priority lists first: 100 → 000, 0 → 100, -100 → 200."""
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority {priority} is outside -{MAX_PRIORITY}…{MAX_PRIORITY}")
    return MAX_PRIORITY - priority


def queue_key(rank: int, usec: int, job_id: str, epoch: int) -> str:
    return f"{QUEUE}/{rank:03d}-{usec:016d}-{_job(job_id)}.{epoch}"


def parse_queue_hint(key: str) -> QueueHint | None:
    """The hint a `queue/…` key names, or None for a key that is not one (never acted on)."""
    folder, _, name = key.partition("/")
    match = _HINT.fullmatch(name) if folder == QUEUE else None
    if match is None or not is_job_id(match["id"]):
        return None
    return QueueHint(int(match["rank"]), int(match["usec"]), match["id"], int(match["epoch"]))


# ----------------------------------------------------------------------------- the hosts' own keys

def intent_key(host: str, job_id: str, epoch: int) -> str:
    """active/<host>/<id>.<epoch>: <host> is (about to be) running the job at lease epoch
    <epoch> (its claim's). Named by epoch so that a DELETE of an old intent landing late
    never removes the intent of a later claim of the same job."""
    return f"{intents_folder(host)}/{_job(job_id)}.{epoch}"


def intents_folder(host: str) -> str:
    return f"{ACTIVE}/{check_host(host)}"


def parse_intent(key: str) -> tuple[str, str, int] | None:
    """(host, job id, epoch) of an `active/<host>/<id>.<epoch>` key, None for anything else."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != ACTIVE or not _HOST.fullmatch(parts[1]):
        return None
    job_id, _, epoch = parts[2].rpartition(".")
    if not is_job_id(job_id) or not epoch.isdigit():
        return None
    return parts[1], job_id, int(epoch)


def intake_key(drop: str) -> str:
    """intake/<drop>: one key per drop, its job key with '/' written %2F ('%' as %25)."""
    return f"{INTAKE}/{drop.replace('%', '%25').replace('/', '%2F')}"


def drop_of_intake(key: str) -> str:
    name = key.removeprefix(f"{INTAKE}/")
    return name.replace("%2F", "/").replace("%25", "%")


def work_folder(job_id: str, epoch: int) -> str:
    """work/<id>/<epoch>: an attempt's results before the commit makes them the job's."""
    return f"{WORK}/{_job(job_id)}/{epoch}"


def work_key(job_id: str, epoch: int, name: str) -> str:
    return f"{work_folder(job_id, epoch)}/{name}"


def parse_work_key(key: str) -> tuple[str, int] | None:
    """(job id, epoch) of a `work/<id>/<epoch>/<name>` key."""
    parts = key.split("/")
    if len(parts) < 4 or parts[0] != WORK or not is_job_id(parts[1]) or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def heartbeat_key(host: str) -> str:
    return f"{HOSTS}/{check_host(host)}.json"


def host_of_heartbeat(key: str) -> str | None:
    name = key.removeprefix(f"{HOSTS}/")
    host = name.removesuffix(".json")
    return host if name != host and _HOST.fullmatch(host) else None
