"""Deleting an ended job's results (`DELETE /api/v1/jobs/{id}/results`, `vidspool purge ID`,
Visualizr's asset DELETE): the files its status lists go; status.json, log.jsonl and the
inputs stay, and the status says what was deleted, when and by whom.

Safe across hosts and crashes: only ended jobs (no host writes their folder any more); one
deleter at a time by `mkdir outbox/<id>/.deleting` (create-new; a lock older than
STALE_LOCK_SECONDS is a crashed deleter's and is taken over); the status is rewritten first
(`result.files` emptied, `result.deleted` naming them), then the files are unlinked, so a
crash leaves at worst files the status no longer lists, which the next delete removes.
Retention (daemon/outbox/retention.py) takes the same lock before it moves a whole folder away, and
uses take_lock for its sweep lease too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from contract.status import FINAL_STATES, utc_now
from daemon.spool.fsops import atomic_write_json, mkdir_exclusive, remove_tree
from daemon.spool.job_files import JobFolder, plain_name
from daemon.spool.layout import STATUS, Spool

LOCK = ".deleting"
STALE_LOCK_SECONDS = 60.0


def delete_results(spool: Spool, job_id: str, by: str) -> tuple[str, int]:
    """("deleted", freed bytes) | ("already_deleted", 0) | ("not_found", 0) | ("not_ended", 0)
    | ("busy", 0) (another deleter holds the lock). The folder is opened without following a
    link and the files are removed in it by plain name only (daemon/spool/job_files.py)."""
    job = JobFolder.open(spool, job_id)
    if job is None:
        return "not_found", 0
    with job:
        return _delete_in(spool.job_outbox(job_id), job, by)


def _delete_in(folder: Path, job: JobFolder, by: str) -> tuple[str, int]:
    doc = job.status()
    if doc is None:
        return "not_found", 0
    if doc.get("state") not in FINAL_STATES:
        return "not_ended", 0
    try:
        if not take_lock(folder / LOCK):
            return "busy", 0
    except FileNotFoundError:  # retention removed the whole folder meanwhile
        return "not_found", 0
    try:
        doc = job.status() or doc  # as it is now that we hold the lock
        result = doc.get("result") or {}
        deleted = result.get("deleted")
        if deleted:
            for name in deleted.get("files") or []:  # what a crashed deleter left
                job.unlink(name)
            return "already_deleted", 0
        names = [f["name"] for f in result.get("files") or [] if isinstance(f, dict) and plain_name(f.get("name"))
                 and f["name"] != STATUS]
        freed = sum(job.size(n) for n in names)
        doc["result"] = {**result, "files": [],
                         "deleted": {"at": utc_now(), "by": by, "files": names, "freed_bytes": freed}}
        doc["updated_at"] = utc_now()
        atomic_write_json(folder / STATUS, doc, fsync=True)
        for name in names:
            job.unlink(name)
        return "deleted", freed
    finally:
        release_lock(folder / LOCK)


def take_lock(lock: Path, stale_seconds: float = STALE_LOCK_SECONDS, owner: str = "") -> bool:
    """mkdir `lock` (create-new): True if this call holds it now, False if someone else does.
    A lock untouched for stale_seconds is a crashed holder's and is taken over. `owner`
    (who, since when) is written inside for people who find it. FileNotFoundError: the
    folder it would be in is gone."""
    for _ in range(2):
        if mkdir_exclusive(lock):
            if owner:
                (lock / "owner").write_text(owner)
            return True
        try:
            if time.time() - os.stat(lock).st_mtime < stale_seconds:
                return False
            remove_tree(lock)  # a holder that crashed
        except FileNotFoundError:
            pass
    return False


def release_lock(lock: Path) -> None:
    remove_tree(lock)
