"""The HTTP API (SPEC §6), served by aiohttp inside the daemon process.

Status documents come from the outbox (the files are the truth); submissions go through
the inbox like any dropped file. Files are found by server-side lookup in the job's
outbox folder only: no path from a request reaches the filesystem.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from aiohttp import web

from daemon import __version__
from daemon.fscheck import spool_fault
from daemon.fsops import atomic_write_bytes, read_json
from daemon.spool import STATUS, is_valid_job_id

API = "/api/v1"


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class Api:
    def __init__(self, arbiter):
        self.arbiter = arbiter
        self.spool = arbiter.spool

    def routes(self) -> list:
        return [
            web.get(f"{API}/health", self.health),
            web.get(f"{API}/info", self.info),
            web.get(f"{API}/queue", self.queue),
            web.get(f"{API}/jobs", self.list_jobs),
            web.post(f"{API}/jobs", self.submit),
            web.get(f"{API}/jobs/{{id}}", self.get_job),
            web.delete(f"{API}/jobs/{{id}}", self.cancel_job),
            web.get(f"{API}/jobs/{{id}}/files/{{name}}", self.get_file),
            web.get(f"{API}/jobs/{{id}}/download", self.download),
            web.get(f"{API}/models", self.list_models),
            web.post(f"{API}/models/{{name}}/load", self.load_model),
            web.post(f"{API}/models/{{name}}/unload", self.unload_model),
        ]

    async def health(self, request: web.Request) -> web.Response:
        problems = []
        if self.arbiter.fault:
            problems.append(f"spool unavailable: {self.arbiter.fault}")
        elif not os.access(self.spool.root, os.W_OK) or not os.access(self.spool.outbox, os.W_OK):
            problems.append("spool not writable")
        if self.arbiter.paused:
            problems.append(f"not claiming: {self.arbiter.paused}")
        if not any(w.alive for w in self.arbiter.workers):
            problems.append("no live worker")
        if problems:
            return web.json_response({"status": "unavailable", "reason": "; ".join(problems)}, status=503)
        return web.json_response({"status": "ok"})

    async def info(self, request: web.Request) -> web.Response:
        s = self.arbiter.settings
        return web.json_response({
            "version": __version__,
            "host": self.spool.host,
            "spool": str(self.spool.root),
            "devices": [w.device for w in self.arbiter.workers],
            "kinds": sorted(self.arbiter.kinds),
            "models": sorted(s.models),
            "presets": {n: {"kind": p.kind, "accept": p.accept} for n, p in s.presets.items()},
            "limits": s.limits.model_dump(),
        })

    async def queue(self, request: web.Request) -> web.Response:
        return web.json_response({
            "devices": [w.describe() for w in self.arbiter.workers],
            "queued": [{"id": q.job_id, "priority": q.priority, "position": i + 1} for i, q in enumerate(self.arbiter.queue)],
        })

    def _status(self, job_id: str) -> dict | None:
        if not is_valid_job_id(job_id):
            return None
        doc = self.arbiter.statuses.current(job_id)
        if doc is not None and doc.get("state") == "queued":
            doc = {**doc, "queue_position": self.arbiter.queue_position(job_id)}
        return doc

    async def get_job(self, request: web.Request) -> web.Response:
        doc = self._status(request.match_info["id"])
        if doc is None:
            return error(404, "not_found", f"no job {request.match_info['id']!r}")
        return web.json_response(doc)

    async def list_jobs(self, request: web.Request) -> web.Response:
        state = request.query.get("state")
        kind = request.query.get("kind")
        try:
            limit = max(1, min(int(request.query.get("limit", 50)), 1000))
        except ValueError:
            return error(400, "bad_request", "limit must be an integer")
        cursor = request.query.get("cursor") or ""
        names = sorted((n for n in os.listdir(self.spool.outbox) if is_valid_job_id(n) and n > cursor))
        jobs = []
        for name in names:
            doc = read_json(self.spool.outbox / name / STATUS)
            if doc is None or (state and doc.get("state") != state) or (kind and doc.get("kind") != kind):
                continue
            jobs.append({k: doc.get(k) for k in ("id", "kind", "state", "progress", "stage", "created_at", "finished_at", "labels")})
            if len(jobs) == limit:
                break
        next_cursor = jobs[-1]["id"] if len(jobs) == limit else None
        return web.json_response({"jobs": jobs, "next_cursor": next_cursor})

    async def submit(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if len(raw) > self.arbiter.settings.limits.job_json_bytes:
            return error(413, "too_large", "job JSON over [limits] job_json_bytes")
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return error(400, "invalid_job", f"body is not valid JSON: {exc}")
        if not isinstance(doc, dict):
            return error(400, "invalid_job", "body must be a JSON object")
        job_id = doc.get("id") if isinstance(doc.get("id"), str) and is_valid_job_id(doc["id"]) else f"api-{secrets.token_hex(6)}"
        if self.spool.job_outbox(job_id).exists():
            job_id = f"{job_id}-{secrets.token_hex(3)}"
        doc["id"] = job_id
        name = f"{job_id}.json"
        tmp = self.spool.inbox / f".{name}.part"
        atomic_write_bytes(tmp, json.dumps(doc).encode())
        os.rename(tmp, self.spool.inbox / name)
        self.arbiter.scanner.note_moved_in(self.spool.inbox / name)
        self.arbiter.wake()
        return web.json_response({"id": job_id, "state": "submitted", "status_url": f"{API}/jobs/{job_id}"}, status=202)

    async def cancel_job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        outcome = self.arbiter.cancel(job_id, source="api")
        if outcome == "not_found":
            return error(404, "not_found", f"no job {job_id!r}")
        if outcome == "final":
            return error(409, "conflict", f"job {job_id!r} has already ended")
        return web.json_response({"id": job_id, "state": outcome}, status=202)

    def _file(self, job_id: str, name: str) -> Path | None:
        if not is_valid_job_id(job_id):
            return None
        out = self.spool.job_outbox(job_id)
        doc = read_json(out / STATUS) or {}
        files = {f["name"] for f in ((doc.get("result") or {}).get("files") or [])}
        if name not in files:
            return None
        return out / name

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        path = self._file(request.match_info["id"], request.match_info["name"])
        if path is None or not path.is_file():
            return error(404, "not_found", "no such result file")
        return web.FileResponse(path)

    async def download(self, request: web.Request) -> web.StreamResponse:
        job_id = request.match_info["id"]
        doc = self._status(job_id) or {}
        files = [f["name"] for f in ((doc.get("result") or {}).get("files") or [])]
        kind = self.arbiter.kinds.get(doc.get("kind") or "")
        main = kind.main_result if kind else None
        name = main if main in files else (files[0] if files else None)
        if name is None:
            return error(404, "not_found", f"job {job_id!r} has no result yet")
        return web.FileResponse(self.spool.job_outbox(job_id) / name)


    async def list_models(self, request: web.Request) -> web.Response:
        return web.json_response({"models": self.arbiter.models_view()})

    async def load_model(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            device = self.arbiter.load_model(name)
        except KeyError:
            return error(404, "not_found", f"no model {name!r} in the registry")
        except RuntimeError as exc:
            return error(503, "unavailable", str(exc))
        return web.json_response({"model": name, "device": device, "state": "loading"}, status=202)

    async def unload_model(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.arbiter.settings.models:
            return error(404, "not_found", f"no model {name!r} in the registry")
        return web.json_response({"model": name, "devices": self.arbiter.unload_model(name), "state": "unloading"}, status=202)


@web.middleware
async def spool_errors(request: web.Request, handler):
    """A request that meets a broken spool (dead mount, full disk) gets 503, not 500."""
    try:
        return await handler(request)
    except OSError as exc:
        reason = spool_fault(exc)
        if reason is None:
            raise
        status, code = (507, "insufficient_storage") if "ENOSPC" in reason or "EDQUOT" in reason else (503, "spool_unavailable")
        return error(status, code, f"spool unavailable: {reason}")


async def start_api(arbiter, host: str, port: int):
    app = web.Application(client_max_size=arbiter.settings.limits.job_json_bytes + 1024, middlewares=[spool_errors])
    app.add_routes(Api(arbiter).routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    real_port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://{host}:{real_port}"
