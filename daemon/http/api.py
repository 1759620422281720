"""The HTTP API (SPEC §6), served by aiohttp inside the daemon process (design: docs/api.md).

Everything it knows comes from the read model (daemon/view/readmodel.py), never the arbiter:
status documents from the outbox (the files are the truth), submissions through the inbox
like any dropped file, result files by server-side lookup in the job's outbox folder only.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from pathlib import Path

import structlog
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ValidationError

from daemon.http.auth import load_tokens, may_submit, presented_token
from daemon.http.chain import FrontChain
from daemon.config import format_validation_error
from daemon.http.fds import connection_budget
from daemon.http.file_response import OpenedFileResponse
from contract.jsonread import JsonProblem, read_json
from daemon.http.paths import API, OPEN_PATHS, STATIC_FILES
from daemon.http.guard import (
    FormBudget,
    FormTooLarge,
    GuardedSite,
    HttpPolicy,
    ReadTimeout,
    add_security_headers,
    json_error,
    read_body,
    read_form,
    timeout_response,
    within,
)
from daemon.http.metrics import Metrics
from daemon.view.for_fronts import OpenedFile, is_valid_job_id, read_job_file
from daemon.http.pause_requests import PauseRequest, ResumeRequest
from daemon.view.readmodel import JobFilter, QueueFull, ReadModel
from contract.status import PREVIEW_FILE

log = structlog.get_logger()

WEB_DIR = Path(__file__).resolve().parent / "web"
KEEPALIVE_SECONDS = 15.0
DISCONNECT_CHECK_SECONDS = 1.0
UPLOAD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$")


error = json_error
# Files and the page may be kept by a browser, but must be revalidated (a job's files change
# when it is rerun or purged).
REVALIDATE = "private, no-cache"
PREVIEW_BYTES = 16 << 20  # a live preview is a small JPEG; a larger file there is not one


def open_path(path: str) -> bool:
    """Whether anyone may fetch `path`, tokens or not: health, the page and its files."""
    return path in OPEN_PATHS or path.startswith("/static/")


class Api:
    def __init__(self, view: ReadModel):
        self.view = view
        self.events = view.events
        self.metrics = Metrics(view)
        api = view.settings.api
        self.tokens = load_tokens(api.tokens, api.tokens_file)
        self.event_streams = 0

    def routes(self) -> list:
        return [
            web.get("/", self.page),
            web.get("/static/{name}", self.static),
            web.get("/metrics", self.get_metrics),
            web.get(f"{API}/health", self.health),
            web.get(f"{API}/info", self.info),
            web.get(f"{API}/queue", self.queue),
            web.get(f"{API}/jobs", self.list_jobs),
            web.post(f"{API}/jobs", self.submit),
            web.get(f"{API}/jobs/{{id}}", self.get_job),
            web.delete(f"{API}/jobs/{{id}}", self.cancel_job),
            web.delete(f"{API}/jobs/{{id}}/results", self.delete_results),
            web.get(f"{API}/stats", self.stats),
            web.get(f"{API}/jobs/{{id}}/files/{{name}}", self.get_file),
            web.get(f"{API}/jobs/{{id}}/download", self.download),
            web.get(f"{API}/jobs/{{id}}/{PREVIEW_FILE}", self.get_preview),
            web.get(f"{API}/events", self.stream_events),
            web.get(f"{API}/models", self.list_models),
            web.get(f"{API}/voices", self.list_voices),
            web.get(f"{API}/languages", self.list_languages),
            web.post(f"{API}/models/{{name}}/load", self.load_model),
            web.post(f"{API}/models/{{name}}/unload", self.unload_model),
            web.post(f"{API}/models/download", self.download_model),
            web.post(f"{API}/pause", self.pause),
            web.post(f"{API}/resume", self.resume),
            web.get(f"{API}/openapi.json", self.openapi),
        ]

    def token_refused(self, status: int, scope: str | None) -> web.Response:
        if status == 401:
            return error(401, "unauthorized", "a valid bearer token is required (Authorization: Bearer …)",
                         headers={"WWW-Authenticate": 'Bearer realm="vidspool"'})
        return error(403, "forbidden", f"this token lacks the {scope!r} scope")

    # -- the page, metrics, the document ------------------------------------------------
    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(WEB_DIR / "index.html", headers={"Content-Type": "text/html; charset=utf-8",
                                                                 "Cache-Control": REVALIDATE})

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC_FILES or not (WEB_DIR / name).is_file():
            return error(404, "not_found", f"no static file {name!r}")
        return web.FileResponse(WEB_DIR / name, headers={"Content-Type": f"{STATIC_FILES[name]}; charset=utf-8",
                                                         "Cache-Control": REVALIDATE})

    async def get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def openapi(self, request: web.Request) -> web.Response:
        from daemon.http.openapi import openapi_document

        return web.json_response(openapi_document(self.view.kinds, self.view.settings))

    # -- daemon ---------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        problems = self.view.problems()
        corrupt = {"corrupt": n} if (n := self.view.corrupt()) else {}  # entries in corrupt/, when there are
        paused = {"paused": p} if (p := self.view.paused()) else {}  # paused is healthy: still 200
        if problems:
            return web.json_response({"status": "unavailable", "reason": "; ".join(problems), **corrupt, **paused}, status=503)
        return web.json_response({"status": "ok", **corrupt, **paused})

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response(self.view.info(auth=bool(self.tokens)))

    async def queue(self, request: web.Request) -> web.Response:
        return web.json_response(self.view.queue())

    # -- jobs -------------------------------------------------------------------------
    async def get_job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        raw = self.view.ended_status_bytes(job_id)
        if raw is not None:  # an ended job (or another host's): the file's bytes as they are
            return web.Response(body=raw, content_type="application/json")
        doc = self.view.status(job_id)
        if doc is None:
            return error(404, "not_found", f"no job {job_id!r}")
        if doc.get("state") in ("queued", "running"):
            doc = {**doc, **{k: v for k, v in self.view.estimate(doc).items() if k != "basis"}}
        return web.json_response(doc)

    async def delete_results(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        outcome, freed = self.view.delete_results(job_id)
        if outcome == "not_found":
            return error(404, "not_found", f"no job {job_id!r}")
        if outcome == "not_ended":
            return error(409, "conflict", f"job {job_id!r} has not ended; cancel it first")
        if outcome == "busy":
            return error(409, "conflict", f"the results of job {job_id!r} are being deleted by another request")
        return web.json_response({"id": job_id, "state": outcome, "freed_bytes": freed})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(await self.view.statistics())

    async def list_jobs(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            where = JobFilter(q.get("state"), q.get("kind"), q.get("label"))
        except ValueError as exc:
            return error(400, "bad_request", str(exc))
        try:
            limit = int(q.get("limit", 50))
        except ValueError:
            return error(400, "bad_request", "limit must be an integer")
        if not 1 <= limit <= 1000:
            return error(400, "bad_request", "limit must be 1–1000")
        body = await self.view.off_loop(self._jobs_page, where, limit, q.get("cursor") or "")
        return web.Response(body=body, content_type="application/json")

    def _jobs_page(self, where: JobFilter, limit: int, cursor: str) -> bytes:
        jobs, next_cursor = self.view.jobs(where, limit, cursor)
        return json.dumps({"jobs": jobs, "next_cursor": next_cursor}).encode()

    async def submit(self, request: web.Request) -> web.Response:
        """A job as JSON, or multipart (`job` + files): staged under a dot-name in the inbox,
        its id reserved, then renamed in, where the daemon accepts it like any drop."""
        waiting = self.view.queue_full()
        if waiting is not None:
            return self._queue_full(waiting)
        token, staging = self.view.new_submission()
        try:
            if request.content_type == "multipart/form-data":
                try:
                    doc = await self._receive_multipart(request, staging)
                except ReadTimeout as exc:
                    return timeout_response(exc)
                except FormTooLarge as exc:
                    return error(413, "too_large", str(exc))
                except (ValueError, RuntimeError, HttpProcessingError) as exc:
                    return error(400, "bad_request", f"malformed multipart body: {exc}")
            else:
                doc = self._parse_job(await self._read_limited(request))
            if isinstance(doc, ReadTimeout):
                return timeout_response(doc)
            if isinstance(doc, web.Response):
                return doc
            try:
                job_id = self.view.submit(token, staging, doc)
            except QueueFull as exc:  # filled while the body was read
                return self._queue_full(exc.waiting)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return web.json_response({"id": job_id, "state": "submitted", "status_url": f"{API}/jobs/{job_id}"}, status=202)

    @staticmethod
    def _queue_full(waiting: int) -> web.Response:
        return error(429, "queue_full", f"{waiting} jobs are waiting ([api] max_queued_jobs); try again later",
                     headers={"Retry-After": "10"})

    async def _read_limited(self, request: web.Request) -> bytes | web.Response | ReadTimeout:
        limit = self.view.settings.limits.job_json_bytes
        if request.content_length is not None and request.content_length > limit:
            return error(413, "too_large", f"job JSON is {request.content_length} bytes, over [limits] job_json_bytes ({limit})")
        try:
            return await read_body(request, limit, self.read_timeout)
        except ReadTimeout as exc:
            return exc
        except web.HTTPRequestEntityTooLarge:
            return error(413, "too_large", f"job JSON over [limits] job_json_bytes ({limit})")

    @property
    def read_timeout(self) -> float:
        return self.view.settings.api.read_timeout_seconds

    @staticmethod
    def _parse_job(raw, code: str = "invalid_job", shape: str = " (the job file)") -> dict | web.Response | ReadTimeout:
        """The JSON object of a body (or the error `raw` already is)."""
        if isinstance(raw, (web.Response, ReadTimeout)):
            return raw
        try:
            doc = read_json(raw)
        except JsonProblem as exc:
            return error(400, code, f"body {exc}")
        if not isinstance(doc, dict):
            return error(400, code, f"body must be a JSON object{shape}")
        return doc

    async def _receive_multipart(self, request: web.Request, staging: Path) -> dict | web.Response:
        limits = self.view.settings.limits
        budget = FormBudget(limits, self.read_timeout)
        reader = read_form(request)
        doc = None
        while (part := await within(reader.next(), self.read_timeout)) is not None:
            if not isinstance(part, BodyPartReader):
                return error(400, "bad_request", "nested multipart parts are not accepted; send `job` and files")
            budget.part()
            if part.filename is None:
                if part.name != "job":
                    return error(400, "bad_request", f"unknown form field {part.name!r} (send `job` and files)")
                doc = self._parse_job(await budget.text(part))
                if isinstance(doc, web.Response):
                    return doc
                continue
            name = os.path.basename(part.filename.replace("\\", "/"))
            if not UPLOAD_NAME.match(name) or name == "job.json":
                return error(400, "bad_request", f"file name {part.filename!r}: job.json is reserved; send the job in the `job` field" if name == "job.json" else f"file name {part.filename!r}: use letters, digits, '.', '_', '-', space")
            target = staging / name
            if target.exists():
                return error(400, "bad_request", f"file {name!r} sent twice")
            size = 0
            with open(target, "wb") as f:
                while chunk := await within(part.read_chunk(1 << 20), self.read_timeout):
                    size += len(chunk)
                    if size > limits.input_bytes:
                        return error(413, "too_large", f"file {name!r} is over [limits] input_bytes ({limits.input_bytes})")
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        if doc is None:
            return error(400, "bad_request", "multipart submission needs a `job` field holding the job JSON")
        return doc

    async def cancel_job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        outcome = self.view.cancel(job_id, source="api")
        if outcome == "not_found":
            return error(404, "not_found", f"no job {job_id!r}")
        if outcome == "final":
            return error(409, "conflict", f"job {job_id!r} has already ended")
        return web.json_response({"id": job_id, "state": outcome}, status=202)

    # -- files --------------------------------------------------------------------------
    async def _send_file(self, found: tuple[OpenedFile, str] | None, what: str) -> web.StreamResponse:
        if found is None:
            return error(404, "not_found", what)
        opened, media_type = found
        return OpenedFileResponse(opened, headers={"Content-Type": media_type, "Cache-Control": REVALIDATE,
                                                   "Content-Disposition": f'inline; filename="{opened.name}"'})

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        job_id, name = request.match_info["id"], request.match_info["name"]
        return await self._send_file(self.view.result_file(job_id, name), f"job {job_id!r} has no result file {name!r}")

    async def download(self, request: web.Request) -> web.StreamResponse:
        job_id = request.match_info["id"]
        return await self._send_file(self.view.result_file(job_id, None), f"job {job_id!r} has no result yet")

    async def get_preview(self, request: web.Request) -> web.Response:
        """A running job's live preview.jpg (SPEC §10.2), read whole: the worker renames a new
        one over it at any moment and removes it when the attempt ends."""
        job_id = request.match_info["id"]
        body = read_job_file(self.view.spool, job_id, PREVIEW_FILE, PREVIEW_BYTES)
        if body is None:
            return error(404, "not_found", f"job {job_id!r} has no live preview (not running, previews off, or none yet)")
        return web.Response(body=body, headers={"Content-Type": "image/jpeg", "Cache-Control": "no-store"})

    # -- events ---------------------------------------------------------------------------
    async def stream_events(self, request: web.Request) -> web.StreamResponse:
        job = request.query.get("job")
        if job is not None and not is_valid_job_id(job):
            return error(400, "bad_request", f"job {job!r} is not a job id")
        limit = self.view.settings.api.max_event_streams
        if self.event_streams >= limit:
            return error(503, "unavailable", f"{self.event_streams} event streams are open ([api] max_event_streams); "
                         "poll GET /api/v1/jobs instead or try again later", headers={"Retry-After": "10"})
        self.event_streams += 1
        try:
            return await self._stream_events(request, job)
        finally:
            self.event_streams -= 1

    async def _stream_events(self, request: web.Request, job: str | None) -> web.StreamResponse:
        after = self.events.since(request.headers.get("Last-Event-ID"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        if after is None:  # that id is gone (older than the ring, or an earlier daemon run)
            await response.write(f"id: {self.events.event_id(self.events.last)}\nevent: reset\ndata: {{}}\n\n".encode())
            after = self.events.last
        else:
            await response.write(b": connected\n\n")
        quiet_since = time.monotonic()
        previews: dict[str, int] = {}  # the preview step last sent per job (a `preview` event when it moves)
        try:
            while True:
                for n, doc in self.events.after(after, job):
                    await response.write(f"id: {self.events.event_id(n)}\nevent: status\ndata: {json.dumps(doc)}\n\n".encode())
                    if (preview := doc.get("preview")) and previews.get(doc["id"]) != preview.get("step"):
                        previews[doc["id"]] = preview.get("step")
                        await response.write(f"event: preview\ndata: {json.dumps({'id': doc['id'], **preview})}\n\n".encode())
                    quiet_since = time.monotonic()
                after = self.events.last
                if self.view.stopping or request.transport is None or request.transport.is_closing():
                    break  # a client that went away frees its stream slot now, not at the next write
                await self.events.wait(DISCONNECT_CHECK_SECONDS)
                if self.events.last == after and time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                    await response.write(b": keepalive\n\n")
                    quiet_since = time.monotonic()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    # -- voices ---------------------------------------------------------------------------
    async def list_voices(self, request: web.Request) -> web.Response:
        return web.json_response({"voices": self.view.voices(request.query.get("language"))})

    async def list_languages(self, request: web.Request) -> web.Response:
        return web.json_response({"languages": self.view.languages()})

    # -- models ---------------------------------------------------------------------------
    async def list_models(self, request: web.Request) -> web.Response:
        return web.json_response({"models": self.view.shown_models()})

    async def load_model(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            device = self.view.load_model(name)
        except KeyError:
            return error(404, "not_found", f"no model {name!r} in the registry")
        except RuntimeError as exc:
            return error(503, "unavailable", str(exc))
        return web.json_response({"model": name, "device": device, "state": "loading"}, status=202)

    async def unload_model(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not self.view.has_model(name):
            return error(404, "not_found", f"no model {name!r} in the registry")
        return web.json_response({"model": name, "devices": self.view.unload_model(name), "state": "unloading"}, status=202)

    async def _pause_body(self, request: web.Request, model: type[BaseModel]) -> BaseModel | web.Response:
        """An optional JSON body (none = every default) validated by `model`."""
        raw = await self._read_limited(request)
        if isinstance(raw, ReadTimeout):
            return timeout_response(raw)
        if isinstance(raw, web.Response):
            return raw
        doc = self._parse_job(raw, "bad_request", "") if raw.strip() else {}
        if isinstance(doc, web.Response):
            return doc
        try:
            return model.model_validate(doc)
        except ValidationError as exc:
            return error(400, "bad_request", format_validation_error(exc, "body"))

    async def pause(self, request: web.Request) -> web.Response:
        """Stops claims (all hosts, or `host`): the PAUSE file (SPEC §10.4)."""
        body = await self._pause_body(request, PauseRequest)
        if isinstance(body, web.Response):
            return body
        by = f"api {request.remote or ''}".strip()
        paused = self.view.pause(body.host, now=body.now, free_memory=body.free_memory, by=by, reason=body.reason)
        return web.json_response({"paused": paused, "queue_paused": self.view.paused()})

    async def resume(self, request: web.Request) -> web.Response:
        body = await self._pause_body(request, ResumeRequest)
        if isinstance(body, web.Response):
            return body
        removed = self.view.resume(body.host)
        return web.json_response({"removed": removed, "queue_paused": self.view.paused()})

    async def download_model(self, request: web.Request) -> web.Response:
        """`{"repo", "revision"?}`: a hub download in the background (daemon/view/downloads.py)."""
        from daemon.view.downloads import DownloadRefused

        doc = self._parse_job(await self._read_limited(request), "bad_request",
                              ': {"repo": "ORG/NAME", "revision": "main"}')
        if isinstance(doc, ReadTimeout):
            return timeout_response(doc)
        if isinstance(doc, web.Response):
            return doc
        unknown = sorted(set(doc) - {"repo", "revision"})
        if unknown or "repo" not in doc:
            return error(400, "bad_request", f"unknown field {unknown[0]!r}: send repo and revision" if unknown
                         else "repo is required, e.g. {\"repo\": \"Wan-AI/Wan2.1-T2V-1.3B-Diffusers\"}")
        try:  # with tokens, authorize() has checked the submit scope; without, the operator key or download_allow
            bearer = presented_token(request.headers, {})
            download = await self.view.download_model(doc["repo"], doc.get("revision", "main"), bearer=bearer,
                                                      authorized=bool(self.tokens) or may_submit(self.view.settings.api, bearer))
        except DownloadRefused as exc:
            return error(exc.status, exc.code, exc.message,
                         headers={"Retry-After": "60"} if exc.code == "too_many_downloads" else None)
        return web.json_response(download, status=202)


async def start_api(view: ReadModel, host: str, port: int, listeners: int = 1):
    api = Api(view)
    settings = view.settings.api
    policy = HttpPolicy.for_listener(host, settings.allowed_hosts, settings.allowed_origins,
                                     read_timeout=settings.read_timeout_seconds)
    chain = FrontChain(policy, error, api.tokens, open_path, api.token_refused, api.metrics.observe_request)
    app = web.Application(client_max_size=view.settings.limits.job_json_bytes + 1024, middlewares=[chain.middleware()])
    app.add_routes(api.routes())
    app.on_response_prepare.append(add_security_headers)
    # keepalive_timeout closes a connection whose request head has not arrived in time
    # (also the first one: aiohttp starts that timer when the connection is made).
    # lingering_time: how long the unread rest of a refused body is read and dropped (so the
    # client sees the answer, not a reset); short, as a stalled client holds it that long.
    # auto_decompress off: a compressed body is refused by the guard, never inflated (not
    # even the rest of it read and dropped while the refusal lingers).
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0,  # open event streams end at once
                           keepalive_timeout=settings.read_timeout_seconds, lingering_time=1.0, auto_decompress=False)
    await runner.setup()
    max_connections = connection_budget(settings.max_connections, listeners)
    if max_connections < settings.max_connections:
        log.warning("api.connections_capped", configured=settings.max_connections, max_connections=max_connections,
                    reason="the file-descriptor limit leaves room for no more beside spool work")
    site = GuardedSite(runner, host, port, max_connections, on_refuse=api.metrics.connection_refused)
    await site.start()
    api.site = site
    return runner, f"http://{host}:{site.port}"
