"""What must hold before a claimed job may start, and the run message a worker gets.

The arbiter claims; this says whether the job runs, ends (canceled, failed) or cannot be
read at all (quarantined) — checked again at start because the queue may have waited
through a reload, a cancel or crashed attempts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from contract.errors import ErrorCode, JobError
from contract.kinds import KindSpec
from contract.messages import RunJob
from contract.status import PREVIEW_FILE
from daemon.config import Settings
from daemon.spool.fsops import read_json
from daemon.jobs.ends import canceled_error
from daemon.jobs.jobfile import resolve_inputs
from daemon.spool.layout import JOB_DOC, RESULTS_DIR, Spool, attempts_started


@dataclass(frozen=True)
class Start:
    job: dict
    inputs: dict[str, list[Path]]
    model_config: dict | None


@dataclass(frozen=True)
class End:
    state: str
    error: dict


@dataclass(frozen=True)
class Unreadable:
    reason: str


def before_start(job_dir: Path, kinds: Mapping[str, KindSpec], settings: Settings,
                 cancel_requested: bool) -> Start | End | Unreadable:
    job = read_json(job_dir / JOB_DOC)
    if job is None or not isinstance(job.get("kind"), str) or "_meta" not in job:
        return Unreadable(f"claimed job whose {JOB_DOC} cannot be read")
    if cancel_requested:
        return End("canceled", canceled_error())
    used = attempts_started(job_dir)
    if used >= job["max_attempts"]:
        return End("failed", JobError(ErrorCode.WORKER_CRASHED, f"all {used} attempts crashed").to_status())
    kind = kinds.get(job["kind"])
    try:
        if kind is None:
            raise JobError(ErrorCode.INVALID_JOB, f"kind {job['kind']!r} is not installed")
        inputs = resolve_inputs(job.get("inputs") or {}, job_dir, kind, settings.limits.input_bytes)
        model_config = None
        if job.get("model"):
            entry = settings.models.get(job["model"])
            if entry is None:  # taken out of the registry by a reload while queued
                raise JobError(ErrorCode.MODEL_NOT_FOUND, f"model {job['model']!r} is no longer in the model registry")
            model_config = entry.model_dump(mode="json")
    except JobError as exc:
        return End("failed", exc.to_status())
    return Start(job, inputs, model_config)


def run_message(job_id: str, start: Start, attempt: int, host: str, job_dir: Path, scratch_root: Path,
                settings: Settings) -> RunJob:
    return RunJob(
        job_id=job_id, job={k: v for k, v in start.job.items() if k != "_meta"},
        inputs={k: [str(p) for p in v] for k, v in start.inputs.items()},
        host=host, attempt=attempt, results_dir=str(job_dir / RESULTS_DIR),
        scratch_dir=str(scratch_root / f"{job_id}.{attempt}"), limits=settings.limits.model_dump(),
        model_config=start.model_config, voices=settings.voice_configs(),
        model_roots=(str(settings.registry.dir.resolve()),),
        preview={"path": str(Spool(settings.spool.root, host).job_outbox(job_id) / PREVIEW_FILE),
                 **settings.preview.model_dump()},
    )
