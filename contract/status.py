"""The status document (SPEC §4): `outbox/<id>/status.json` = `GET /api/v1/jobs/{id}`.

One source: `Status` is the shape; `new_status` builds documents from its defaults (plain
dicts, no validation on the hot path), and the OpenAPI schema is `Status`'s JSON schema.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.errors import ErrorCode

STATES = ("queued", "running", "completed", "failed", "canceled")
FINAL_STATES = frozenset({"completed", "failed", "canceled"})
# What a worker's progress message may change in a running job's status.
PROGRESS_KEYS = ("progress", "stage", "message", "step", "total_steps", "eta_seconds")
# What GET /api/v1/jobs lists of each status.
LIST_FIELDS = ("id", "kind", "state", "progress", "stage", "message", "error", "created_at", "finished_at", "labels")

Time = Annotated[str | None, Field(json_schema_extra={"format": "date-time"})]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def status_time(value) -> datetime | None:
    """A time as a status gives it (utc_now()'s form, or any ISO 8601 time: UTC when it
    names no zone); None for anything else, since whoever can write the spool can write a
    status. The one reader of status times (and of times a request gives in that form)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def epoch(value) -> float | None:
    """A status time in seconds since the epoch; None where status_time() reads none."""
    when = status_time(value)
    return None if when is None else when.timestamp()


def seconds_between(start, end) -> float | None:
    """The seconds from one status time to another; None unless both are times."""
    a, b = status_time(start), status_time(end)
    return None if a is None or b is None else (b - a).total_seconds()


class StatusError(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: ErrorCode
    message: str
    retryable: bool


class ResultFile(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    media_type: str
    url: str = Field(description="GET it (relative to the API)")


class Result(BaseModel):
    """What the kind made; kinds may add keys."""

    model_config = ConfigDict(extra="allow")

    files: list[ResultFile]
    video: dict[str, Any] | None = Field(None, description="duration, fps, width, height, codec, frames")
    audio: dict[str, Any] | None = None
    seconds: dict[str, Any] | None = Field(None, description="time spent per stage")
    accelerate: dict[str, Any] | None = Field(None, description=(
        "what ran of the model's accelerate options (SPEC §11): quality, compile, attention, cache with the blocks it skipped"))
    delivered: list[str] | None = Field(None, description="where the preset's deliver_to copies are (SPEC §10.3)")
    delivery_error: dict[str, Any] | None = Field(None, description="why delivery has not worked yet: message, attempts, next_attempt_at")


# A running job's live preview, beside its status: outbox/<id>/preview.jpg (SPEC §10.2).
PREVIEW_FILE = "preview.jpg"


class Preview(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str = Field(description="GET it (relative to the API): the latest preview.jpg")
    step: int = Field(ge=0, description="the denoising step (or frame) it shows")


class Status(BaseModel):
    """status.json (SPEC §4)."""

    model_config = ConfigDict(extra="allow")

    id: str
    kind: str | None = Field(None, description="null when the job file had none")
    state: Literal["queued", "running", "completed", "failed", "canceled"]
    progress: float = Field(0, ge=0, le=100, description="never decreases in an attempt")
    stage: str | None = None
    message: str | None = None
    step: int | None = None
    total_steps: int | None = None
    eta_seconds: float | None = Field(None, description=(
        "running: seconds until the job is done, every stage still to come counted (daemon/outbox/estimates.py)"))
    queue_position: int | None = Field(None, ge=1, description="queued jobs: 1 is next")
    attempt: int = Field(0, ge=0)
    max_attempts: int | None = None
    host: str | None = None
    device: str | None = None
    model: str | None = None
    created_at: Time = None
    started_at: Time = None
    finished_at: Time = None
    updated_at: Time = None
    error: StatusError | None = None
    result: Result | None = None
    labels: dict[str, Any] = Field(default_factory=dict, description="string values (an invalid job keeps what it was given)")
    job: dict[str, Any] = Field(default_factory=dict, description="the validated job, defaults filled in (an invalid job: id, kind, labels)")
    drop: str | None = Field(None, description="where the job came from, e.g. inbox/fox.json")
    preview: Preview | None = Field(None, description="while running: the latest live preview (SPEC §10.2)")


# Every key of a status document, in order, with its default.
_DEFAULTS = {name: (f.default if f.default_factory is None else None) for name, f in Status.model_fields.items()}


def new_status(job_id: str, job: dict, state: str, **fields) -> dict:
    """A complete status document for `job` (the validated job with its `_meta`)."""
    meta = job.get("_meta", {})
    doc = dict(_DEFAULTS)
    doc.update(
        id=job_id, kind=job.get("kind"), state=state, max_attempts=job.get("max_attempts"), model=job.get("model"),
        created_at=meta.get("created_at"), updated_at=utc_now(), labels=job.get("labels") or {},
        job={k: v for k, v in job.items() if k != "_meta"}, drop=meta.get("drop"),
    )
    doc.update(fields)
    return doc


def schemas(ref_template: str = "#/components/schemas/{model}") -> dict[str, dict]:
    """Status and the models it uses, as JSON schemas by name (for an OpenAPI document)."""
    found: dict[str, dict] = {}
    for model in (Status, Result, ResultFile, StatusError, Preview):
        schema = model.model_json_schema(ref_template=ref_template)
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found
