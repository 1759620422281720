"""The Visualizr video generation API (seed 003), served by vidspool.

`POST /api/v1/generate/video` is a text-to-video job, `/generate/video/from-image` and
`/generate/character-animation` ([characters.ID]: a configured image and prompt template)
image-to-video jobs; ids `video_req_<hex>` / `anim_req_<hex>`. A `model` the document names
(`stable-video-diffusion`) runs this host's model of that family, else the kind's default
(model_names.py); the document's `assistant` character is the default face unless
configured. Omitted fields get the model's own defaults (its [models.X] defaults, then its
pipeline's); sizes and frame counts the model cannot take are fitted, fields it cannot
honour listed as ignored, and both are in the translated status. Status, WebSocket progress, models, assets, health and metrics are
translated from status documents and the registry (visualizr_*.py). With [api] tokens
configured every endpoint but /api/v1/health needs `Authorization: Bearer`. Errors are
`{"error": {"code", "message", "details"}}` with the document's codes and statuses.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time

from aiohttp import web
from pydantic import ValidationError

from contract.errors import JobError
from daemon.http.compat.visualizr import assets
from daemon.http.compat.faces import default_face
from daemon.http.compat.front import BadRequest, Personality, Submission, iso, now_iso
from daemon.http.compat.model_names import named_model
from daemon.http.compat.visualizr.models import FAMILY_INFO, ModelCatalog, gb
from daemon.http.compat.visualizr.status import job_ids_for, served_file, translate, video_id
from daemon.http.compat.visualizr.system import GpuInfo, health, metrics
from daemon.http.compat.visualizr.ws import Subscriptions, serve
from daemon.config import CharacterConfig, format_validation_error
from daemon.http.guard import origin_of, own_origin, request_origin

BASE = "/api/v1"
T2V, I2V = "text-to-video", "image-to-video"
# aiohttp's and the shared checks' codes in the document's style.
CODES = {"bad_request": "INVALID_PARAMETERS", "invalid_job": "INVALID_PARAMETERS", "too_large": "PAYLOAD_TOO_LARGE"}
GEN_PARAMS = ("negative_prompt", "width", "height", "num_frames", "fps", "num_inference_steps", "guidance_scale", "seed")
# Intake refusals (the job never ran) answered as the request's own error.
INTAKE_ERRORS = {"invalid_job": (400, "INVALID_PARAMETERS"), "unsupported_input": (400, "INVALID_PARAMETERS"),
                 "missing_input": (400, "INVALID_PARAMETERS"), "model_not_found": (404, "MODEL_NOT_FOUND")}
# The document's character, served without a [characters.assistant].
BUILT_IN_CHARACTER = "assistant"
BUILT_IN_PROMPT = "a friendly assistant {action}, {emotion}, {background}, {animation_style} motion"
# Character animation fields left out: the prompt template gets these.
CHARACTER_DEFAULTS = {"action": "idle", "emotion": "neutral", "background": "", "animation_style": "natural"}
RESOLUTION = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")
ACCEPT_SECONDS, END_SECONDS = 3.0, 5.0


def clean_prompt(text: str) -> str:
    """A filled template without the gaps an empty field leaves (", ," and spaces)."""
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s*,(\s*,)+", ",", text)
    return text.strip(" ,")


class Visualizr(Personality):
    name = "visualizr"
    kinds = (T2V, I2V)
    tokens_by_default = True  # its document: `Authorization: Bearer YOUR_API_KEY`
    open_paths = frozenset({f"{BASE}/health"})

    def __init__(self, view, config):
        super().__init__(view, config)
        self.started = time.monotonic()
        self.catalog = ModelCatalog(self)
        self.gpus = GpuInfo()
        self.subscriptions = Subscriptions(view)

    def routes(self) -> list:
        return [
            web.post(f"{BASE}/generate/video", self.generate_video),
            web.post(f"{BASE}/generate/video/from-image", self.generate_from_image),
            web.post(f"{BASE}/generate/character-animation", self.character_animation),
            web.get(f"{BASE}/generate/status/{{request_id}}", self.get_status),
            web.delete(f"{BASE}/generate/{{request_id}}", self.cancel),
            web.get(f"{BASE}/models", self.list_models),
            web.get(f"{BASE}/models/{{model_id}}", self.get_model),
            web.post(f"{BASE}/models/{{model_id}}/load", self.load_model),
            web.post(f"{BASE}/models/{{model_id}}/unload", self.unload_model),
            web.get(f"{BASE}/assets/videos", self.list_videos),
            web.get(f"{BASE}/assets/videos/{{video_id}}", self.get_video),
            web.delete(f"{BASE}/assets/videos/{{video_id}}", self.delete_video),
            web.get("/assets/video/{file}", self.asset_file),
            web.get(f"{BASE}/health", self.health),
            web.get(f"{BASE}/metrics", self.get_metrics),
            web.get(f"{BASE}/ws/generation", self.websocket),
        ]

    def error(self, status: int, code: str, message: str, headers: dict | None = None, details=None) -> web.Response:
        code = CODES.get(code, code.upper())
        if status == 503 and headers is None:
            headers = {"Retry-After": "10"}  # QUEUE_FULL, a broken spool: it may pass
        return web.json_response({"error": {"code": code, "message": message, "details": details}},
                                 status=status, headers=headers)

    # -- building jobs ------------------------------------------------------------------------
    def queue_full(self, waiting: int) -> BadRequest:
        return BadRequest(f"{waiting} requests are waiting ([api] max_queued_jobs); try again later", 503, "QUEUE_FULL")

    def pick_model(self, name, job: Submission) -> None:
        """The request's model as `job.model` (checked: in the registry, serving the job's
        kind); a name of the seed's document (`stable-video-diffusion`) runs a registry model
        of its family, else the kind's default, and says so (model_names.py); no name: the
        kind's default."""
        if name is None:
            return
        if not isinstance(name, str) or not name:
            raise BadRequest("model must be a model id (GET /api/v1/models)", 400, "INVALID_PARAMETERS")
        if not self.view.has_model(name):
            self.view.models()  # rescans [registry] dir: a folder copied in since
        config = self.settings.models.get(name)
        if config is None:
            mapped = named_model(self, name, job.kind)
            if mapped is None:
                known = ", ".join(e["id"] for e in (self.catalog.summary(*x) for x in self.catalog.entries())) or "none"
                raise BadRequest(f"model {name!r} is not available (available: {known})", 404, "MODEL_NOT_FOUND")
            job.model, note = mapped
            if job.model is None:
                raise BadRequest(note, 404, "MODEL_NOT_FOUND")
            job.adjusted.append(note)
            return
        family = self.family(name)
        served = config.kinds or (sorted(family.classes) if family else [])  # empty: its family's kinds
        if served and job.kind not in served:
            raise BadRequest(f"model {name!r} serves {', '.join(served)}, not {job.kind}", 400, "INVALID_PARAMETERS")
        job.model = name

    def refused(self, exc: JobError) -> BadRequest:
        status, code = INTAKE_ERRORS.get(exc.code, (400, "INVALID_PARAMETERS"))
        return BadRequest(self.view.paths.text(exc.message), status, code)

    def model_fps(self, job: Submission) -> int:
        """The fps a job of this model gets without one: its defaults', else its family's."""
        model = self.model_for(job.kind, job.model)
        config = self.settings.models.get(model or "")
        kind_cfg = self.settings.kinds.get(job.kind)
        defaults = {**(kind_cfg.defaults if kind_cfg else {}), **(config.defaults if config else {})}
        family = self.family(model)
        return defaults.get("fps") or (family.default_fps if family else 16)

    def check(self, job: Submission) -> None:
        """The request's params against the kind's own schema, before anything is queued;
        texts the model's pipeline takes no part of (SVD: no prompt) left out, and said so."""
        family = self.family(self.model_for(job.kind, job.model))
        _, prompt, negative = FAMILY_INFO.get(family.name if family else "", ("", True, True))
        for key, takes in (("prompt", prompt), ("negative_prompt", negative)):
            if not takes and key in job.params:
                job.ignored.append(f"{key}={job.params.pop(key)!r} ({family.name} takes no text prompt)")
        try:
            self.view.kinds[job.kind].params.model_validate(job.params, strict=True)
        except ValidationError as exc:
            prompt = any(e["loc"] and e["loc"][0] == "prompt" for e in exc.errors())
            raise BadRequest(format_validation_error(exc, "request"), 400,
                             "INVALID_PROMPT" if prompt else "INVALID_PARAMETERS") from None
        self.fit(job)

    def frames_for(self, job: Submission, duration, fps: int | None) -> None:
        """duration_seconds × fps → num_frames (fitted afterwards)."""
        if duration is None:
            return
        if not isinstance(duration, (int, float)) or isinstance(duration, bool) or not 0 < duration <= 600:
            raise BadRequest(f"duration_seconds must be a number of seconds in (0, 600], got {duration!r}", 400, "INVALID_PARAMETERS")
        job.params["num_frames"] = max(1, round(duration * (fps or self.model_fps(job))))

    async def start(self, job: Submission, prefix: str, token: str, staging) -> tuple[str, dict | None]:
        """Submits the job (checked as the daemon's intake checks it: a refusal is this
        request's error, and leaves no job) and waits briefly for the daemon to accept it."""
        try:
            self.check(job)
            job_id = self.submit(token, staging, job, prefix + secrets.token_hex(8))
        finally:
            self.discard(staging)
        return job_id, await self.accepted(job_id)

    async def accepted(self, job_id: str) -> dict | None:
        """The job's first status written by the daemon (None if it takes longer than
        ACCEPT_SECONDS; until then the read model answers a bare "being accepted" one)."""
        deadline = time.monotonic() + ACCEPT_SECONDS
        while not (doc := self.status(job_id) or {}).get("created_at") and time.monotonic() < deadline:
            await self.view.events.wait(0.05)
        return doc if doc.get("created_at") else None

    def answer(self, job_id: str, doc: dict | None, job: Submission, **extra) -> web.Response:
        seed = translate(doc) if doc else {"status": "pending", "created_at": now_iso(), "queue_position": None}
        estimate = self.estimate(doc)
        out = {"request_id": job_id, "status": seed["status"], **extra,
               "estimated_time_seconds": self.seconds(estimate.get("estimated_time_seconds")),
               "queue_position": seed.get("queue_position"), "created_at": seed["created_at"]}
        if job.adjusted:
            out["adjusted"] = job.adjusted
        if job.ignored:
            out["ignored"] = job.ignored
        return web.json_response(out)

    @staticmethod
    def seconds(seconds) -> float | None:
        return round(seconds, 1) if isinstance(seconds, (int, float)) else None

    def estimate(self, doc: dict | None) -> dict:
        return self.view.estimate(doc) if doc and doc.get("state") in ("queued", "running") else {}

    def unknown_fields(self, given, known, job: Submission) -> None:
        for key in sorted(set(given) - set(known)):
            job.ignored.append(f"{key} (not a field of this endpoint)")

    # -- generation ------------------------------------------------------------------------------
    async def generate_video(self, request: web.Request) -> web.Response:
        body = await self.json_body(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadRequest("prompt is required: a non-empty text describing the video", 400, "INVALID_PROMPT")
        self.refuse_when_full()
        job = Submission(T2V, {k: body[k] for k in GEN_PARAMS if body.get(k) is not None})
        self.pick_model(body.get("model"), job)
        job.params["prompt"] = self.styled(prompt, body.get("style"), job)
        self.unknown_fields(body, (*GEN_PARAMS, "prompt", "model", "style"), job)
        token, staging = self.staging()
        job_id, doc = await self.start(job, "video_req_", token, staging)
        return self.answer(job_id, doc, job)

    def styled(self, prompt: str, style, job: Submission) -> str:
        """`style` → its [compat.visualizr] styles words after the prompt; else ignored."""
        if style is None or style == "":
            return prompt
        if not isinstance(style, str):
            raise BadRequest("style must be a text, e.g. \"cinematic\"", 400, "INVALID_PARAMETERS")
        words = self.config.styles.get(style)
        if words is None:
            job.ignored.append(f"style={style!r} (no [compat.visualizr] styles entry for it, "
                               f"configured: {', '.join(sorted(self.config.styles)) or 'none'})")
            return prompt
        return f"{prompt}, {words}"

    async def generate_from_image(self, request: web.Request) -> web.Response:
        self.refuse_when_full()
        token, staging = self.staging()
        try:
            form = await self.form(request, staging, {"image"})
            if "image" not in form.files:
                raise BadRequest("image is required: the source image file (multipart field `image`)", 400, "INVALID_PARAMETERS")
            job = Submission(I2V, inputs={"image": form.files["image"].name})
            self.pick_model(form.text("model"), job)
            if prompt := form.text("motion_prompt"):
                job.params["prompt"] = prompt
            if negative := form.text("negative_prompt"):
                job.params["negative_prompt"] = negative
            for key in ("width", "height", "num_inference_steps", "seed"):
                if (value := form.number(key, int)) is not None:
                    job.params[key] = value
            if (guidance := form.number("guidance_scale", float)) is not None:
                job.params["guidance_scale"] = guidance
            fps = form.number("fps", int, None, 1, 120)
            if fps is not None:
                job.params["fps"] = fps
            self.frames_for(job, form.number("duration_seconds", float), fps)
            motion = form.number("motion_strength", float, None, 0, 1)
            if motion is not None:
                job.ignored.append(f"motion_strength={motion} (vidspool's image-to-video jobs take no motion control)")
            self.unknown_fields(form.fields, ("motion_prompt", "negative_prompt", "width", "height", "num_inference_steps",
                                              "seed", "guidance_scale", "fps", "duration_seconds", "motion_strength", "model"), job)
        except BaseException:
            self.discard(staging)
            raise
        job_id, doc = await self.start(job, "video_req_", token, staging)
        return self.answer(job_id, doc, job)

    async def character_animation(self, request: web.Request) -> web.Response:
        body = await self.json_body(request)
        character_id = body.get("character_id")
        if not isinstance(character_id, str) or not character_id:
            raise BadRequest("character_id is required", 400, "INVALID_PARAMETERS")
        character = self.character(character_id)
        if character is None:
            raise BadRequest(f"no character {character_id!r} (configured: {', '.join(sorted(self.settings.characters)) or 'none'})",
                             404, "CHARACTER_NOT_FOUND")
        self.refuse_when_full()
        values = {}
        for key, default in CHARACTER_DEFAULTS.items():
            value = default if body.get(key) is None else body[key]
            if not isinstance(value, str):
                raise BadRequest(f"{key} must be a text", 400, "INVALID_PARAMETERS")
            values[key] = value
        job = Submission(I2V, {"prompt": clean_prompt(character.prompt.format(**values))},
                         labels={"visualizr_character": character_id})
        self.pick_model(character.model, job)
        resolution = body.get("resolution")
        if resolution is not None:
            found = RESOLUTION.match(resolution) if isinstance(resolution, str) else None
            if found is None:
                raise BadRequest(f"resolution must be WIDTHxHEIGHT, e.g. \"1024x1024\", got {resolution!r}", 400, "INVALID_PARAMETERS")
            job.params["width"], job.params["height"] = int(found[1]), int(found[2])
        self.frames_for(job, body.get("duration_seconds"), None)
        self.unknown_fields(body, ("character_id", "resolution", "duration_seconds", *CHARACTER_DEFAULTS), job)
        if not character.image.is_file():
            raise BadRequest(f"character {character_id!r}: its image {self.view.paths.path(character.image)} is missing on this host",
                             500, "GENERATION_FAILED")
        token, staging = self.staging()
        try:
            job.inputs["image"] = self.stage_file(staging, "image", character.image)
        except BaseException:
            self.discard(staging)
            raise
        job_id, doc = await self.start(job, "anim_req_", token, staging)
        return self.answer(job_id, doc, job, character_id=character_id)

    def character(self, character_id: str) -> CharacterConfig | None:
        """[characters.ID]; the document's `assistant`, unless configured, is the default face
        (daemon/http/compat/faces.py) with a template of its own."""
        found = self.settings.characters.get(character_id)
        if found is None and character_id == BUILT_IN_CHARACTER:
            face = default_face(self.config)
            return CharacterConfig(image=face, prompt=BUILT_IN_PROMPT, name="Assistant") if face else None
        return found

    # -- requests --------------------------------------------------------------------------------
    def request_doc(self, request: web.Request) -> dict:
        request_id = request.match_info["request_id"]
        doc = self.status(request_id)
        if doc is None:
            raise BadRequest(f"no generation request {request_id!r}", 404, "REQUEST_NOT_FOUND")
        return doc

    async def get_status(self, request: web.Request) -> web.Response:
        request_id = request.match_info["request_id"]
        found = self.translated(request_id, lambda d: translate(d, self.estimate(d)))
        if found is None:
            raise BadRequest(f"no generation request {request_id!r}", 404, "REQUEST_NOT_FOUND")
        return found

    async def cancel(self, request: web.Request) -> web.Response:
        doc = self.request_doc(request)
        outcome = self.view.cancel(doc["id"], source="visualizr")
        if outcome == "not_found":
            raise BadRequest(f"no generation request {doc['id']!r}", 404, "REQUEST_NOT_FOUND")
        if outcome == "final":
            state = translate(self.status(doc["id"]) or doc)["status"]
            raise BadRequest(f"generation request {doc['id']!r} has already ended ({state})", 409, "REQUEST_ALREADY_ENDED")
        deadline = time.monotonic() + END_SECONDS  # a running job stops at its next step
        while (now := self.status(doc["id"]) or doc)["state"] != "canceled" and time.monotonic() < deadline:
            await self.view.events.wait(0.1)
        if now["state"] == "canceled":
            return web.json_response({"request_id": doc["id"], "status": "cancelled", "cancelled_at": iso(now.get("finished_at")),
                                      "message": "Generation request cancelled successfully"})
        return web.json_response({"request_id": doc["id"], "status": "cancelling", "cancelled_at": None,
                                  "message": "Cancellation requested: the generation stops at its next step"})

    # -- models -----------------------------------------------------------------------------------
    def resident(self, name: str) -> list[dict]:
        """The workers holding a model: {device, bytes, load_seconds}, as they report it."""
        return [m for m in self.view.resident_models() if m["name"] == name]

    def load_seconds(self, name: str, held: list[dict]) -> float | None:
        """A load of the model here: its last load on a worker holding it (`held`), else the
        median of this host's past loads of it that jobs waited for; None if it never loaded."""
        return max(h["load_seconds"] for h in held) if held else self.view.load_estimate(name)

    def model_entry(self, request: web.Request):
        model_id = request.match_info["model_id"]
        found = self.catalog.find(model_id)
        if found is None:
            raise BadRequest(f"model {model_id!r} is not available", 404, "MODEL_NOT_FOUND")
        return found

    async def list_models(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [self.catalog.summary(*e) for e in self.catalog.entries()]})

    async def get_model(self, request: web.Request) -> web.Response:
        return web.json_response(self.catalog.details(*self.model_entry(request)))

    async def load_model(self, request: web.Request) -> web.Response:
        entry, _, _ = self.model_entry(request)
        held = self.resident(entry["name"])
        estimate = self.load_seconds(entry["name"], held)
        try:
            device = self.view.load_model(entry["name"])
        except KeyError:
            raise BadRequest(f"model {entry['name']!r} is not available", 404, "MODEL_NOT_FOUND") from None
        except RuntimeError as exc:
            raise BadRequest(f"model {entry['name']!r} cannot be loaded now: {exc}", 500, "MODEL_LOAD_FAILED") from None
        return web.json_response({"model_id": entry["name"], "status": "loaded" if held else "loading", "device": device,
                                  "estimated_load_time_seconds": estimate,
                                  "started_at": now_iso()})

    async def unload_model(self, request: web.Request) -> web.Response:
        entry, _, _ = self.model_entry(request)
        held = self.resident(entry["name"])
        devices = self.view.unload_model(entry["name"])
        deadline = time.monotonic() + END_SECONDS
        while self.resident(entry["name"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # the workers report what they hold after unloading
        done = not self.resident(entry["name"])
        freed = gb(sum(h["bytes"] for h in held))
        return web.json_response({"model_id": entry["name"], "status": "unloaded" if done else "unloading",
                                  "freed_memory_gb": freed if done else 0.0, "devices": devices, "unloaded_at": now_iso()})

    # -- assets -------------------------------------------------------------------------------------
    def video_doc(self, request: web.Request) -> tuple[str, dict]:
        video = request.match_info["video_id"]
        for job_id in job_ids_for(video):
            doc = self.status(job_id)
            if doc is not None:
                return video, doc
        raise BadRequest(f"no video {video!r}", 404, "REQUEST_NOT_FOUND")

    async def list_videos(self, request: web.Request) -> web.Response:
        return await self.listing(lambda: assets.select(self.own_jobs(), request.query, self.view.ended_status))

    async def get_video(self, request: web.Request) -> web.Response:
        video, doc = self.video_doc(request)
        if not assets.has_video(doc):
            raise BadRequest(f"no video {video!r}" + ("" if doc["state"] == "completed" else f" (its request is {translate(doc)['status']})"),
                             404, "REQUEST_NOT_FOUND")
        return web.json_response(assets.details(doc))

    async def delete_video(self, request: web.Request) -> web.Response:
        video, doc = self.video_doc(request)
        outcome, freed = self.view.delete_results(doc["id"])
        if outcome == "deleted":
            return web.json_response({"video_id": video, "status": "deleted", "freed_space_bytes": freed, "deleted_at": now_iso()})
        if outcome in ("not_ended", "busy"):
            raise BadRequest(f"video {video!r}: its request is still running; cancel it first" if outcome == "not_ended"
                             else f"video {video!r} is being deleted by another request", 409, "REQUEST_NOT_ENDED")
        raise BadRequest(f"no video {video!r}" + (" (deleted)" if outcome == "already_deleted" else ""), 404, "REQUEST_NOT_FOUND")

    async def asset_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        found = served_file(name)
        for job_id in job_ids_for(found[0]) if found else ():
            if (doc := self.status(job_id)) is not None and video_id(doc["id"]) == found[0]:
                path = self.result(job_id, found[1])
                if path is not None:
                    return self.send_file(path, name)
        raise BadRequest(f"no file {name!r}", 404, "NOT_FOUND")

    # -- health, metrics, progress -----------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        doc = await health(self.view, self.gpus, time.monotonic() - self.started)
        return web.json_response(doc, status=200 if doc["status"] == "healthy" else 503)

    async def get_metrics(self, request: web.Request) -> web.Response:
        return web.json_response(metrics(await self.view.statistics()))

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        origin = request_origin(request)
        allowed = {origin_of(o) for o in self.settings.api.allowed_origins}
        if origin is not None and origin != own_origin(request) and origin not in allowed:
            return self.error(403, "FORBIDDEN", f"WebSocket from origin {origin!r} refused (add it to [api] allowed_origins)")
        return await serve(request, self.subscriptions, self.settings.api.max_event_streams, self.status,
                           self.estimate, self.error)


PERSONALITY = Visualizr
