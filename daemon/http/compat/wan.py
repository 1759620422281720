"""The Wan2.1 Video Server's API (seed 004), served by vidspool.

`POST /api/v1/generate/text-to-video` (JSON), `/image-to-video` and `/video-to-video`
(multipart, an `image` or `video` file) become text/image/video-to-video jobs with the
document's defaults for omitted fields (64 frames, 24 fps, 512x512, 50 steps, guidance 7.5,
strength 0.8, seed -1 = random) and its ranges (at most 128 frames, guidance 1-20, steps
25-100). Values the model cannot take exactly (Wan2.1: 4k+1 frames, sides in multiples of
16) are fitted and `GET /api/v1/job/:id` says what changed. Job ids are
`job_<unix>_<12 hex>`; results are `/outputs/<kind>_<job id>.mp4`, looked up by the id in
the name. `[compat.wan] max_concurrent` answers 429 beyond that many unfinished jobs of
this personality. `/api/v1/models` lists the registry and this daemon's hub downloads;
`POST /api/v1/models/download` starts one (daemon/view/downloads.py). Errors are `{"error": "..."}`;
a kind without a model here (none in the registry, or several and no `[kinds.KIND] model`)
is the document's 503 `Model not loaded`, with the key to set as `reason`. A
video-to-video job keeps the upload's size: the preset's width and height are not applied.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from pathlib import Path

from aiohttp import web
from pydantic import ValidationError

from contract.errors import JobError
from contract.input_formats import MediaRefused
from contract.model_folders import hub_cache_dir, model_folder
from contract.status import FINAL_STATES
from daemon import __version__
from daemon.http.compat.front import BadRequest, Form, Personality, Submission, gpu_index, iso, notes
from daemon.http.auth import may_submit, presented_token
from daemon.config import format_validation_error
from daemon.view.downloads import DownloadRefused
from daemon.view.for_fronts import hub_repo, is_valid_job_id
from daemon.http.compat.ffmpeg_input import run_on_file

API = "/api/v1"
T2V, I2V, V2V = "text-to-video", "image-to-video", "video-to-video"
# The result's file name: `<prefix>_<job id>.mp4` (the document shows `text2video_…mp4`).
PREFIX = {T2V: "text2video", I2V: "image2video", V2V: "video2video"}
KIND_OF = {p: k for k, p in PREFIX.items()}
OUTPUT = re.compile(r"^(text2video|image2video|video2video)_([A-Za-z0-9._-]{1,64})\.mp4$")
UPLOAD = {I2V: "image", V2V: "video"}
# The document's fields per endpoint, with its defaults ("" and seed -1: left out).
GENERATION = {"negative_prompt": "", "num_frames": 64, "fps": 24, "width": 512, "height": 512, "seed": -1,
              "guidance_scale": 7.5, "num_inference_steps": 50}
DEFAULTS = {T2V: GENERATION, I2V: GENERATION,
            V2V: {"negative_prompt": "", "fps": 24, "strength": 0.8, "seed": -1, "guidance_scale": 7.5,
                  "num_inference_steps": 50}}
# (type, low, high) of the numeric fields: the document's ranges, and vidspool's where it has none.
RANGES = {"num_frames": (int, 1, 128), "fps": (int, 1, 120), "width": (int, 1, 4096), "height": (int, 1, 4096),
          "seed": (int, -1, 2**63 - 1), "guidance_scale": (float, 1, 20), "num_inference_steps": (int, 25, 100),
          "strength": (float, 0, 1)}
SEED_STATUS = {"queued": "pending", "running": "processing", "completed": "completed", "failed": "failed",
               "canceled": "failed"}
MESSAGES = {"queued": "Job queued", "running": "Generating video...", "completed": "Generation complete"}
TOO_MANY = "Too many concurrent requests. Please try again later."


def invalid(message: str) -> BadRequest:
    return BadRequest(f"Invalid request: {message}", 400, "invalid_job")


def output_name(doc: dict) -> str:
    return f"{PREFIX.get(doc.get('kind'), 'video')}_{doc['id']}.mp4"


async def probe_video(path: Path) -> dict | None:
    """width, height and nb_frames of an uploaded video's first stream (ffprobe, reading it
    as daemon.http.compat.ffmpeg_input does); None when ffprobe is missing or too slow. BadRequest for a
    file that is not a video."""
    try:
        ran = await run_on_file("ffprobe", path, ("video",), ["-v", "error", "-select_streams", "v:0"],
                                ["-show_entries", "stream=width,height,nb_frames", "-of", "json"], 30)
    except MediaRefused as exc:
        raise invalid(f"video: {path.name} {exc.reason}") from None
    except TimeoutError:
        return None
    if ran is None:
        return None
    returncode, out, _ = ran
    streams = (json.loads(out or b"{}").get("streams") or []) if returncode == 0 else []
    if not streams:
        raise invalid("video is not a readable video file (MP4, AVI)")
    return streams[0]


class Wan(Personality):
    name = "wan"
    kinds = (T2V, I2V, V2V)
    open_paths = frozenset({"/health"})  # with `require_tokens`, health stays open
    queue_full_status = 429  # the document's "Too many concurrent requests"

    def __init__(self, view, config):
        super().__init__(view, config)
        # This personality's queued or running jobs, for max_concurrent: seeded from the
        # outbox, followed by status changes (one still in the inbox at start-up counts once
        # accepted), and re-checked against status.json when at the limit.
        self.unfinished: set[str] = set()
        if config.max_concurrent is not None:
            self.unfinished = {j.id for j in self.own_jobs() if j.state not in FINAL_STATES}
            view.on_status(self.track)

    def routes(self) -> list:
        return [
            web.get("/health", self.health),
            web.get(f"{API}/model/info", self.model_info),
            web.post(f"{API}/generate/text-to-video", self.text_to_video),
            web.post(f"{API}/generate/image-to-video", self.image_to_video),
            web.post(f"{API}/generate/video-to-video", self.video_to_video),
            web.get(f"{API}/job/{{job_id}}", self.get_job),
            web.get("/outputs/{filename}", self.output),
            web.get(f"{API}/models", self.list_models),
            web.post(f"{API}/models/download", self.download),
        ]

    # -- health and info ------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        problems = self.view.problems()
        body = {"status": "unhealthy" if problems else "healthy", "service": "wan2-video-server",
                "version": __version__}
        if problems:
            body["problems"] = problems
        return web.json_response(body, status=503 if problems else 200)

    async def model_info(self, request: web.Request) -> web.Response:
        gpus = [i for d in self.view.devices() if (i := gpu_index(d["device"])) is not None]
        model = self.model_for(T2V)
        config = self.settings.models.get(model or "")
        family = self.family(model)
        repo = config and (config.repo or hub_repo(config.path))
        if family is not None:
            name = "Wan2.1" if family.name.startswith("wan") else family.name
        else:
            name = model if config else "Wan2.1"
        return web.json_response({
            "name": name, "version": __version__, "provider": "huggingface" if repo or config is None else "local",
            "gpu_enabled": bool(gpus), "gpu_device_id": gpus[0] if gpus else None,
            "cache_dir": self.view.paths.path(hub_cache_dir()),  # "hub": no host path to anonymous clients
            "model": model if config else None, "model_id": repo or (self.view.paths.path(config.path) if config else None),
            "available": self.unavailable(T2V) is None})

    # -- generating -----------------------------------------------------------------------
    async def text_to_video(self, request: web.Request) -> web.Response:
        return await self.generate(request, T2V)

    async def image_to_video(self, request: web.Request) -> web.Response:
        return await self.generate(request, I2V)

    async def video_to_video(self, request: web.Request) -> web.Response:
        return await self.generate(request, V2V)

    def unavailable(self, kind: str) -> str | None:
        """Why no registry model can run `kind` here (None: one can)."""
        model = self.model_for(kind)
        if model is not None and not self.view.has_model(model):
            self.view.models()  # rescans [registry] dir: a folder copied in (or downloaded) since
        config = self.settings.models.get(model or "")
        if config is None:
            return f"model {model!r} is not in the registry" if model else self.kind_model(kind).problem()
        if not self.view.kinds[kind].serves(config.kinds):
            return f"model {model!r} serves {', '.join(config.kinds)}, not {kind}"
        try:
            model_folder(model, config.model_dump(mode="json"))
        except JobError as exc:
            return self.view.paths.text(exc.message)
        return None

    async def read(self, request: web.Request, kind: str, staging) -> Form:
        """The request's fields (JSON, as the document sends text-to-video, or a form) and
        its upload."""
        if request.content_type != "application/json":
            return await self.form(request, staging, {UPLOAD[kind]} if kind in UPLOAD else set())
        body = await self.json_body(request)
        for key in ("prompt", "negative_prompt"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise invalid(f"{key} must be a string")
        return Form({k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items() if v is not None})

    def params(self, form: Form, kind: str, job: Submission) -> None:
        """The document's fields into job params, checked against its ranges; omitted ones
        get its defaults under the preset's params (submit()'s order, applied here so the
        whole job is checked before it is queued); unknown ones are listed as ignored."""
        defaults = DEFAULTS[kind]
        prompt = (form.text("prompt") or "").strip()
        if prompt:
            job.params["prompt"] = form.text("prompt")
        elif kind == T2V:
            raise invalid("prompt is required")
        elif kind == V2V:  # vidspool's video-to-video needs a prompt; Wan cleans a blank one to ""
            job.params["prompt"] = " "
            job.adjusted.append('prompt ""→" " (video-to-video here takes a non-empty prompt, '
                                'and Wan2.1 reads a blank one as "")')
        preset_params = self.preset_params(kind)  # video-to-video: never the preset's size
        for key, default in defaults.items():
            if form.text(key) is not None:
                value = form.text(key) if key == "negative_prompt" else self.number(form, key)
            else:
                value = preset_params.get(key, default)
            if (key, value) not in (("negative_prompt", ""), ("seed", -1)):  # "" and -1: none, random
                job.params[key] = value
        for key, value in preset_params.items():  # the preset's other params (fitted too)
            job.params.setdefault(key, value)
        for key in sorted(set(form.fields) - set(defaults) - {"prompt"}):
            shown = re.sub(r"[^\w.-]", "?", key[:64])  # notes are "; "-joined in a label
            job.ignored.append(f"{shown} (not a field of {kind} in the document)")

    def number(self, form: Form, key: str):
        kind, low, high = RANGES[key]
        try:
            value = form.number(key, kind)
        except BadRequest as exc:
            raise invalid(str(exc)) from None
        if not math.isfinite(value) or value < low or value > high or (key == "strength" and value == 0):
            bounds = "above 0 and at most 1" if key == "strength" else f"between {low} and {high}"
            raise invalid(f"{key} must be {bounds}, got {form.text(key)}")
        return value

    async def fit_video(self, job: Submission, video) -> None:
        """video-to-video takes the upload's frames and size: says how the model moves them."""
        family = self.family(self.model_for(V2V))
        found = await probe_video(video)
        if family is None or found is None:
            return
        frames = int(found.get("nb_frames") or 0) if str(found.get("nb_frames", "")).isdigit() else 0
        if frames and not family.frames_ok(frames):
            job.adjusted.append(f"video frames {frames}→{family.nearest_frames(frames)} ({family.name} takes "
                                f"{family.describe_frames()}, the last ones are left out)")
        m = family.size_multiple
        for key in ("width", "height"):
            side = found.get(key)
            if isinstance(side, int) and side % m and key not in job.params:
                job.adjusted.append(f"video {key} {side}→{side - side % m} ({family.name} takes multiples of {m})")

    def error(self, status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
        if code == "model_not_found":  # the document's 503, with why
            return web.json_response({"error": "Model not loaded", "reason": message}, status=503, headers=headers)
        return super().error(status, code, message, headers)

    def refused(self, exc: JobError) -> BadRequest:
        if exc.code == "model_not_found":
            return BadRequest(self.view.paths.text(exc.message), 503, "model_not_found")
        return invalid(self.view.paths.text(exc.message))

    async def generate(self, request: web.Request, kind: str) -> web.Response:
        if (reason := self.unavailable(kind)) is not None:
            return self.error(503, "model_not_found", reason)
        self.refuse_when_full()
        token, staging = self.staging()
        try:
            form = await self.read(request, kind, staging)
            job = Submission(kind)
            if kind in UPLOAD:
                upload = form.files.get(UPLOAD[kind])
                if upload is None:
                    raise invalid(f"{UPLOAD[kind]} file is required")
                job.inputs[UPLOAD[kind]] = upload.name
            self.params(form, kind, job)
            self.fit(job)
            if kind == V2V:
                await self.fit_video(job, form.files["video"])
            try:
                self.view.kinds[kind].params.model_validate(job.params)
            except ValidationError as exc:
                raise invalid(format_validation_error(exc, "params")) from None
            if self.too_busy():
                raise BadRequest(TOO_MANY, 429, "too_many")
            # Checked as the daemon's intake checks it (refused(): a 4xx leaves no job).
            job_id = self.submit(token, staging, job, f"job_{int(time.time())}_{secrets.token_hex(6)}")
            if self.config.max_concurrent is not None:
                self.unfinished.add(job_id)
        finally:
            self.discard(staging)
        return web.json_response({"job_id": job_id, "status": "processing", "message": "Video generation started"})

    def queue_full(self, waiting: int) -> BadRequest:
        return BadRequest(TOO_MANY, 429, "too_many")

    # -- max_concurrent ---------------------------------------------------------------------
    def track(self, doc: dict) -> None:
        if doc.get("state") in FINAL_STATES:
            self.unfinished.discard(doc.get("id"))
        elif (doc.get("labels") or {}).get("compat") == self.name:
            self.unfinished.add(doc["id"])

    def too_busy(self) -> bool:
        limit = self.config.max_concurrent
        if limit is None:
            return False
        if len(self.unfinished) >= limit:  # ended elsewhere (another daemon on the spool)?
            self.unfinished = {i for i in self.unfinished
                               if (d := self.status(i)) is None or d["state"] not in FINAL_STATES}
        return len(self.unfinished) >= limit

    # -- jobs and results ------------------------------------------------------------------------
    def describe(self, doc: dict) -> dict:
        state = doc["state"]
        if state in ("failed", "canceled"):
            message = f"Error: {(doc.get('error') or {}).get('message') or state}"
        elif state == "queued" and doc.get("queue_position"):
            message = f"Job queued (position {doc['queue_position']})"
        else:
            message = MESSAGES.get(state, state)
        adjusted, ignored = notes(doc, "compat_adjusted"), notes(doc, "compat_ignored")
        if adjusted:
            message += f"; adjusted: {'; '.join(adjusted)}"
        out = {"job_id": doc["id"], "status": SEED_STATUS.get(state, state), "message": message,
               "progress": doc.get("progress") or 0}
        if state == "completed":
            out["output_path"] = f"./outputs/{output_name(doc)}"
        if adjusted:
            out["adjustments"] = adjusted
        if ignored:
            out["ignored"] = ignored
        out["created_at"] = iso(doc.get("created_at"))
        out["updated_at"] = iso(doc.get("updated_at") or doc.get("finished_at") or doc.get("created_at"))
        return out

    async def get_job(self, request: web.Request) -> web.Response:
        found = self.translated(request.match_info["job_id"], self.describe)
        return found or self.error(404, "not_found", "Job not found")

    async def output(self, request: web.Request) -> web.StreamResponse:
        """`<prefix>_<job id>.mp4`: the completed job's video, found by its id (nothing of
        the name reaches the filesystem)."""
        match = OUTPUT.match(request.match_info["filename"])
        doc = self.status(match[2]) if match and is_valid_job_id(match[2]) else None
        if doc is None or doc["state"] != "completed" or doc.get("kind") != KIND_OF[match[1]]:
            return self.error(404, "not_found", "File not found")
        found = self.result(doc["id"])
        if found is None:
            return self.error(404, "not_found", "File not found")
        return self.send_file(found, output_name(doc))

    # -- models ---------------------------------------------------------------------------------
    async def list_models(self, request: web.Request) -> web.Response:
        """The registry's video models, and this daemon's hub downloads (progress, failures)."""
        cache = self.view.paths.path(hub_cache_dir())
        models: dict[str, dict] = {}
        for entry in self.view.models():
            if (entry["kinds"] and not set(entry["kinds"]) & set(self.kinds)) or entry.get("backend"):
                continue  # a speech or lip-sync model
            repo = entry["repo"] or hub_repo(entry["path"])
            folder = self.view.paths.path(Path(entry["path"]).parent) if entry["path"] else None
            # id: the name a job gives (a download's is its full repo id; [models.X] repo = …: X).
            models[entry["name"]] = {
                "id": entry["name"], "name": entry["name"], "repo": repo, "provider": "huggingface" if repo else "local",
                "cache_dir": cache if repo else folder, "downloaded": entry["available"], "kinds": entry["kinds"]}
        for d in self.view.downloads():
            progress = {k: d[k] for k in ("state", "bytes_done", "bytes_total")}
            progress["error"] = d["error"] and self.view.paths.text(d["error"])  # an OSError may name the cache
            if d["name"] in models:
                models[d["name"]]["download"] = progress
            else:
                models[d["name"]] = {"id": d["name"], "name": d["name"], "repo": d["repo"], "provider": "huggingface",
                                     "cache_dir": cache, "downloaded": d["state"] == "downloaded", "download": progress}
        return web.json_response({"models": list(models.values())})

    async def download(self, request: web.Request) -> web.Response:
        body = await self.json_body(request)
        repo = body.get("model_id")
        if not isinstance(repo, str) or not repo.strip():
            raise invalid("model_id is required")
        try:  # with require_tokens, authorize() has checked the submit scope; else a token, the operator key or download_allow
            bearer = presented_token(request.headers, {})
            started = await self.view.download_model(repo.strip(), bearer=bearer,
                                                     authorized=bool(self.tokens) or may_submit(self.view.settings.api, bearer))
        except DownloadRefused as exc:
            raise BadRequest(exc.message, exc.status, exc.code) from None
        failed = started["state"] == "failed"
        return web.json_response({"message": f"Model download failed: {started['error']}" if failed
                                  else "Model download started", "model_id": started["repo"],
                                  "name": started["name"], "state": started["state"]})


PERSONALITY = Wan
