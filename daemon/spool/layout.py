"""The spool layout (SPEC §3) and the names of things in it.

A job's state is the folder it sits in:

    inbox/NAME…                      dropped by a user
    inbox/.api-<token>.<host>.part/  an upload to <host>'s API being received (then renamed in)
    active/<host>/.intake.<token>/   being accepted by <host> (payload/ inside)
    queue/<rank>-<usec>-<id>/        accepted, waiting; the name orders the queue
    active/<host>/<id>/              claimed by <host>, running
    active/<host>/.publish-<id>/     finished, results being moved to the outbox
    active/<host>/.retired-<id>.<t>/ published; being removed (recovery only removes it)
    outbox/<id>/                     status.json from acceptance on; results; input/ at the end
    corrupt/<name>                   what cannot be read (with <name>.reason.json), never deleted
    deliveries/<host>/<id>.json      a copy to a preset's deliver_to that <host> still owes
    webhooks/<host>/<webhook-id>.json a webhook event <host> still owes (daemon/webhooks/service.py)
    trash/<id>.<host>.<t>-<hex>/     an outbox folder past [outbox] keep_days, being removed

Every move between them is one rename, so a crash leaves each job in exactly one place.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon.spool.fsops import create_exclusive, mkdir_exclusive

JOB_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")

# Daemon-owned files inside a job folder (all dot-names, removed before it becomes input/).
JOB_DOC = ".job.json"  # the validated job, defaults filled in
FINAL_DOC = ".final.json"  # the end state, written before the publish rename
RESULTS_DIR = ".results"  # worker outputs, moved into outbox/<id>/ on publish
ATTEMPT_PREFIX = ".attempt-"  # one empty file per started attempt
DROP_DOC = ".drop.json"  # in an intake folder: what was dropped and where
RETIRED_PREFIX = ".retired-"  # a publish folder whose job is in the outbox: only removed
CANCEL_MARK = "cancel.requested"  # in outbox/<id>/: a cancel for whoever runs the job
SPOOL_ID = ".vidspool-spool"  # in the root: which spool this is (a vanished mount has none)
STATUS = "status.json"
API_STAGING = re.compile(r"\.api-(?P<token>[0-9a-f]{12})\.(?P<host>.+)\.part")  # inbox/<this>/: an upload
LOG = "log.jsonl"
INPUT_DIR = "input"


def is_valid_job_id(job_id: str) -> bool:
    return (
        0 < len(job_id) <= 64
        and set(job_id) <= JOB_ID_CHARS
        and not job_id.startswith(".")
    )


def sanitize_job_id(name: str) -> str:
    """A job id made from a dropped file's name: bad characters become '_'."""
    cleaned = "".join(c if c in JOB_ID_CHARS else "_" for c in name).lstrip(".")[:64]
    return cleaned or "job"


@dataclass(frozen=True, order=True)
class QueueName:
    """queue/<rank>-<usec>-<id>: listing the folder gives priority-then-FIFO order."""

    rank: int  # 100 - priority: higher priority sorts first
    enqueued_us: int
    job_id: str

    @classmethod
    def new(cls, job_id: str, priority: int, enqueued_us: int | None = None) -> "QueueName":
        return cls(100 - priority, enqueued_us or time.time_ns() // 1000, job_id)

    @classmethod
    def parse(cls, name: str) -> "QueueName | None":
        parts = name.split("-", 2)
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
            return None
        if not is_valid_job_id(parts[2]):
            return None
        return cls(int(parts[0]), int(parts[1]), parts[2])

    @property
    def priority(self) -> int:
        return 100 - self.rank

    def __str__(self) -> str:
        return f"{self.rank:03d}-{self.enqueued_us:016d}-{self.job_id}"


class Spool:
    """Paths of one spool root, as seen by daemon `host`."""

    def __init__(self, root: Path, host: str):
        self.root = Path(root).absolute()
        self.host = host
        self.inbox = self.root / "inbox"
        self.queue = self.root / "queue"
        self.active_root = self.root / "active"
        self.active = self.active_root / host
        self.outbox = self.root / "outbox"
        self.hosts = self.root / "hosts"
        self.corrupt = self.root / "corrupt"

    def create(self, presets: list[str] = ()) -> None:
        for d in (self.root, self.inbox, self.queue, self.active_root, self.active, self.outbox, self.hosts, self.corrupt,
                  self.deliveries.parent, self.deliveries, self.trash, self.webhooks.parent, self.webhooks):
            d.mkdir(mode=0o2775, exist_ok=True)
        for name in presets:
            (self.inbox / name).mkdir(mode=0o2775, exist_ok=True)

    def ensure_identity(self) -> str:
        """The spool's id, made on first use; it tells a live mount from the bare mount point."""
        path = self.root / SPOOL_ID
        create_exclusive(path, uuid.uuid4().hex.encode())
        return path.read_text().strip()

    def identity_problem(self, expected: str) -> str | None:
        """Why the root no longer looks like our spool (e.g. its mount went away), if so."""
        try:
            found = (self.root / SPOOL_ID).read_text().strip()
        except FileNotFoundError:
            return f"{self.root} has lost its {SPOOL_ID} file: the shared filesystem is not mounted there any more"
        if found != expected:
            return f"{self.root} is now a different spool ({SPOOL_ID} changed): a different filesystem is mounted there"
        return None

    @property
    def deliveries(self) -> Path:
        """deliveries/<host>/: a marker per delivery (daemon/delivery/service.py) this host still owes."""
        return self.root / "deliveries" / self.host

    @property
    def webhooks(self) -> Path:
        """webhooks/<host>/: a marker per webhook event (daemon/webhooks/service.py) this host still owes."""
        return self.root / "webhooks" / self.host

    @property
    def trash(self) -> Path:
        """trash/: outbox folders renamed here by retention (daemon/outbox/retention.py), then removed."""
        return self.root / "trash"

    def active_of(self, host: str) -> Path:
        return self.active_root / host

    def webhooks_of(self, host: str) -> Path:
        return self.webhooks.parent / host

    def deliveries_of(self, host: str) -> Path:
        return self.deliveries.parent / host

    @property
    def owed_roots(self) -> tuple[Path, ...]:
        """Folders with a subfolder per host of what that host owes (its jobs, webhook events,
        deliveries): a dead host's are taken over (daemon/jobs/recovery.py)."""
        return (self.active_root, self.webhooks.parent, self.deliveries.parent)

    def job_outbox(self, job_id: str) -> Path:
        return self.outbox / job_id

    def status_path(self, job_id: str) -> Path:
        return self.outbox / job_id / STATUS

    def api_staging(self, token: str) -> Path:
        """Where an upload to this host's API (or a personality) is received: named with the
        host, so that only this host's restart, or its death, removes it."""
        return self.inbox / f".api-{token}.{self.host}.part"

    def running_dir(self, job_id: str) -> Path:
        return self.active / job_id

    def publish_dir(self, job_id: str, host: str | None = None) -> Path:
        return self.active_of(host or self.host) / f".publish-{job_id}"

    def reserve_job_id(self, wanted: str) -> str:
        """Creates outbox/<id>/ exclusively; on collision tries wanted-2, wanted-3, …"""
        for candidate in candidate_ids(wanted):
            if mkdir_exclusive(self.outbox / candidate):
                return candidate

    # An id the API handed out before the drop was accepted: outbox/<id>/ holds a marker
    # named after the drop, which accept removes to take the id (unlink succeeds once).
    RESERVED_PREFIX = ".reserved-"

    def reserve_for_drop(self, wanted: str, drop_name: str) -> str:
        job_id = self.reserve_job_id(wanted)
        create_exclusive(self.outbox / job_id / f"{self.RESERVED_PREFIX}{drop_name}")
        return job_id

    def take_reservation(self, job_id: str, drop_name: str) -> bool:
        try:
            os.unlink(self.outbox / job_id / f"{self.RESERVED_PREFIX}{drop_name}")
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False

    def queued_names(self, unparsed: list[str] | None = None) -> list[QueueName]:
        """The queue in order; names that do not parse go to `unparsed` if given."""
        names = []
        with os.scandir(self.queue) as it:
            for entry in it:
                q = QueueName.parse(entry.name)
                if q is not None:
                    names.append(q)
                elif unparsed is not None:
                    unparsed.append(entry.name)
        names.sort()
        return names


def candidate_ids(wanted: str) -> Iterator[str]:
    """The ids a drop that wants `wanted` may get, in order: wanted, wanted-2, wanted-3, …
    (cut so that each stays within 64 characters)."""
    yield wanted
    n = 2
    while True:
        yield f"{wanted[: 64 - len(str(n)) - 1]}-{n}"
        n += 1


def attempts_started(job_dir: Path) -> int:
    return sum(1 for n in os.listdir(job_dir) if n.startswith(ATTEMPT_PREFIX))
