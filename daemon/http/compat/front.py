"""What every seed personality shares (design: docs/compat.md).

A personality turns a seed's request into an ordinary version-1 job (`labels.compat =
NAME`, the seed-shaped id) and submits it through the read model like `POST /api/v1/jobs`;
it answers from the job's status.json. This module holds the shared parts: reading a
seed's form or JSON body (uploads streamed to disk with the native limits), building and
submitting the job, moving a value the model cannot take to the nearest one it takes, and
the seed's error shape for the checks every front runs (Host, Origin, body type, spool
faults, aiohttp's own 404/405/413).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from contract.errors import JobError
from contract.families import Family, family_of
from contract.status import FINAL_STATES, epoch
from contract.status import seconds_between as status_seconds_between
from contract.model_folders import INDEX
from daemon.http.auth import load_tokens
from daemon.http.chain import BadRequest, FrontChain
from daemon.config import CompatConfig, PresetConfig, Settings
from daemon.http.file_response import OpenedFileResponse
from daemon.http.guard import JSON_AND_MULTIPART, FormBudget, HttpPolicy, FormTooLarge, ReadTimeout, read_body, read_form, within
from contract.jsonread import JsonProblem, read_json
from daemon.view.for_fronts import JobSummary, KindModel, OpenedFile, kind_model
from daemon.view.readmodel import QueueFull, ReadModel

FORM_TYPES = JSON_AND_MULTIPART | {"application/x-www-form-urlencoded"}
SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
ANSWERS_KEPT = 50_000  # a few hundred bytes each


@dataclass
class Form:
    """A request's fields and the files it uploaded (staged in the inbox, not yet a job)."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # form field → staged file

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.fields.get(name)
        return default if value is None or value == "" else value

    def number(self, name: str, kind: type, default=None, low=None, high=None):
        """A numeric field as `kind` (int or float); BadRequest names a bad one."""
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = kind(float(raw)) if kind is int and re.fullmatch(r"-?\d+(\.0*)?", raw.strip()) else kind(raw)
        except OverflowError:  # 400 digits: float() is inf, int(inf) overflows
            value = math.inf
        except (TypeError, ValueError):
            value = math.nan
        if math.isnan(value):
            raise BadRequest(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw[:40]!r}")
        if math.isinf(value) or (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if low is not None and high is not None else "a finite number"
            raise BadRequest(f"{name} must be {bounds}, got {raw[:40]}")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        raw = self.text(name)
        return default if raw is None else raw.strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Submission:
    """A job being built from a request; `submit()` makes it a job."""

    kind: str
    params: dict = field(default_factory=dict)  # what the request said
    # The seed's documented defaults for what it left out: under the preset's params.
    defaults: dict = field(default_factory=dict)
    inputs: dict[str, str | list[str]] = field(default_factory=dict)
    model: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    adjusted: list[str] = field(default_factory=list)  # "num_frames 64→65 (Wan2.1 takes 4k+1)"
    ignored: list[str] = field(default_factory=list)  # "emotion=happy (no expression engine here)"


def iso(value: str | None) -> str | None:
    """A status time ("…123Z") as the seeds print them: ISO 8601 with Z, to the second."""
    if not value:
        return None
    return value.split(".")[0].rstrip("Z") + "Z"


def unix_seconds(value: str | None) -> int | None:
    seconds = epoch(value)
    return None if seconds is None else int(seconds)


def seconds_between(start: str | None, end: str | None) -> float | None:
    seconds = status_seconds_between(start, end)
    return None if seconds is None else round(seconds, 3)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def gpu_index(device: str | None) -> int | None:
    """"cuda:1" → 1 ("cuda" → 0); None for a CPU worker or a job not yet on one."""
    if not device or not device.startswith("cuda"):
        return None
    _, _, index = device.partition(":")
    return int(index) if index.isdigit() else 0


def notes(doc: dict, key: str) -> list[str]:
    """compat_adjusted / compat_ignored of a job, as the list it was built from."""
    raw = (doc.get("labels") or {}).get(key)
    return [n for n in raw.split("; ") if n] if raw else []


class Personality:
    """One seed's API. Subclasses set `name`, write `routes()` and `error()`, and build jobs
    with the helpers below."""

    name = ""
    body_types = FORM_TYPES
    # The kinds its jobs are.
    kinds: tuple[str, ...] = ()
    # Whether [api] tokens apply whenever there are any (a seed whose document has bearer
    # tokens); otherwise only with `[compat.NAME] require_tokens`.
    tokens_by_default = False
    # Paths answered without a token (health checks).
    open_paths: frozenset[str] = frozenset()
    # A full queue ([api] max_queued_jobs): the seed's status for it (429 where its document
    # has one), else 503.
    queue_full_status = 503

    def __init__(self, view: ReadModel, config: CompatConfig):
        self.view = view
        self.config = config
        api = view.settings.api
        wanted = config.require_tokens or self.tokens_by_default
        self.tokens = load_tokens(api.tokens, api.tokens_file) if wanted else []
        self._answers: OrderedDict[str, tuple[tuple, bytes]] = OrderedDict()  # ended jobs' answers

    @property
    def settings(self) -> Settings:
        return self.view.settings

    def routes(self) -> list:
        raise NotImplementedError

    def error(self, status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
        """The seed's error body (default: `{"error": message}`, as three of them answer)."""
        return web.json_response({"error": message}, status=status, headers=headers)

    def chain(self, policy: HttpPolicy) -> FrontChain:
        """The fronts' per-request chain with this seed's error shape and open paths:
        [api] tokens as `Authorization: Bearer` (or ?access_token= on reads: <video src> and
        browser WebSockets cannot send headers), with the native scopes."""
        return FrontChain(policy, self.error, self.tokens, self.open_paths.__contains__, self.token_refused)

    def token_refused(self, status: int, scope: str | None) -> web.Response:
        if status == 401:
            return self.error(401, "unauthorized", "a valid API key is required (Authorization: Bearer YOUR_API_KEY)",
                              headers={"WWW-Authenticate": f'Bearer realm="{self.name}"'})
        return self.error(403, "forbidden", f"this API key lacks the {scope!r} scope")

    # -- reading requests ------------------------------------------------------------------
    @property
    def read_timeout(self) -> float:
        return self.settings.api.read_timeout_seconds

    async def json_body(self, request: web.Request) -> dict:
        """The JSON object a request carries; BadRequest otherwise."""
        limit = self.settings.limits.job_json_bytes
        try:
            raw = await read_body(request, limit, self.read_timeout)
        except web.HTTPRequestEntityTooLarge:
            raise BadRequest(f"request body over [limits] job_json_bytes ({limit})", 413, "too_large") from None
        except ReadTimeout as exc:
            raise BadRequest(str(exc), 408, "request_timeout") from None
        if not raw.strip():
            return {}
        try:
            doc = read_json(raw)
        except JsonProblem as exc:
            raise BadRequest(f"body {exc}") from None
        if not isinstance(doc, dict):
            raise BadRequest("body must be a JSON object")
        return doc

    async def form(self, request: web.Request, staging: Path, file_fields: set[str]) -> Form:
        """A multipart or url-encoded form: text fields, and the files of `file_fields`
        streamed into `staging` (at most [limits] input_bytes each). Other file fields are
        refused; a JSON body is read as fields too (some clients send one)."""
        form = Form()
        if request.content_type == "application/json":
            form.fields = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in (await self.json_body(request)).items()}
            return form
        limits = self.settings.limits
        if request.content_type != "multipart/form-data":
            try:
                posted = await within(request.post(), self.read_timeout)
            except ReadTimeout as exc:
                raise BadRequest(str(exc), 408, "request_timeout") from None
            except web.HTTPRequestEntityTooLarge:  # the application's client_max_size and _fields
                raise BadRequest(f"form over [limits] job_json_bytes ({limits.job_json_bytes}) "
                                 f"or form_fields ({limits.form_fields})", 413, "too_large") from None
            except (UnicodeDecodeError, LookupError) as exc:  # bytes not in the charset, an unknown charset
                raise BadRequest(f"form is not text in its charset ({request.charset or 'utf-8'}): {exc}") from None
            form.fields = {k: v for k, v in posted.items() if isinstance(v, str)}
            return form
        budget = FormBudget(limits, self.read_timeout)
        try:
            reader = read_form(request)
            while (part := await within(reader.next(), self.read_timeout)) is not None:
                if not isinstance(part, BodyPartReader):
                    raise BadRequest("nested multipart parts are not accepted")
                budget.part()
                if part.filename is None:
                    form.fields[part.name or ""] = (await budget.text(part)).decode("utf-8", "replace")
                    continue
                if part.name not in file_fields:
                    raise BadRequest(f"unexpected file field {part.name!r} (this endpoint takes {', '.join(sorted(file_fields)) or 'no files'})")
                if part.name in form.files:
                    raise BadRequest(f"file field {part.name!r} sent twice")
                suffix = Path(part.filename.replace("\\", "/")).suffix.lower()
                target = staging / f"{part.name}{suffix if SAFE_SUFFIX.match(suffix) else ''}"
                size = 0
                with open(target, "wb") as f:
                    while chunk := await within(part.read_chunk(1 << 20), self.read_timeout):
                        size += len(chunk)
                        if size > limits.input_bytes:
                            raise BadRequest(f"file {part.name!r} is over [limits] input_bytes ({limits.input_bytes})", 413, "too_large")
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
                if size == 0:
                    target.unlink()
                    continue  # an empty file field is a field left out (browsers send those)
                form.files[part.name] = target
        except ReadTimeout as exc:
            raise BadRequest(str(exc), 408, "request_timeout") from None
        except FormTooLarge as exc:
            raise BadRequest(str(exc), 413, "too_large") from None
        except (ValueError, RuntimeError, HttpProcessingError) as exc:
            raise BadRequest(f"malformed multipart body: {exc}") from None
        return form

    # -- submitting --------------------------------------------------------------------------
    def staging(self) -> tuple[str, Path]:
        return self.view.new_submission()

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def stage_file(self, staging: Path, name: str, source: Path) -> str:
        """Copies a configured file (a default face, a character's image) into the job."""
        target = staging / f"{name}{source.suffix.lower()}"
        shutil.copyfile(source, target)
        return target.name

    def submit(self, token: str, staging: Path, job: Submission, job_id: str) -> str:
        """The job into the inbox (through the read model, like POST /api/v1/jobs): its params
        are the seed's defaults, under the preset's params, under the request's own values,
        fitted to the model (fit()). It is first checked as the daemon will accept it, so a
        request refused for it leaves nothing behind (refused()). Returns its id."""
        preset = self.preset
        job.params = {**job.defaults, **self.preset_params(job.kind), **job.params}
        self.fit(job)
        labels = {**(preset.labels if preset else {}), **job.labels, "compat": self.name}
        if job.adjusted:
            labels["compat_adjusted"] = "; ".join(job.adjusted)
        if job.ignored:
            labels["compat_ignored"] = "; ".join(job.ignored)
        doc = {"id": job_id, "kind": job.kind, "params": job.params,
               "inputs": job.inputs, "labels": labels}
        model = job.model or (preset.model if preset else None)
        if model:
            doc["model"] = model
        if preset and preset.priority:
            doc["priority"] = preset.priority
        try:
            self.view.validate_job(doc, staging)
        except JobError as exc:
            raise self.refused(exc) from None
        except (RecursionError, ValueError, TypeError):
            pass  # a fault of the check itself: the daemon's intake fails the job `internal`, saying so
        try:
            return self.view.submit(token, staging, doc)
        except QueueFull as exc:
            raise self.queue_full(exc.waiting) from None

    # The status a request gets when the daemon's intake would refuse its job, by error code
    # (others: 400): a missing model is the host's, not the request's.
    refusal_status = {"model_not_found": 503}

    def refused(self, exc: JobError) -> BadRequest:
        """A job the daemon's intake would fail, as this request's error in the seed's shape."""
        return BadRequest(self.view.paths.text(exc.message), self.refusal_status.get(exc.code, 400), str(exc.code))

    @property
    def preset(self) -> PresetConfig | None:
        return self.settings.presets.get(self.config.preset) if self.config.preset else None

    def preset_params(self, kind: str) -> dict:
        """The preset's params for a job of `kind`, less those its input sets (a preset's
        size never stretches a video-to-video input)."""
        spec = self.view.kinds.get(kind)
        skipped = spec.sized_by_input if spec else ()
        return {k: v for k, v in (self.preset.params if self.preset else {}).items() if k not in skipped}

    def queue_full(self, waiting: int) -> BadRequest:
        """The seed's answer to a request while [api] max_queued_jobs jobs wait."""
        return BadRequest(f"the queue is full: {waiting} jobs are waiting ([api] max_queued_jobs); try again later",
                          self.queue_full_status, "queue_full", headers={"Retry-After": "10"})

    def refuse_when_full(self) -> None:
        """A full queue answered before a request's body is read (submit() checks again)."""
        waiting = self.view.queue_full()
        if waiting is not None:
            raise self.queue_full(waiting)

    def model_for(self, kind: str, model: str | None = None) -> str | None:
        """The model a job of `kind` will run: its own, the preset's, or the kind's default
        (`[kinds.KIND] model`, else the only registry model that does the kind)."""
        preset = self.preset
        return model or (preset.model if preset else None) or self.kind_model(kind).model

    def kind_model(self, kind: str) -> KindModel:
        """The kind's default model, or (problem()) which key to set for one."""
        return kind_model(kind, self.view.kinds[kind], self.settings)

    def family(self, model: str | None) -> Family | None:
        """The pipeline family of a registry model, from its model_index.json (no torch)."""
        config = self.settings.models.get(model or "")
        if config is None or config.path is None:
            return None
        try:
            index = json.loads((Path(config.path) / INDEX).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        # A custom class ("module:Class", e.g. a WanPipeline subclass) keeps its weights' family.
        return family_of(config.pipeline or "") or family_of(index.get("_class_name") or "")

    def fit(self, job: Submission) -> None:
        """Moves width, height and num_frames the job's model cannot take exactly to the
        nearest values it takes, noting each change in `job.adjusted`."""
        family = self.family(self.model_for(job.kind, job.model))
        if family is None:
            return
        m = family.size_multiple
        for key in ("width", "height"):
            value = job.params.get(key)
            if isinstance(value, int) and value % m:
                fitted = max(m, int(value / m + 0.5) * m)
                if fitted > (self.largest(job.kind, key) or fitted):
                    fitted -= m
                job.params[key] = fitted
                job.adjusted.append(f"{key} {value}→{fitted} ({family.name} takes multiples of {m})")
        frames = job.params.get("num_frames")
        if isinstance(frames, int) and not family.frames_ok(frames):
            lower = family.nearest_frames(frames)
            upper = lower + family.frame_rule[0]
            fitted = lower if lower >= frames or frames - lower < upper - frames else upper
            if fitted > (self.largest(job.kind, "num_frames") or fitted):
                fitted = lower  # the nearest one the kind's own limit allows
            job.params["num_frames"] = fitted
            job.adjusted.append(f"num_frames {frames}→{fitted} ({family.name} takes {family.describe_frames()})")

    def largest(self, kind: str, param: str) -> int | None:
        """The kind's own upper limit of a param (its pydantic `le`), if it has one."""
        spec = self.view.kinds.get(kind)
        field_info = spec.params.model_fields.get(param) if spec else None
        return next((m.le for m in (field_info.metadata if field_info else ()) if getattr(m, "le", None) is not None), None)

    # -- answering ----------------------------------------------------------------------------
    def status(self, job_id: str) -> dict | None:
        """A job submitted through this personality (its labels.compat); None for any other,
        which every route answers as the seed answers an unknown id: a personality never
        shows another front's jobs, nor the native API's (which may need a token)."""
        doc = self.view.status(job_id)
        return doc if doc is not None and (doc.get("labels") or {}).get("compat") == self.name else None

    def translated(self, job_id: str, translate: Callable[[dict], dict]) -> web.Response | None:
        """`translate(status)` of a job as JSON; None when there is no such job. An ended
        job's answer is kept as bytes with its status file's signature, so a client polling
        a finished job costs a stat, not a parse and a translation."""
        signature = self.view.ended_signature(job_id)
        kept = self._answers.get(job_id) if signature is not None else None
        if kept is not None and kept[0] == signature:
            self._answers.move_to_end(job_id)
            return web.Response(body=kept[1], content_type="application/json")
        doc = self.status(job_id)
        if doc is None:
            return None
        body = json.dumps(translate(doc)).encode()
        if signature is not None and doc.get("state") in FINAL_STATES:
            self._answers[job_id] = (signature, body)
            if len(self._answers) > ANSWERS_KEPT:
                self._answers.popitem(last=False)
        return web.Response(body=body, content_type="application/json")

    def own_jobs(self) -> list[JobSummary]:
        """This personality's jobs, in id order, as the outbox index keeps them (the fields a
        list needs, not whole documents; `.listed()` is the native list's view of one). In a
        listing thread: see listing()."""
        return self.view.compat_jobs(self.name)

    async def listing(self, answer: Callable[[], dict]) -> web.Response:
        """`answer()` (a list built from own_jobs()) as JSON, built and encoded in one of the
        read model's listing threads: never on the loop."""
        body = await self.view.off_loop(lambda: json.dumps(answer()).encode())
        return web.Response(body=body, content_type="application/json")

    def result(self, job_id: str, name: str | None = None) -> tuple[OpenedFile, str] | None:
        """A result file, opened (daemon/spool/job_files.py): send it with send_file."""
        return self.view.result_file(job_id, name)

    def send_file(self, found: tuple[OpenedFile, str], download_name: str | None = None, attachment: bool = False):
        opened, media_type = found
        disposition = "attachment" if attachment else "inline"
        return OpenedFileResponse(opened, headers={
            "Content-Type": media_type, "Cache-Control": "private, no-cache",
            "Content-Disposition": f'{disposition}; filename="{download_name or opened.name}"'})
