"""The Story text-to-video generator's API (seed 001), served by vidspool.

`POST /api/v1/generate {"text"}` becomes a narrated-video job (one scene per sentence,
spoken, captioned, over backgrounds); its status is translated onto the seed's progress
stages (20 audio, 40 captions, 60 search queries, 80 backgrounds, 90 rendering, 100) with
the seed's messages and the stage lines so far as `logs`. Unlike the original, jobs are not
kept in memory: they survive restarts and any daemon sharing the spool answers them.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from daemon.http.compat.front import Personality, Submission, unix_seconds

BASE = "/api/v1"
KIND = "narrated-video"
# GET /jobs lists this many of the newest jobs at most (the seed lists every job it holds).
LIST_MAX = 1000

# vidspool stage → (the seed's progress, its message, the log lines of the stages before it
# ended). "backgrounds" is both of the seed's steps: choosing what to show for each sentence
# (its "search queries") and getting the pictures (its "background video fetching").
STAGES = [
    ("speech", 20, "Generating audio...", ["Starting audio generation..."]),
    ("captions", 40, "Generating captions...", ["Audio generation completed", "Starting caption generation..."]),
    ("search", 60, "Generating video search queries...", ["Caption generation completed", "Starting search query generation..."]),
    ("backgrounds", 80, "Fetching background videos...", ["Search query generation completed", "Starting background video fetching..."]),
    ("rendering", 90, "Rendering video...", ["Background video fetching completed", "Starting video rendering..."]),
]
STAGE_INDEX = {name: i for i, (name, *_) in enumerate(STAGES)}
STAGE_INDEX["encoding"] = STAGE_INDEX["rendering"]
DONE_LINES = ["Video rendering completed", "Video generation completed"]


def seed_progress(doc: dict) -> tuple[int, str, list[str]]:
    """The seed's (progress, message, logs) for a vidspool status document."""
    state = doc.get("state")
    if state == "queued":
        return 0, "Job queued", []
    stage = doc.get("stage")
    index = STAGE_INDEX.get(stage, 0 if state == "running" else len(STAGES) - 1)
    if stage == "backgrounds" and (doc.get("progress") or 0) <= 32:
        index = STAGE_INDEX["search"]  # backgrounds just began: choosing them
    logs = [line for _, _, _, lines in STAGES[: index + 1] for line in lines]
    if state == "completed":
        return 100, "Video generation completed", logs + DONE_LINES
    if state in ("failed", "canceled"):
        message = (doc.get("error") or {}).get("message") or state
        return STAGES[index][1], f"Error: {message}", logs + [f"Error: {message}"]
    return STAGES[index][1], STAGES[index][2], logs


class Story(Personality):
    name = "story"
    kinds = (KIND,)

    def routes(self) -> list:
        return [
            web.post(f"{BASE}/generate", self.generate),
            web.get(f"{BASE}/status/{{job_id}}", self.get_status),
            web.get(f"{BASE}/download/{{job_id}}", self.download),
            web.get(f"{BASE}/jobs", self.list_jobs),
        ]

    async def generate(self, request: web.Request) -> web.Response:
        self.refuse_when_full()
        body = await self.json_body(request)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            return self.error(400, "invalid_job", "No text provided in request body")
        params = {"text": text}
        if self.config.voice:
            params["voice"] = self.config.voice
        token, staging = self.staging()
        try:
            job_id = self.submit(token, staging, Submission(KIND, params), str(uuid.uuid4()))
        finally:
            self.discard(staging)
        return web.json_response({"job_id": job_id, "status": "queued", "message": "Video generation started"}, status=202)

    def describe(self, doc: dict) -> dict:
        progress, message, logs = seed_progress(doc)
        state = doc["state"]
        out = {"status": {"running": "processing", "canceled": "failed"}.get(state, state), "progress": progress,
               "message": message, "created_at": unix_seconds(doc.get("created_at")), "logs": logs}
        if state == "completed":
            out["output_file"] = f"output/video_{doc['id']}.mp4"
        if state in ("failed", "canceled"):
            out["error"] = (doc.get("error") or {}).get("message") or state
        return out

    async def get_status(self, request: web.Request) -> web.Response:
        found = self.translated(request.match_info["job_id"], self.describe)
        return found or self.error(404, "not_found", "Job not found")

    async def download(self, request: web.Request) -> web.StreamResponse:
        job_id = request.match_info["job_id"]
        doc = self.status(job_id)
        if doc is None:
            return self.error(404, "not_found", "Job not found")
        if doc["state"] != "completed":
            return self.error(400, "not_ready", "Video not ready for download")
        found = self.result(job_id)
        if found is None:
            return self.error(500, "internal", "Video file not found")
        return self.send_file(found, f"generated_video_{job_id}.mp4", attachment=True)

    async def list_jobs(self, request: web.Request) -> web.Response:
        """The newest LIST_MAX of its jobs, oldest first (the seed has no paging)."""
        def answer() -> dict:
            newest = sorted(self.own_jobs(), key=lambda j: (j.created or 0.0, j.id))[-LIST_MAX:]
            return {"jobs": {j.id: self.describe(j.listed()) for j in newest}}

        return await self.listing(answer)


PERSONALITY = Story
