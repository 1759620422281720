"""The job file, version 1 (SPEC §3): parse, validate, fill defaults, confine inputs."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from daemon.config import PresetConfig, Settings, WebhookTarget, format_validation_error
from daemon.spool.fsops import file_type_words
from contract.jsonread import JsonProblem, read_json
from daemon.kind_models import kind_model
from daemon.registry import incomplete_model, refresh_models
from daemon.spool.layout import is_valid_job_id
from daemon.webhooks.urls import job_url_problem
from contract.errors import MOUNT_ERRNOS, ErrorCode, JobError
from contract.input_formats import MediaRefused, check_media, checked_media
from contract.kinds import KindSpec, MediaType


class JobFile(BaseModel):
    # strict: "priority": "0" is a mistake to report, not a value to guess at.
    model_config = ConfigDict(extra="forbid", strict=True)

    version: Literal[1] = 1
    id: str | None = None
    kind: str
    model: str | None = None
    priority: int = Field(0, ge=-100, le=100)
    params: dict[str, Any] = {}
    inputs: dict[str, str | list[str]] = {}
    max_attempts: int | None = Field(None, ge=1, le=100)
    labels: dict[str, str] = {}
    # Where state changes are POSTed (SPEC §10.1); a preset's or [webhooks] default otherwise.
    webhook: WebhookTarget | None = None

    @field_validator("id")
    @classmethod
    def _id_pattern(cls, v):
        if v is not None and not is_valid_job_id(v):
            raise ValueError("must be 1–64 of [A-Za-z0-9._-], not starting with '.'")
        return v


def parse_job_bytes(raw: bytes, limit: int, what: str) -> dict:
    """The JSON object in `raw`, or JobError(invalid_job) saying what is wrong with it."""
    if len(raw) > limit:
        raise JobError(ErrorCode.INVALID_JOB, f"{what} is {len(raw)} bytes, over the limit of {limit} ([limits] job_json_bytes)")
    if not raw.strip():
        raise JobError(ErrorCode.INVALID_JOB, f"{what} is empty")
    try:
        doc = read_json(raw)
    except JsonProblem as exc:
        raise JobError(ErrorCode.INVALID_JOB, f"{what} {exc}") from None
    if not isinstance(doc, dict):
        raise JobError(ErrorCode.INVALID_JOB, f"{what} must hold a JSON object, not {type(doc).__name__}")
    return doc


def validate_job(
    doc: dict,
    job_dir: Path,
    kinds: Mapping[str, KindSpec],
    settings: Settings,
    preset: str | None = None,
) -> dict:
    """Validates a job document against its kind and the job folder; returns the job with
    defaults filled in (what status.json shows as `job`). Raises JobError."""
    preset_cfg = settings.presets.get(preset) if preset else None
    if preset_cfg is not None:
        # A preset without a kind (one a personality of several kinds uses) leaves it to the job.
        doc = {**({"kind": preset_cfg.kind} if preset_cfg.kind else {}), "priority": preset_cfg.priority, **doc}
        if isinstance(doc.get("labels", {}), dict):  # a non-dict fails validation below
            doc["labels"] = {**preset_cfg.labels, **doc.get("labels", {})}
        if preset_cfg.model and "model" not in doc:
            doc["model"] = preset_cfg.model
    try:
        job = JobFile.model_validate(doc)
    except ValidationError as exc:
        raise JobError(ErrorCode.INVALID_JOB, format_validation_error(exc, "job")) from None

    kind = kinds.get(job.kind)
    if kind is None:
        raise JobError(ErrorCode.INVALID_JOB, f"kind: unknown kind {job.kind!r} (known: {', '.join(sorted(kinds))})")

    kind_cfg = settings.kinds.get(job.kind)
    job_params = dict(job.params)
    if kind.needs_model and "model" in job_params:  # SPEC §3 lists `model` among the params too
        in_params = job_params.pop("model")
        if not isinstance(in_params, str) or (job.model and job.model != in_params):
            raise JobError(ErrorCode.INVALID_JOB, "params.model: must be a model name, the same as the job's \"model\" if both are given")
        job.model = job.model or in_params
    model = job.model or (kind_cfg.model if kind_cfg else None)
    if kind.model_param:  # e.g. talking-head's lipsync: a model name or "none"
        given = {**(kind_cfg.defaults if kind_cfg else {}), **(preset_cfg.params if preset_cfg else {}),
                 **job_params}.get(kind.model_param)
        if isinstance(given, str):
            if job.model and given != job.model:
                raise JobError(ErrorCode.INVALID_JOB, (
                    f"params.{kind.model_param}: {given!r} differs from the job's model {job.model!r}; give one"))
            model = given
        model = choose_model(model, job.kind, kind, settings)
        job_params[kind.model_param] = model or "none"
    elif model is None and kind.needs_model:
        model = kind_model(job.kind, kind, settings, rescan=True).model
    model_cfg = check_model(model, job.kind, kind, settings)
    defaults = {
        **(kind_cfg.defaults if kind_cfg else {}),
        # A model's defaults are params of its own kind (not of one that borrows it).
        **(model_cfg.defaults if model_cfg and not kind.model_kinds else {}),
        **(preset_cfg.params if preset_cfg else {}),
    }
    # What the input sets (video-to-video's size) only the job itself may change.
    params = {**{k: v for k, v in defaults.items() if k not in kind.sized_by_input}, **job_params}
    try:
        params_model = kind.params.model_validate(params, strict=True)
    except ValidationError as exc:
        raise JobError(ErrorCode.INVALID_JOB, format_validation_error(exc, "job", prefix="params.")) from None

    inputs = resolve_inputs(job.inputs, job_dir, kind, settings.limits.input_bytes)
    if kind.check is not None:
        try:
            if kind.check_takes_voices:
                kind.check(params_model, inputs, settings.voice_book())
            else:
                kind.check(params_model, inputs)
        except ValueError as exc:
            raise JobError(ErrorCode.INVALID_JOB, f"job: {exc}") from None
    if kind.frame_pixels is not None:
        frame_pixels = kind.frame_pixels(params_model, inputs)
        limit, where = settings.limits.max_frame_pixels, "[limits] max_frame_pixels"
        if model_cfg is not None and model_cfg.max_frame_pixels is not None and model_cfg.max_frame_pixels < limit:
            limit, where = model_cfg.max_frame_pixels, f"[models.{model}] max_frame_pixels"
        if frame_pixels is not None and frame_pixels > limit:
            raise JobError(ErrorCode.INVALID_JOB, f"job: the video would be {frame_pixels} frame pixels (frames × width × height), over the limit of {limit} ({where})")

    webhook = job_webhook(job.webhook, preset_cfg, settings)
    return {
        "id": job.id,
        "kind": job.kind,
        "model": model,
        "priority": job.priority,
        "params": params_model.model_dump(mode="json"),
        "inputs": job.inputs,
        "max_attempts": job.max_attempts or settings.limits.max_attempts,
        "labels": job.labels,
        "preset": preset,
        **({"webhook": webhook} if webhook else {}),
    }


def job_webhook(own: WebhookTarget | None, preset: PresetConfig | None, settings: Settings) -> dict | None:
    """The job's webhook and where it came from: its own (checked against [webhooks]
    allowed_urls: SSRF), else its preset's, else [webhooks] default; None: no webhook."""
    config = settings.webhooks
    if own is not None:
        if not config.secret:
            raise JobError(ErrorCode.INVALID_JOB, "webhook: this daemon cannot sign webhooks: [webhooks] secret is not set")
        problem = job_url_problem(own.url, config.allowed_urls)
        if problem:
            raise JobError(ErrorCode.INVALID_JOB, f"webhook.url: {problem}")
        target, source = own, "job"
    elif preset is not None and preset.webhook is not None:
        target, source = preset.webhook, "preset"
    elif config.default is not None:
        target, source = config.default, "config"
    else:
        return None
    return {"url": target.url, "events": list(target.events), "source": source}


def choose_model(model: str | None, kind_name: str, kind: KindSpec, settings: Settings) -> str | None:
    """The model a kind with a model param runs: None for "none"; a choice is required."""
    if model == "none":
        return None
    if model is None:
        default = kind_model(kind_name, kind, settings, rescan=True)
        if default.model is not None:
            return default.model
        raise JobError(ErrorCode.MODEL_NOT_FOUND, (
            f"params.{kind.model_param}: kind {kind_name} needs a model name or \"none\": {default.problem()}"))
    return model


def check_model(model: str | None, kind_name: str, kind: KindSpec, settings: Settings):
    """The registry entry of the job's model (None for kinds without one), checked to exist
    and to serve the kind."""
    if model is None:
        if kind.needs_model:
            raise JobError(ErrorCode.MODEL_NOT_FOUND, (
                f"model: kind {kind_name} needs a model; name one in the job (\"model\"): "
                f"{kind_model(kind_name, kind, settings).problem()}"))
        return None
    model_cfg = settings.models.get(model)
    if model_cfg is None or (model_cfg.path is not None and not model_cfg.path.exists()):
        # A folder copied into (or removed from) [registry] dir since the last scan.
        refresh_models(settings)
        model_cfg = settings.models.get(model)
    if model_cfg is None:
        unfinished = incomplete_model(settings.registry.dir, model)
        if unfinished is not None:
            raise JobError(ErrorCode.MODEL_NOT_FOUND, (
                f"model: {model!r} is not complete yet (still being copied?): {unfinished[0]} "
                f"lacks {', '.join(unfinished[1])}"))
        known = ", ".join(sorted(settings.models)) or "none"
        raise JobError(ErrorCode.MODEL_NOT_FOUND, (
            f"model: {model!r} is not in the model registry ([models.*] in config, or a folder in "
            f"{settings.registry.dir}/; registered: {known})"))
    if not kind.uses_model:
        raise JobError(ErrorCode.INVALID_JOB, f"model: kind {kind_name} does not use a model")
    if not kind.serves(model_cfg.kinds):
        raise JobError(ErrorCode.INVALID_JOB, f"model: {model!r} serves {', '.join(model_cfg.kinds)}, not {kind_name}")
    return model_cfg


def resolve_inputs(
    declared: Mapping[str, str | list[str]], job_dir: Path, kind: KindSpec, size_limit: int
) -> dict[str, list[Path]]:
    """Checks every input name against the kind and the job folder, and each file's format
    against its input type; returns absolute paths."""
    resolved: dict[str, list[Path]] = {}
    for spec in kind.inputs:
        if spec.required and spec.name not in declared:
            raise JobError(ErrorCode.MISSING_INPUT, f"inputs.{spec.name}: required by kind {kind.name}")
    for name, value in declared.items():
        spec = kind.input_spec(name)
        if spec is None:
            known = ", ".join(i.name for i in kind.inputs) or "none"
            raise JobError(ErrorCode.INVALID_JOB, f"inputs.{name}: unknown input for kind {kind.name} (known: {known})")
        if isinstance(value, list) and not spec.many:
            raise JobError(ErrorCode.INVALID_JOB, f"inputs.{name}: takes one file name, not a list")
        names = value if isinstance(value, list) else [value]
        resolved[name] = [confined_input(f"inputs.{name}", n, job_dir, size_limit, spec.media) for n in names]
    return resolved


def confined_input(key: str, rel: str, job_dir: Path, size_limit: int, media: tuple[MediaType, ...] = ("any",)) -> Path:
    """The file `rel` inside `job_dir`, refusing anything that could leave the folder, and
    a media input whose first bytes are no format its `media` takes (contract.input_formats)."""
    if not rel or rel.startswith(("/", "\\")) or os.path.isabs(rel):
        raise JobError(ErrorCode.INVALID_JOB, f"{key}: {rel!r} must be a relative file name inside the job folder")
    parts = Path(rel).parts
    if ".." in parts or "\x00" in rel:
        raise JobError(ErrorCode.INVALID_JOB, f"{key}: {rel!r} must not contain '..'")
    root = job_dir.resolve()
    path = job_dir / rel
    real = Path(os.path.realpath(path))
    if real != root and root not in real.parents:
        raise JobError(ErrorCode.INVALID_JOB, f"{key}: {rel!r} is a link that leaves the job folder")
    try:
        st = os.stat(real)  # lstat-free on purpose: links inside the folder are fine
    except OSError as exc:
        raise input_os_error(key, rel, exc) from None
    if not stat.S_ISREG(st.st_mode):
        raise JobError(ErrorCode.UNSUPPORTED_INPUT, f"{key}: {rel!r} is {file_type_words(st.st_mode)}")
    if st.st_nlink > 1:
        # A hard link may be a file from anywhere on the filesystem; no path check can tell.
        raise JobError(ErrorCode.UNSUPPORTED_INPUT, f"{key}: {rel!r} is a hard link ({st.st_nlink} names); drop a copy instead")
    if st.st_size == 0:
        raise JobError(ErrorCode.UNSUPPORTED_INPUT, f"{key}: {rel!r} is empty (0 bytes)")
    if st.st_size > size_limit:
        raise JobError(ErrorCode.UNSUPPORTED_INPUT, f"{key}: {rel!r} is {st.st_size} bytes, over the limit of {size_limit} ([limits] input_bytes)")
    if checked_media(media):
        try:
            check_media(real, checked_media(media))
        except MediaRefused as exc:
            raise JobError(ErrorCode.UNSUPPORTED_INPUT, f"{key}: {rel!r} {exc.reason}") from None
        except OSError as exc:
            raise input_os_error(key, rel, exc) from None
    return real


def input_os_error(key: str, rel: str, exc: OSError) -> JobError:
    """The job error for an input that cannot be looked at; a dead mount is re-raised as is."""
    if exc.errno in MOUNT_ERRNOS:
        raise exc  # the spool's fault, not the job's: the arbiter waits it out
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return JobError(ErrorCode.MISSING_INPUT, f"{key}: {rel!r} was not found beside the job file")
    if exc.errno == errno.ELOOP:
        return JobError(ErrorCode.UNSUPPORTED_INPUT, f"{key}: {rel!r} is a symbolic link loop")
    if exc.errno == errno.ENAMETOOLONG:
        return JobError(ErrorCode.INVALID_JOB, f"{key}: {rel[:80]!r}… is too long a file name")
    return JobError(ErrorCode.UNSUPPORTED_INPUT, f"{key}: {rel!r} cannot be read: {exc.strerror}")
