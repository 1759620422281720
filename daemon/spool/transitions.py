"""The moves of a job between spool folders, each one rename, each safe to redo.

accept:   active/<me>/.intake.<t>/payload  →  queue/<rank>-<usec>-<id>   (or straight to publish if invalid)
claim:    queue/<name>                      →  active/<me>/<id>
requeue:  active/<any>/<id>                 →  queue/<name>
publish:  active/<me>/<id>                  →  active/<me>/.publish-<id>  →  outbox/<id>/input

The publish rename is the commit point: a host that lost its lease (another host renamed
its job folder away) fails that rename and publishes nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from daemon.spool.crashpoints import NEVER, CrashPoints
from daemon.spool.fsops import atomic_write_json, create_exclusive, move, read_json
from daemon.spool.layout import (
    ATTEMPT_PREFIX,
    CANCEL_MARK,
    FINAL_DOC,
    INPUT_DIR,
    JOB_DOC,
    LOG,
    RESULTS_DIR,
    RETIRED_PREFIX,
    QueueName,
    Spool,
    attempts_started,
    is_valid_job_id,
)
from contract.status import FINAL_STATES, PREVIEW_FILE, new_status, utc_now
from daemon.spool.status import StatusWriter
from contract.errors import ErrorCode, JobError
from contract.files import file_sha256, media_type

log = structlog.get_logger()

# A failed drop's error message is cut to this many characters (status.json, logs).
MAX_ERROR_MESSAGE = 2000


@dataclass
class StagedDrop:
    """A drop staged out of the inbox and read (daemon/jobs/drops.py): everything accept
    needs to queue it or end it failed, so that the moves never read a drop themselves."""

    staging: Path  # active/<me>/.intake.<t>/, holding payload/ and the drop doc
    info: dict  # the drop doc: form (json, folder, bare, link), name, drop, preset, inputs
    default_id: str  # the id the drop's name gives when its job asks for none
    doc: dict  # the dropped job document ({} when there is none)
    error: JobError | None  # why the drop cannot run, if it cannot
    job: dict | None = None  # the validated job, when it can
    webhook: dict | None = None  # {"webhook": …} a failed drop still calls (its preset's or the default)
    validation_crash: BaseException | None = None  # the validator itself raised (error says internal)

    @property
    def payload(self) -> Path:
        return self.staging / "payload"


class Transitions:
    def __init__(self, spool: Spool, statuses: StatusWriter, crash: CrashPoints = NEVER):
        self.spool = spool
        self.statuses = statuses
        self.crash = crash  # named steps a test may kill the daemon at (daemon/spool/crashpoints.py)

    # -- accept ------------------------------------------------------------------
    def accept(self, drop: StagedDrop) -> QueueName | None:
        """Turns a staged drop into a queued job (or a failed one). Safe to call again
        after a crash: the reserved id is remembered in the staging folder."""
        staging, payload, info = drop.staging, drop.payload, drop.info
        error = None
        if info["form"] == "folder" and read_id_marker(staging) is None:  # a retry finds its own .job.json there
            error = _set_aside_daemon_names(payload)
        error = error or drop.error
        job_id = self._job_id(staging, drop.doc, drop.default_id, info)
        self.crash.hit("accept.id_reserved")
        doc = drop.doc
        # Only what is sure to be plain goes into a failed job's status (not 900-deep "labels").
        job: dict = {"id": job_id, "kind": doc.get("kind") if isinstance(doc.get("kind"), str) else None,
                     "labels": _plain_labels(doc.get("labels")), **(drop.webhook or {})}
        if error is None:
            job = dict(drop.job)
        elif error is drop.error and drop.validation_crash is not None:
            log.error("job.validation_crashed", job_id=job_id, exc_info=drop.validation_crash)
        job["id"] = job_id
        job["_meta"] = self._meta(info)
        if error is not None:
            self._end_drop(staging, job, error)
            return None

        atomic_write_json(payload / JOB_DOC, job)
        self.crash.hit("accept.job_written")
        qn = QueueName.new(job_id, job["priority"], job["_meta"]["enqueued_us"])
        self.statuses.write(new_status(job_id, job, "queued", max_attempts=job["max_attempts"]))
        self.crash.hit("accept.status_queued")
        move(payload, self.spool.queue / str(qn))
        self.crash.hit("accept.queued")
        shutil.rmtree(staging, ignore_errors=True)
        log.info("job.queued", job_id=job_id, kind=job["kind"], priority=job["priority"], drop=info.get("drop"))
        return qn

    @staticmethod
    def discard(staging: Path) -> None:
        """A staging folder whose payload is gone (queued or ended before a crash)."""
        shutil.rmtree(staging, ignore_errors=True)

    def fail_staged(self, drop: StagedDrop, message: str) -> None:
        """Ends a staged drop that accept keeps failing on: `internal`, its files kept."""
        job = {"id": self._job_id(drop.staging, drop.doc, drop.default_id, drop.info), "kind": None, "labels": {},
               "_meta": self._meta(drop.info), **(drop.webhook or {})}
        self._end_drop(drop.staging, job, JobError(ErrorCode.INTERNAL, message))

    def _job_id(self, staging: Path, doc: dict, default_id: str, info: dict) -> str:
        """The drop's id, reserved once: a marker in the staging folder remembers it across crashes."""
        job_id = read_id_marker(staging)
        if job_id is None:
            wanted = doc.get("id") if isinstance(doc.get("id"), str) else None
            if wanted and is_valid_job_id(wanted) and self.spool.take_reservation(wanted, info["name"]):
                job_id = wanted  # reserved by the API when it answered the POST
            else:
                job_id = self.spool.reserve_job_id(wanted if wanted and is_valid_job_id(wanted) else default_id)
            write_id_marker(staging, job_id)
        return job_id

    def _meta(self, info: dict) -> dict:
        return {"created_at": utc_now(), "enqueued_us": time.time_ns() // 1000, "drop": info.get("drop"),
                "accepted_by": self.spool.host}

    def _end_drop(self, staging: Path, job: dict, error: JobError) -> None:
        """Publishes a drop that cannot run as failed, with the user's files in its input/."""
        job_id, payload = job["id"], staging / "payload"
        if len(error.message) > MAX_ERROR_MESSAGE:  # 50,000 unknown keys need not all be listed
            error = JobError(error.code, f"{error.message[:MAX_ERROR_MESSAGE]}… ({len(error.message)} characters in all)")
        log.warning("job.invalid", job_id=job_id, code=str(error.code), message=error.message, drop=job["_meta"].get("drop"))
        atomic_write_json(payload / JOB_DOC, job)
        self._write_final(payload, "failed", error=error.to_status())
        self.crash.hit("accept.invalid_final")
        publish = self.spool.publish_dir(job_id)
        move(payload, publish)
        self.crash.hit("accept.invalid_published")
        shutil.rmtree(staging, ignore_errors=True)
        self.finish_publish(publish)

    # -- claim -------------------------------------------------------------------
    def claim(self, qn: QueueName) -> Path | None:
        """Renames queue/<qn> to active/<me>/<id>; the folder is ours if that worked and
        it is really there afterwards (the confirmation some mounts need)."""
        dst = self.spool.running_dir(qn.job_id)
        if not move(self.spool.queue / str(qn), dst):
            return None
        self.crash.hit("claim.moved")
        if not (dst / JOB_DOC).is_file():
            log.error("claim.unconfirmed", job_id=qn.job_id)
            return None
        return dst

    def start_attempt(self, job_dir: Path) -> int:
        n = attempts_started(job_dir) + 1
        while not create_exclusive(job_dir / f"{ATTEMPT_PREFIX}{n}"):
            n += 1
        self.crash.hit("attempt.marked")
        return n

    def cancel_requested(self, job_id: str) -> bool:
        return os.path.exists(self.spool.job_outbox(job_id) / CANCEL_MARK)

    # -- requeue -----------------------------------------------------------------
    def requeue(self, job_dir: Path, job_id: str, reason: str, undo_attempt: int | None = None) -> bool:
        """Puts a claimed job back in the queue (its original place in line)."""
        job = read_json(job_dir / JOB_DOC)
        if job is None:
            if job_dir.exists():  # gone means another host requeued it first
                log.error("requeue.no_job_doc", job_id=job_id, path=str(job_dir))
            return False
        if undo_attempt is not None:
            try:
                os.unlink(job_dir / f"{ATTEMPT_PREFIX}{undo_attempt}")
            except FileNotFoundError:
                pass
        shutil.rmtree(job_dir / RESULTS_DIR, ignore_errors=True)
        self.crash.hit("requeue.cleared")
        qn = QueueName.new(job_id, job.get("priority", 0), job["_meta"]["enqueued_us"])
        attempts = attempts_started(job_dir)
        if not move(job_dir, self.spool.queue / str(qn)):
            return False
        # From here another host may claim it: our last progress must never be flushed. A
        # crash (or a full disk) before the next line leaves a queued job whose status still
        # says running until it is claimed again; the status is written after the move so
        # that a host that lost the job never writes it.
        self.statuses.forget(job_id)
        self.crash.hit("requeue.moved")
        self.statuses.write(
            new_status(job_id, job, "queued", attempt=attempts, message=reason,
                       created_at=job["_meta"].get("created_at"))
        )
        log.info("job.requeued", job_id=job_id, reason=reason, attempts=attempts)
        return True

    # -- publish -----------------------------------------------------------------
    def _write_final(self, job_dir: Path, state: str, **fields) -> None:
        atomic_write_json(job_dir / FINAL_DOC, {"state": state, "finished_at": utc_now(), **fields})

    def publish(self, job_dir: Path, job_id: str, state: str, **fields) -> bool:
        """Ends a job we own: records the end state, then the commit rename."""
        self._write_final(job_dir, state, **fields)
        self.crash.hit("commit.final_written")
        return self.commit(job_dir, job_id)

    def commit(self, job_dir: Path, job_id: str) -> bool:
        """The commit rename of a job whose end state is recorded; False if it was lost."""
        publish = self.spool.publish_dir(job_id)
        if not move(job_dir, publish):
            self.statuses.forget(job_id)  # not ours any more: never write its status
            log.warning("job.lost", job_id=job_id, reason="another host took the job; not publishing")
            return False
        self.crash.hit("commit.renamed")
        self.finish_publish(publish)
        return True

    def finish_publish(self, publish: Path) -> None:
        """Moves results into outbox/<id>/, the user's files into input/, writes the final
        status, then retires the publish folder with one rename before removing it.
        Idempotent: recovery calls it again for a publish a crash interrupted."""
        job_id = publish.name[len(".publish-"):]
        out = self.spool.job_outbox(job_id)
        out.mkdir(exist_ok=True)
        final = read_json(publish / FINAL_DOC)
        if final is None:
            current = self.statuses.current(job_id) or {}
            if current.get("state") in FINAL_STATES:  # already published: never rewrite an end state
                log.warning("publish.final_kept", job_id=job_id, state=current["state"],
                            reason=f"{FINAL_DOC} is gone but the status is final")
                self._retire(publish, job_id)
                return
            final = {"state": "failed", "error": JobError(ErrorCode.INTERNAL, "end state lost").to_status()}
        job = read_json(publish / JOB_DOC) or {"id": job_id}
        results = publish / RESULTS_DIR
        if results.is_dir():
            for name in os.listdir(results):
                if not name.startswith("."):
                    os.replace(results / name, out / name)
        self.crash.hit("publish.results_moved")
        previous = self.statuses.current(job_id) or {}
        doc = new_status(job_id, job, final["state"])
        for key in ("attempt", "host", "device", "started_at", "progress", "stage", "model"):
            if previous.get(key) is not None:
                doc[key] = previous[key]
        doc["created_at"] = previous.get("created_at") or doc["created_at"]
        doc["finished_at"] = final.get("finished_at")
        doc["error"] = final.get("error")
        doc["message"] = final.get("message") or (final.get("error") or {}).get("message")
        if final["state"] == "completed":
            doc["progress"] = 100
            doc["result"] = self._result(job_id, out, final.get("result") or {})
            if previous.get("state") == "completed":  # a publish redone: its delivery's report stays
                said = previous.get("result") or {}
                doc["result"].update({k: said[k] for k in ("delivered", "delivery_error") if said.get(k) is not None})
        doc["attempt"] = max(doc.get("attempt") or 0, attempts_started(publish))
        # The user's files go to input/ before the final status, and the publish folder
        # (with .final.json) stays until that status is written: a crash anywhere in
        # between is finished by the next finish_publish.
        inputs = out / INPUT_DIR
        inputs.mkdir(exist_ok=True)
        for name in os.listdir(publish):
            if not _is_daemon_file(name):
                os.replace(publish / name, inputs / name)
        self.crash.hit("publish.inputs_moved")
        (out / PREVIEW_FILE).unlink(missing_ok=True)  # a crashed attempt's live preview (the worker removes its own)
        self.statuses.write(doc)
        # One end event per job: a publish that recovery finishes again logs it only if the
        # crash came before it was logged (the job's own log is written first).
        if previous.get("state") not in FINAL_STATES or not self._end_logged(out, final["state"]):
            log.info(f"job.{final['state']}", job_id=job_id, error=(final.get("error") or {}).get("code"))
        self.crash.hit("publish.status_written")
        self._retire(publish, job_id)

    @staticmethod
    def _end_logged(out: Path, state: str) -> bool:
        """Whether the job's own log (outbox/<id>/log.jsonl) holds its end event."""
        try:
            lines = (out / LOG).read_text(errors="replace").splitlines()
        except OSError:
            return False
        for line in lines:
            try:
                if json.loads(line).get("event") == f"job.{state}":
                    return True
            except (json.JSONDecodeError, AttributeError):
                continue
        return False

    def _retire(self, publish: Path, job_id: str) -> None:
        """One rename ends the publish (recovery only removes a retired folder, never reads
        it), then the folder is removed."""
        retired = publish.with_name(f"{RETIRED_PREFIX}{job_id}.{secrets.token_hex(4)}")
        os.rename(publish, retired)
        self.crash.hit("publish.retired")
        self.remove_retired(retired)

    def remove_retired(self, retired: Path) -> None:
        try:
            os.unlink(retired / FINAL_DOC)
        except FileNotFoundError:
            pass
        self.crash.hit("publish.removing")
        shutil.rmtree(retired, ignore_errors=True)

    def _result(self, job_id: str, out: Path, result: dict) -> dict:
        files = []
        for f in result.get("files") or []:
            path = out / f["name"]
            if not path.is_file():
                continue
            files.append({
                "name": f["name"],
                "size": path.stat().st_size,
                "sha256": f.get("sha256") or file_sha256(path),
                "media_type": f.get("media_type") or media_type(f["name"]),
                "url": self.statuses.file_url(job_id, f["name"]),
            })
        return {**result, "files": files}


def write_id_marker(staging: Path, job_id: str) -> None:
    create_exclusive(staging / f".id-{job_id}")


def read_id_marker(staging: Path) -> str | None:
    for name in os.listdir(staging):
        if name.startswith(".id-"):
            return name[4:]
    return None


def _is_daemon_file(name: str) -> bool:
    return name.startswith((ATTEMPT_PREFIX, ".id-")) or name in (JOB_DOC, FINAL_DOC, RESULTS_DIR)


def _set_aside_daemon_names(payload: Path) -> JobError | None:
    """A dropped folder's own files named like the daemon's (.job.json, .attempt-1 …) would be
    overwritten or miscounted: each is renamed to "dropped" + NAME (kept) and the job fails."""
    clashes = sorted(n for n in os.listdir(payload) if _is_daemon_file(n))
    if not clashes:
        return None
    kept = []
    for name in clashes:
        n, new = 1, f"dropped{name}"  # no leading dot: not a daemon name, so it reaches input/
        while os.path.lexists(payload / new):
            n, new = n + 1, f"dropped{n + 1}{name}"
        os.rename(payload / name, payload / new)
        kept.append(f"{name!r} as {new!r}")
    return JobError(ErrorCode.INVALID_JOB, (
        f"the folder holds names vidspool keeps for its own files; kept in input/: {', '.join(kept)}; rename them"))


def _plain_labels(labels) -> dict:
    """An invalid job's labels as given, if they are flat (a status can always hold them:
    never 900-deep); else none."""
    if isinstance(labels, dict) and len(labels) <= 1000 and all(
            isinstance(v, (str, int, float, bool)) or v is None for v in labels.values()):
        return labels
    return {}
