"""HeyGem's Dual TTS API (seed 000), served by vidspool.

`POST /api/generate` (form: `text`, optional `video`) becomes a talking-head job: the face
is the uploaded video, or the default face when none comes (`[compat.heygem] default_face`,
else the portrait scikit-image ships: daemon/http/compat/faces.py); the voice is
`[compat.heygem] voice` (else the kind's default). When that voice can clone (a coqui voice
whose model has a speaker encoder, as the kind's own accept-time check says), the uploaded
video's own sound, extracted with ffmpeg, is the reference recording: HeyGem's voice
cloning. Lip sync is the kind's default (`[kinds.talking-head] model`, else the only
lip-sync model in the registry); with none the job runs `lipsync: none` and the status says
so. Task ids are `task_<digits>` (milliseconds and six random digits) and are the vidspool
job ids, so every answer is translated from the job's status.json. Errors are
`{"success": false, "error": "..."}` throughout: the seed documents only that `error` is a
string.

An uploaded video must be one of the video formats vidspool accepts, told by its first
bytes (contract.input_formats: a playlist named .mp4 is refused with a 400), and ffmpeg
reads it as daemon.http.compat.ffmpeg_input runs it.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from pathlib import Path

from aiohttp import web

from contract.errors import JobError
from contract.input_formats import MediaRefused, check_media
from daemon import __version__
from daemon.http.compat.faces import default_face
from daemon.http.compat.front import BadRequest, Personality, Submission, gpu_index, notes, now_iso
from daemon.http.compat.ffmpeg_input import run_on_file

KIND = "talking-head"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
REFERENCE = "reference_audio.wav"  # the uploaded video's sound, for cloning
REFERENCE_SECONDS = 30  # enough of a recording for a speaker encoder
FFMPEG_TIMEOUT_SECONDS = 60
SERVICE = "HeyGem video generation (vidspool talking-head)"
STATES = {"queued": "queued", "running": "processing", "completed": "completed", "failed": "failed",
          "canceled": "failed"}
OUTPUT_NAME = re.compile(r"final_([A-Za-z0-9._-]{1,64})\.mp4")
TASK_ID = re.compile(r"task_\d+")  # new_task_id()'s ids: a queued job of another shape is not HeyGem's
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC = {"heygem.js": "text/javascript"}
MIB = 1 << 20
ENDPOINTS = ["GET /", "POST /api/generate", "GET /api/status/<task_id>", "GET /api/download/<task_id>",
             "GET /api/queue", "GET /api/info", "GET /api/health", "GET /outputs/<filename>"]


def new_task_id() -> str:
    """`task_` + milliseconds + six random digits: unique across requests and daemons."""
    return f"task_{time.time_ns() // 1_000_000}{secrets.randbelow(10**6):06d}"


async def extract_audio(video: Path, target: Path) -> str | None:
    """The video's first audio track as a mono WAV at `target`; None, or why not."""
    try:
        ran = await run_on_file("ffmpeg", video, ("video",), ["-nostdin", "-v", "error", "-y"],
                                ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", "16000", "-t", str(REFERENCE_SECONDS),
                                 str(target)], FFMPEG_TIMEOUT_SECONDS)
    except MediaRefused as exc:
        return f"the video {exc.reason}"
    except TimeoutError:
        return f"reading the video's audio took over {FFMPEG_TIMEOUT_SECONDS} s"
    if ran is None:
        return "ffmpeg is not installed on this host (apt-get install ffmpeg)"
    returncode, _, err = ran
    text = err.decode("utf-8", "replace").strip()
    if returncode == 0 and target.is_file() and target.stat().st_size > 44:
        return None
    if "matches no streams" in text:
        return "the video has no audio track"
    return f"ffmpeg could not read the video's audio: {text.splitlines()[-1] if text else f'exit {returncode}'}"


class HeyGem(Personality):
    name = "heygem"
    kinds = (KIND,)
    open_paths = frozenset({"/api/health"})

    def routes(self) -> list:
        return [
            web.get("/", self.page),
            web.get("/static/{name}", self.static),
            web.post("/api/generate", self.generate),
            web.get("/api/status/{task_id}", self.get_status),
            web.get("/api/download/{task_id}", self.download),
            web.get("/outputs/{filename}", self.output),
            web.get("/api/queue", self.queue),
            web.get("/api/info", self.info),
            web.get("/api/health", self.health),
        ]

    def error(self, status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
        return web.json_response({"success": False, "error": message}, status=status, headers=headers)

    # -- the page ------------------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(WEB_DIR / "heygem.html", headers={"Content-Type": "text/html; charset=utf-8",
                                                                  "Cache-Control": "no-cache"})

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC:
            return self.error(404, "not_found", f"no static file {name!r}")
        return web.FileResponse(WEB_DIR / name, headers={"Content-Type": f"{STATIC[name]}; charset=utf-8",
                                                         "Cache-Control": "no-cache"})

    # -- generating ------------------------------------------------------------------------------
    async def generate(self, request: web.Request) -> web.Response:
        self.refuse_when_full()
        token, staging = self.staging()
        try:
            form = await self.form(request, staging, {"video"})
            text = form.text("text")
            if text is None or not text.strip():
                raise BadRequest("text is required")
            if "video" in form.fields:
                raise BadRequest("video must be an uploaded file (multipart/form-data, as curl -F video=@my_video.mp4 sends)")
            job = Submission(KIND, {"text": text})
            job.ignored += [f"field {name!r} (not part of the HeyGem API)" for name in sorted(form.fields)
                            if name != "text"]
            if self.config.voice:
                job.params["voice"] = self.config.voice
            video = form.files.get("video")
            if video is not None:
                if video.suffix not in VIDEO_SUFFIXES:
                    raise BadRequest(f"video must be one of {', '.join(s[1:] for s in VIDEO_SUFFIXES)}; got "
                                     f"{video.suffix[1:] or 'a file without an extension'}")
                try:
                    check_media(video, ("video",))
                except MediaRefused as exc:
                    raise BadRequest(f"video: {video.name} {exc.reason}") from None
                job.inputs["face"] = video.name
                await self.clone_from(video, staging, job)
            else:
                job.inputs["face"] = self.default_face(staging)
                job.ignored.append("voice cloning: no video was uploaded, so there is no voice to clone")
            self.choose_lipsync(job)
            task_id = self.submit(token, staging, job, new_task_id())
        finally:
            self.discard(staging)
        return web.json_response({"success": True, "task_id": task_id, "message": "Task submitted successfully",
                                  "status_url": f"/api/status/{task_id}"})

    def default_face(self, staging: Path) -> str:
        face = default_face(self.config)
        if face is None:
            raise BadRequest("no video uploaded and this host has no default face: send a video (mp4, avi, mov, "
                             "mkv), or set [compat.heygem] default_face")
        try:
            return self.stage_file(staging, "face", face)
        except OSError as exc:
            raise BadRequest(f"[compat.heygem] default_face {self.view.paths.path(face)!r} cannot be read: "
                             f"{exc.strerror or self.view.paths.text(str(exc))}",
                             500, "internal") from None

    async def clone_from(self, video: Path, staging: Path, job: Submission) -> None:
        """The video's own sound as the reference recording, when the voice can clone."""
        why_not = self.cannot_clone()
        if why_not is None:
            why_not = await extract_audio(video, staging / REFERENCE)
        if why_not is None:
            job.inputs["reference_audio"] = REFERENCE
        else:
            job.ignored.append(f"voice cloning: {why_not} (spoken with "  # one note: the labels join them with "; "
                               + (f"voice {self.config.voice!r})" if self.config.voice else "the default voice)"))

    def cannot_clone(self) -> str | None:
        """Why the configured voice cannot clone a recording (None: it can), by the talking-head
        kind's own accept-time check of a job that brings a reference recording."""
        voice = self.config.voice
        if voice is None:
            return "no [compat.heygem] voice is set, and the default voice (espeak-ng) cannot clone"
        book = self.settings.voice_book()
        configured = book.voice(voice)
        if not voice.startswith("coqui:") and (configured is None or configured.get("engine") != "coqui"):
            return f"voice {voice!r} is not a coqui voice, and only a coqui model with a speaker encoder clones"
        kind = self.view.kinds[KIND]
        try:
            kind.check(kind.params.model_validate({"text": "Hello.", "voice": voice}),
                       {"reference_audio": [Path(REFERENCE)]}, book)
        except (ValueError, JobError) as exc:
            return str(exc)
        return None

    def choose_lipsync(self, job: Submission) -> None:
        """The kind's own default lip-sync model (params, then model, of the preset and of
        [kinds.talking-head]); with none, `lipsync: none`, said in the status."""
        preset = self.preset
        kind_cfg = self.settings.kinds.get(KIND)
        chosen = ((preset.params.get("lipsync") if preset else None)
                  or (kind_cfg.defaults.get("lipsync") if kind_cfg else None) or self.model_for(KIND))
        if chosen is None:
            job.params["lipsync"] = "none"
            job.ignored.append(f"lip-sync: {self.kind_model(KIND).problem()}, so the face is shown as it is with the "
                               "speech (lipsync: none)")
        elif chosen == "none":
            job.ignored.append("lip-sync: this host runs talking-head with lipsync: none, so the face is shown as "
                               "it is with the speech")

    # -- answering -----------------------------------------------------------------------------------
    def describe(self, doc: dict) -> dict:
        state = doc["state"]
        job = doc.get("job") or {}
        error = doc.get("error") or {}
        return {"status": STATES.get(state, state), "progress": 100 if state == "completed" else int(doc.get("progress") or 0),
               "gpu_id": gpu_index(doc.get("device")),
               "error": (error.get("message") or state) if state in ("failed", "canceled") else None,
               "result": self.result_of(doc) if state == "completed" else None,
               "message": doc.get("message"), "lipsync": (job.get("params") or {}).get("lipsync"),
               "voice_cloning": "reference_audio" in (job.get("inputs") or {}),
               "adjusted": notes(doc, "compat_adjusted"), "ignored": notes(doc, "compat_ignored")}

    def result_of(self, doc: dict) -> dict:
        result = doc.get("result") or {}
        video = result.get("video") or {}
        main = next((f for f in result.get("files") or [] if f.get("name") == "video.mp4"), {})
        task_id = doc["id"]
        return {"video_url": f"/outputs/final_{task_id}.mp4", "download_url": f"/api/download/{task_id}",
                "duration": video.get("duration"), "size": main.get("size"), "width": video.get("width"),
                "height": video.get("height"), "fps": video.get("fps"), "lipsync": result.get("lipsync"),
                "speech": result.get("speech"), "adjusted": notes(doc, "compat_adjusted"),
                "ignored": notes(doc, "compat_ignored")}

    async def get_status(self, request: web.Request) -> web.Response:
        found = self.translated(request.match_info["task_id"], self.describe)
        return found or self.error(404, "not_found", "Task not found")

    def video_of(self, task_id: str, missing: int, what: str) -> web.StreamResponse:
        doc = self.status(task_id)
        if doc is None:
            return self.error(404, "not_found", "Task not found")
        if doc["state"] != "completed":
            status = STATES.get(doc["state"], doc["state"])
            why = f": {(doc.get('error') or {}).get('message')}" if status == "failed" else ""
            return self.error(missing, "not_ready", f"Task not completed (status: {status}{why}); no {what} yet")
        found = self.result(task_id, "video.mp4")
        if found is None:
            return self.error(404, "not_found", "Video file not found")
        return self.send_file(found, f"final_{task_id}.mp4", attachment=what == "download")

    async def download(self, request: web.Request) -> web.StreamResponse:
        return self.video_of(request.match_info["task_id"], 400, "download")

    async def output(self, request: web.Request) -> web.StreamResponse:
        match = OUTPUT_NAME.fullmatch(request.match_info["filename"])
        if match is None:
            return self.error(404, "not_found", "File not found (outputs are final_<task_id>.mp4)")
        return self.video_of(match.group(1), 404, "output file")

    # -- the service -------------------------------------------------------------------------------------
    def gpus(self) -> dict[str, dict]:
        """The workers keyed by device index: a GPU's own number, CPU workers the next free ones."""
        devices = self.view.devices()
        taken = {gpu_index(d["device"]) for d in devices} - {None}
        spare = (n for n in itertools.count() if n not in taken)
        out: dict[str, dict] = {}
        for d in devices:
            index = gpu_index(d["device"])
            key = str(index if index is not None and str(index) not in out else next(spare))
            memory = (d.get("memory") or {}).get("used") or 0
            task = d.get("job") if self.view.front_of(d.get("job") or "") == self.name else None  # only HeyGem's
            out[key] = {"busy": bool(d.get("busy")), "current_task": task, "memory_used": f"{memory // MIB} MiB",
                        "video_port": None, "tts_port": None, "device": d["device"]}
        return out

    async def queue(self, request: web.Request) -> web.Response:
        queued = [q["id"] for q in self.view.queue()["queued"]
                  if TASK_ID.fullmatch(q["id"]) and self.view.front_of(q["id"]) == self.name]
        return web.json_response({"gpus": self.gpus(), "queue": queued, "queue_size": len(queued)})

    async def info(self, request: web.Request) -> web.Response:
        gpus = {key: {"video_port": None, "tts_port": None, "device": g["device"]} for key, g in self.gpus().items()}
        return web.json_response({"service": SERVICE, "version": __version__, "port": self.site.port, "gpus": gpus,
                                  "endpoints": ENDPOINTS})

    async def health(self, request: web.Request) -> web.Response:
        problems = self.view.problems()
        body = {"status": "unhealthy" if problems else "healthy", "service": SERVICE, "timestamp": now_iso()}
        if problems:
            body["problems"] = problems
        return web.json_response(body, status=503 if problems else 200)


PERSONALITY = HeyGem
