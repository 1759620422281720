"""PaksaTalker's API (seed 002), served by vidspool.

`POST /api/v1/generate/fusion-video` (a face image and audio, or text to speak) and
`POST /api/v1/generate/video-from-prompt` (the prompt spoken by the default face:
`[compat.paksatalker] default_face`, else scikit-image's portrait, daemon/http/compat/faces.py)
become talking-head jobs; `/status/{task_id}` translates the job's status
(stage names, `video_url`, the fields that were ignored or moved), `/download/<task_id>.mp4`
serves its video. Task ids are UUIDs (the vidspool job id). `/capabilities` reports what
this host really runs: a registry Wav2Lip model is `wav2lip2`; vidspool has no SadTalker,
EMAGE or expression estimator, so those are false and `/expressions/estimate` answers 501.
`/voices` and `/languages` are vidspool's voices, sorted, with flags.

Which lip sync runs is the kind's default (`[kinds.talking-head] model` or the preset's, else
the only lip-sync model in the registry); with none the job runs with `lipsync: "none"` (the
photo as it is, with the speech) and the status says so. `preferWav2Lip2=true` picks a registry Wav2Lip model.
Every error is `{"success": false, "detail": "..."}`.
"""

from __future__ import annotations

import asyncio
import locale
import re
import shutil
import uuid

from aiohttp import web

from contract.errors import JobError
from contract.input_formats import MediaRefused, accepted, open_media
from contract.lipsync_folders import backend_of
from daemon.http.compat.faces import default_face
from daemon.http.compat.front import BadRequest, Form, Personality, Submission, notes

BASE = "/api/v1"
KIND = "talking-head"
RESOLUTIONS = ("480p", "720p", "1080p")
DEFAULT_RESOLUTION = "720p"
DEFAULT_FPS = 25
DOCUMENTED_VOICE = "en-US-JennyNeural"  # the seed's default voice: not one vidspool has
# The seed's preprocess modes → talking-head's crop (None: no equivalent here) and the note.
PREPROCESS = {
    "full": ("full", None),
    "crop": ("face", None),
    "extcrop": ("face", "preprocess extcrop→crop (vidspool's one face crop: head and shoulders)"),
    "extfull": ("full", "preprocess extfull→full (the whole picture, the face redrawn in place)"),
    "resize": (None, None),
}
EXPRESSION_ENGINES = ("mediapipe", "threeddfa", "openseeface", "mini_xception")
# The filters the seed's front end asks ffmpeg about.
SEED_FILTERS = ("lenscorrection", "colortemperature", "chromashift", "tmix", "gblur", "vignette", "unsharp", "hqdn3d",
                "chromakey", "overlay", "scale", "fps")
FFMPEG_FILTER_LINE = re.compile(r"^\s*[T.][S.][C.]\s+(\S+)\s+\S*->\S*\s")
VIDEO_FIELDS = {"resolution", "fps", "expressionEngine", "preprocess"}
FUSION_FIELDS = VIDEO_FIELDS | {"image", "audio", "text", "emotion", "style", "preferWav2Lip2", "backgroundMode"}
PROMPT_FIELDS = VIDEO_FIELDS | {"prompt", "voice"}
MAX_LISTED_FIELDS = 20  # of the fields a client adds, listed one by one in the status
NO_BACKGROUND = ("", "none", "original", "keep")
NO_LIPSYNC = ("lipsync none: the face is not animated (no lip-sync model: set [kinds.talking-head] model, or send "
              "preferWav2Lip2=true with a Wav2Lip model in the registry)")
STAGES = {"speech": "Synthesizing speech", "face_detection": "Detecting the face",
          "loading_model": "Loading the lip-sync model", "lipsync": "Lip-syncing frames",
          "encoding": "Encoding the video"}
NO_FLAG = "\U0001F310"  # globe: a language without a country


def flag(code: str) -> str:
    """The emoji flag of a language code: its region ("en-us" → US, not a private-use
    "-x-" part), else the country the C library's locale table gives the language
    ("de" → DE), else a globe (and for a region that is no country: "es-419")."""
    parts = re.split(r"[-_]", code.lower())
    parts = parts[:parts.index("x")] if "x" in parts else parts
    region = next((p for p in parts[1:] if len(p) == 2 and p.isalpha()), None)
    if region is None and not any(p.isdigit() for p in parts[1:]):
        found = re.match(r"^[a-z]+_([A-Za-z]{2})\b", locale.normalize(parts[0]))
        region = found.group(1) if found else None
    # user-assigned codes (AA, QM-QZ, XA-XZ, ZZ) are not countries
    if region is None or re.fullmatch(r"AA|Q[M-Z]|X[A-Z]|ZZ", region.upper()):
        return NO_FLAG
    return "".join(chr(0x1F1E6 + ord(c) - ord("A")) for c in region.upper())


def shown(value: str) -> str:
    """A client's value as a note shows it: one line, short, without the notes' separator."""
    value = re.sub(r"[;\s]+", " ", value).strip()
    return value if len(value) <= 40 else value[:39] + "…"


def language_names(voices: list[dict]) -> dict[str, str]:
    """Language code → name: espeak-ng names each of its voices after its language."""
    names: dict[str, str] = {}
    for v in voices:
        if not v["configured"]:
            names.setdefault(v["language"], v["name"])
            names.setdefault(v["language"].split("-")[0], v["name"].split(" (")[0])
    return names


def language_name(code: str, names: dict[str, str]) -> str:
    return names.get(code) or names.get(re.split(r"[-_]", code)[0]) or code


class PaksaTalker(Personality):
    name = "paksatalker"
    kinds = (KIND,)
    refusal_status = {**Personality.refusal_status, "unsupported_input": 415}  # as an image that is none

    def __init__(self, view, config):
        super().__init__(view, config)
        self.ffmpeg: dict | None = None  # `ffmpeg -filters`, probed once

    def routes(self) -> list:
        return [
            web.get(f"{BASE}/capabilities", self.capabilities),
            web.get(f"{BASE}/expressions/capabilities", self.expression_capabilities),
            web.get(f"{BASE}/voices", self.voices),
            web.get(f"{BASE}/languages", self.languages),
            web.post(f"{BASE}/expressions/estimate", self.estimate),
            web.post(f"{BASE}/generate/fusion-video", self.fusion_video),
            web.post(f"{BASE}/generate/video-from-prompt", self.video_from_prompt),
            web.get(f"{BASE}/status/{{task_id}}", self.get_status),
            web.get(f"{BASE}/download/{{filename}}", self.download),
        ]

    def error(self, status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
        return web.json_response({"success": False, "detail": message}, status=status, headers=headers)

    # -- what this host has ---------------------------------------------------------------
    def lipsync_models(self) -> dict[str, str]:
        """Registry models a talking-head job can lip-sync with, and their backends."""
        return {m["name"]: m["backend"] for m in self.view.models()
                if m["backend"] and m["available"] and KIND in (m["kinds"] or [KIND])}

    def default_lipsync(self) -> str | None:
        """The lip-sync model a job gets when it names none (None: nothing configured)."""
        preset = self.preset
        kind_cfg = self.settings.kinds.get(KIND)
        for params in (preset.params if preset else {}, kind_cfg.defaults if kind_cfg else {}):
            if isinstance(params.get("lipsync"), str):
                return None if params["lipsync"] == "none" else params["lipsync"]
        return self.model_for(KIND)

    def expression_engines(self) -> dict[str, bool]:
        # vidspool runs none of the seed's expression estimators (no blendshape or emotion
        # model installs from this project's registries); a flag is true only for one it runs.
        return {name: False for name in EXPRESSION_ENGINES}

    async def ffmpeg_filters(self) -> dict:
        if self.ffmpeg is None:
            path = shutil.which("ffmpeg")
            names: set[str] = set()
            available = False
            if path is not None:
                try:
                    proc = await asyncio.create_subprocess_exec(path, "-hide_banner", "-filters", stdout=asyncio.subprocess.PIPE,
                                                                stderr=asyncio.subprocess.DEVNULL)
                    out, _ = await asyncio.wait_for(proc.communicate(), 10)
                    available = proc.returncode == 0
                    names = {m.group(1) for line in out.decode("utf-8", "replace").splitlines()
                             if (m := FFMPEG_FILTER_LINE.match(line))}
                except (OSError, asyncio.TimeoutError):
                    available = False
            self.ffmpeg = {"available": available, "filters": {n: n in names for n in SEED_FILTERS}}
        return self.ffmpeg

    async def capabilities(self, request: web.Request) -> web.Response:
        lipsync = self.lipsync_models()
        models = {"sadtalker": False, "wav2lip2": "wav2lip" in lipsync.values(), "emage": False,
                  **self.expression_engines(), "sadtalker_weights": False}
        extra = {"lipsync_models": lipsync, "default_lipsync": self.default_lipsync() or "none",
                 "default_face": default_face(self.config) is not None}
        return web.json_response({"success": True, "data": {"models": models, "ffmpeg": await self.ffmpeg_filters(),
                                                            "vidspool": extra}})

    async def expression_capabilities(self, request: web.Request) -> web.Response:
        engines = self.expression_engines()  # the original answers `engines`; `data` as the envelope
        return web.json_response({"success": True, "data": engines, "engines": engines})

    # -- voices -------------------------------------------------------------------------------
    def catalog(self) -> list[dict]:
        try:
            return self.view.voices()
        except JobError as exc:  # espeak-ng missing or failing
            raise BadRequest(exc.message, 500, "internal") from None

    async def voices(self, request: web.Request) -> web.Response:
        catalog = self.catalog()
        names = language_names(catalog)
        voices = [{"voice_id": v["id"], "language": language_name(v["language"], names), "language_code": v["language"],
                   "flag": flag(v["language"]), "name": v["name"], "gender": (v["gender"] or "unknown").capitalize()}
                  for v in catalog]
        voices.sort(key=lambda v: (v["name"].casefold(), v["voice_id"]))
        return web.json_response({"success": True, "voices": voices})

    async def languages(self, request: web.Request) -> web.Response:
        names = language_names(self.catalog())
        languages = [{"code": c["code"], "name": language_name(c["code"], names), "flag": flag(c["code"]),
                      "voice_count": c["voices"]} for c in self.view.languages()]
        languages.sort(key=lambda lang: (lang["name"].casefold(), lang["code"]))
        return web.json_response({"success": True, "languages": languages})

    # -- expressions ----------------------------------------------------------------------------
    async def estimate(self, request: web.Request) -> web.Response:
        token, staging = self.staging()
        try:
            form = await self.form(request, staging, {"image"})
            if "image" not in form.files:
                raise BadRequest("image is required (a face photo, form field 'image')")
            self.check_image(form, "image")
            engine = form.text("engine", "auto")
            if engine not in ("auto", *EXPRESSION_ENGINES):
                raise BadRequest(f"engine must be one of auto, {', '.join(EXPRESSION_ENGINES)}; got {engine!r}")
        finally:
            self.discard(staging)
        wanted = ", ".join(EXPRESSION_ENGINES) if engine == "auto" else engine
        return self.error(501, "not_implemented", (
            f"no expression estimator on this host: vidspool runs none of {wanted} (they need blendshape and "
            "emotion models, none of which is installed here); video generation works without one"))

    # -- generation --------------------------------------------------------------------------------
    def check_image(self, form: Form, field: str) -> None:
        """An image of a format vidspool accepts (contract.input_formats), verified by Pillow."""
        from PIL import Image, UnidentifiedImageError

        path = form.files[field]
        try:
            file, found = open_media(path, ("image",))
        except MediaRefused as exc:
            raise BadRequest(f"{field}: {path.name} {exc.reason}", 415, "unsupported_media_type") from None
        try:
            with file, Image.open(file, formats=[found.pillow]) as image:
                image.verify()
        except Image.DecompressionBombError as exc:
            raise BadRequest(f"{field}: {exc}", 413, "too_large") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise BadRequest(f"{field}: not an image this server can read ({accepted(('image',))})", 415,
                             "unsupported_media_type") from None

    def video_settings(self, form: Form, job: Submission) -> None:
        """resolution, fps, preprocess, expressionEngine: checked and mapped (both endpoints)."""
        resolution = form.text("resolution", DEFAULT_RESOLUTION).lower()
        if resolution not in RESOLUTIONS:
            raise BadRequest(f"resolution must be one of {', '.join(RESOLUTIONS)}; got {form.text('resolution')!r}")
        job.params["resolution"] = resolution
        job.params["fps"] = form.number("fps", int, DEFAULT_FPS, 1, 60)
        preprocess = form.text("preprocess", "full")
        if preprocess not in PREPROCESS:
            raise BadRequest(f"preprocess must be one of {', '.join(PREPROCESS)}; got {preprocess!r}")
        crop, note = PREPROCESS[preprocess]
        if crop is None:
            job.ignored.append(f"preprocess={preprocess} (no equivalent here: the whole picture is used)")
        else:
            job.params["crop"] = crop
        if note:
            job.adjusted.append(note)
        engine = form.text("expressionEngine", "auto")
        if engine not in ("auto", *EXPRESSION_ENGINES):
            raise BadRequest(f"expressionEngine must be one of auto, {', '.join(EXPRESSION_ENGINES)}; got {engine!r}")
        if engine != "auto":
            job.ignored.append(f"expressionEngine={engine} (no expression estimator on this host)")

    def other_fields(self, form: Form, known: set[str], job: Submission) -> None:
        """Fields the endpoint does not map, listed as ignored: the background ones (colour,
        chroma key) and any a client adds."""
        others = sorted(set(form.fields) - known)
        for name in others[:MAX_LISTED_FIELDS]:
            why = "the background is kept" if name.lower().startswith(("background", "chroma")) else "not a field vidspool knows"
            job.ignored.append(f"{shown(name)}={shown(form.fields[name])} ({why})")
        if len(others) > MAX_LISTED_FIELDS:
            job.ignored.append(f"{len(others) - MAX_LISTED_FIELDS} more fields (not listed)")

    def choose_lipsync(self, job: Submission, prefer_wav2lip: bool) -> None:
        default = self.default_lipsync()
        models = self.lipsync_models() if prefer_wav2lip or default is None else {}
        if prefer_wav2lip and models.get(default or "") != "wav2lip":
            wav2lip = sorted(n for n, backend in models.items() if backend == "wav2lip")
            if wav2lip:
                job.model = job.params["lipsync"] = wav2lip[0]
                return
            job.ignored.append("preferWav2Lip2=true (no Wav2Lip model in the registry)")
        if default is None:
            job.params["lipsync"] = "none"

    def stage_face(self, form: Form, staging, job: Submission, why: str) -> None:
        if "image" in form.files:
            self.check_image(form, "image")
            job.inputs["face"] = form.files["image"].name
            return
        face = default_face(self.config)
        if face is None:
            raise BadRequest(f"no image uploaded and this host has no default face ({why}): set "
                             "[compat.paksatalker] default_face")
        if not face.is_file():
            raise BadRequest(f"[compat.paksatalker] default_face {self.view.paths.path(face)} is not a file", 500, "internal")
        job.inputs["face"] = self.stage_file(staging, "face", face)

    def speech_voice(self, job: Submission) -> None:
        if self.config.voice:
            job.params["voice"] = self.config.voice

    def submit_task(self, token: str, staging, job: Submission) -> web.Response:
        task_id = self.submit(token, staging, job, str(uuid.uuid4()))
        return web.json_response({"success": True, "task_id": task_id, "status": "processing"})

    async def fusion_video(self, request: web.Request) -> web.Response:
        self.refuse_when_full()
        token, staging = self.staging()
        try:
            form = await self.form(request, staging, {"image", "audio", "backgroundImage"})
            text = form.text("text")
            text = text if text is None or text.strip() else None
            if "image" not in form.files and text is None:
                raise BadRequest("image is required (a face photo, form field 'image'), or text to be spoken by the default face")
            if "audio" not in form.files and text is None:
                raise BadRequest("give audio (a recording, form field 'audio') or text (spoken by text-to-speech)")
            job = Submission(KIND)
            self.stage_face(form, staging, job, "send an image")
            if "audio" in form.files:
                job.inputs["audio"] = form.files["audio"].name
                if text is not None:
                    job.ignored.append("text (the uploaded audio is spoken)")
            else:
                job.params["text"] = text
                self.speech_voice(job)
            self.video_settings(form, job)
            emotion, style = form.text("emotion", "neutral"), form.text("style", "natural")
            if emotion != "neutral":
                job.ignored.append(f"emotion={shown(emotion)} (no expression control here: the face keeps its own)")
            if style != "natural":
                job.ignored.append(f"style={shown(style)} (one animation style here: natural)")
            if form.text("backgroundMode", "").lower() not in NO_BACKGROUND:
                job.ignored.append(f"backgroundMode={shown(form.text('backgroundMode'))} (replacing the background needs a "
                                   "person-segmentation model, and none is on this host)")
            if "backgroundImage" in form.files:
                job.ignored.append("backgroundImage (the background is kept)")
            self.other_fields(form, FUSION_FIELDS, job)
            self.choose_lipsync(job, form.flag("preferWav2Lip2"))
            return self.submit_task(token, staging, job)
        finally:
            self.discard(staging)

    async def video_from_prompt(self, request: web.Request) -> web.Response:
        self.refuse_when_full()
        token, staging = self.staging()
        try:
            form = await self.form(request, staging, set())
            prompt = form.text("prompt")
            if prompt is None or not prompt.strip():
                raise BadRequest("prompt is required")
            job = Submission(KIND, {"text": prompt})
            voice = form.text("voice")
            if voice == DOCUMENTED_VOICE:
                job.adjusted.append(f"voice {DOCUMENTED_VOICE}→{self.config.voice or 'the default voice'} "
                                    "(the documented default is not a voice here)")
                voice = None
            if voice is None:
                self.speech_voice(job)
            elif voice in {v["id"] for v in self.catalog()}:
                job.params["voice"] = voice
            else:
                raise BadRequest(f"voice {voice!r} is not a voice here; see GET {BASE}/voices")
            self.video_settings(form, job)
            self.stage_face(form, staging, job, "video-from-prompt uses the default face")
            self.other_fields(form, PROMPT_FIELDS, job)
            self.choose_lipsync(job, False)
            return self.submit_task(token, staging, job)
        finally:
            self.discard(staging)

    # -- answering ---------------------------------------------------------------------------------
    def lipsync_of(self, doc: dict) -> str:
        """The backend the job lip-syncs with ("none": it does not)."""
        result = doc.get("result") or {}
        if result.get("lipsync"):
            return result["lipsync"]
        model = doc.get("model") or ((doc.get("job") or {}).get("params") or {}).get("lipsync")
        if not model or model == "none":
            return "none"
        entry = self.settings.models.get(model)
        backend = (entry.backend or (backend_of(entry.path) if entry.path else None)) if entry else None
        return backend or "unknown"

    def stage(self, doc: dict, lipsync: str) -> str:
        state = doc["state"]
        if state == "queued":
            position = doc.get("queue_position")
            return f"Queued (position {position})" if position else "Queued"
        if state == "completed":
            return "Completed"
        if state in ("failed", "canceled"):
            return state.capitalize()
        label = STAGES.get(doc.get("stage") or "", "Starting")
        if doc.get("stage") == "lipsync" and lipsync == "none":
            label = "Rendering frames without lip sync"
        return f"{label}: {doc['message']}" if doc.get("message") else label

    def describe(self, doc: dict) -> dict:
        state = doc["state"]
        lipsync = self.lipsync_of(doc)
        out = {
            "task_id": doc["id"],
            "status": {"queued": "processing", "running": "processing", "canceled": "failed"}.get(state, state),
            "progress": 100 if state == "completed" else int(doc.get("progress") or 0),
            "stage": self.stage(doc, lipsync),
            "video_url": f"{BASE}/download/{doc['id']}.mp4" if state == "completed" else "",
            "error": ((doc.get("error") or {}).get("message") or state) if state in ("failed", "canceled") else "",
            "lipsync": lipsync,
            "lipsync_model": None if lipsync == "none" else doc.get("model"),
            "ignored": notes(doc, "compat_ignored"),
            "adjusted": notes(doc, "compat_adjusted"),
        }
        if lipsync == "none":
            out["notes"] = [NO_LIPSYNC]
        return out

    async def get_status(self, request: web.Request) -> web.Response:
        # (one being accepted reads as queued: ReadModel)
        found = self.translated(request.match_info["task_id"], lambda d: {"success": True, "data": self.describe(d)})
        return found or self.error(404, "not_found", "Task not found")

    async def download(self, request: web.Request) -> web.StreamResponse:
        filename = request.match_info["filename"]
        task_id, dot, suffix = filename.rpartition(".")
        doc = self.status(task_id) if dot and suffix.lower() == "mp4" else None
        if doc is None:
            return self.error(404, "not_found", f"File not found: {filename} (files are named <task_id>.mp4)")
        if doc["state"] != "completed":
            return self.error(404, "not_ready", f"Video for task {task_id} is not ready (status: {self.describe(doc)['status']})")
        found = self.result(task_id)
        if found is None or found[1] != "video/mp4":
            return self.error(404, "not_found", f"File not found: task {task_id} has no MP4 video")
        return self.send_file(found, f"{task_id}.mp4")


PERSONALITY = PaksaTalker
