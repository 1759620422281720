"""Visualizr's words for a vidspool status document (seed 003): states, steps, error codes,
result URLs and metadata, and the names under which a job's files are served.

A request id is the job id (`video_req_<hex>`, `anim_req_<hex>`); the video it makes is
`video_<hex>` (`anim_<hex>`), as in the document (`video_req_123` → `video_123`), and its
files are `/assets/video/<video id>.mp4`, `<video id>_thumb.jpg`, `<video id>_preview.gif`:
the name says which job and which of its result files, looked up in that job's outbox
folder only.
"""

from __future__ import annotations

import re

from daemon.http.compat.front import iso, notes, seconds_between

ASSETS = "/assets/video"
# vidspool state → the document's (queued jobs are "pending": "Cancel a pending or processing
# video generation request").
STATES = {"queued": "pending", "running": "processing", "completed": "completed", "failed": "failed",
          "canceled": "cancelled"}
# vidspool stage → current_step ("frame_generation" is the document's, for denoising).
STEPS = {"starting": "initializing", "loading_model": "model_loading", "denoising": "frame_generation",
         "decoding": "frame_decoding", "encoding": "video_encoding"}
# vidspool error code → the document's table; every other code is GENERATION_FAILED.
ERROR_CODES = {"gpu_out_of_memory": "INSUFFICIENT_GPU_MEMORY", "model_not_found": "MODEL_NOT_FOUND",
               "model_load_failed": "MODEL_LOAD_FAILED"}
# What each served name suffix is among a job's result files.
FILES = {".mp4": "video.mp4", "_thumb.jpg": "thumb.jpg", "_preview.gif": "preview.gif"}
FILE_NAME = re.compile(r"^(?P<video>[A-Za-z0-9][A-Za-z0-9._-]{0,63}?)(?P<suffix>\.mp4|_thumb\.jpg|_preview\.gif)$")
REQUEST_PREFIXES = (("video_req_", "video_"), ("anim_req_", "anim_"))


def video_id(job_id: str) -> str:
    for request, video in REQUEST_PREFIXES:
        if job_id.startswith(request):
            return video + job_id[len(request):]
    return job_id


def job_ids_for(video: str) -> list[str]:
    """The job ids a video id may name: ours first (`video_X` → `video_req_X`), then itself."""
    ids = [request + video[len(prefix):] for request, prefix in REQUEST_PREFIXES
           if video.startswith(prefix) and not video.startswith(request)]
    return ids + [video]


def served_file(name: str) -> tuple[str, str] | None:
    """`video_ab.mp4` → ("video_ab", "video.mp4"); None for any other name."""
    found = FILE_NAME.match(name)
    return (found["video"], FILES[found["suffix"]]) if found else None


def result_files(doc: dict) -> dict[str, dict]:
    """The job's result files still there, by name."""
    result = doc.get("result") or {}
    return {f["name"]: f for f in result.get("files") or [] if isinstance(f, dict) and "name" in f}


def urls(doc: dict) -> dict[str, str]:
    """video_url, thumbnail_url, preview_gif_url of the files the job still has."""
    vid, files = video_id(doc["id"]), result_files(doc)
    out = {}
    for key, suffix in (("video_url", ".mp4"), ("thumbnail_url", "_thumb.jpg"), ("preview_gif_url", "_preview.gif")):
        if FILES[suffix] in files:
            out[key] = f"{ASSETS}/{vid}{suffix}"
    return out


def metadata(doc: dict) -> dict:
    """duration_seconds, fps, resolution, file_size_bytes, format, codec (and bitrate_kbps)
    of the job's video.mp4, from the result (ffprobe's numbers, taken by the worker)."""
    result = doc.get("result") or {}
    video = result.get("video") or {}
    size = (result_files(doc).get("video.mp4") or {}).get("size")
    duration = video.get("duration")
    fps = video.get("fps")
    out = {
        "duration_seconds": round(duration, 3) if isinstance(duration, (int, float)) else None,
        "fps": int(fps) if isinstance(fps, (int, float)) and float(fps).is_integer() else fps,
        "resolution": f"{video['width']}x{video['height']}" if video.get("width") else None,
        "file_size_bytes": size,
        "format": "mp4",
        "codec": video.get("codec"),
    }
    if size and duration:
        out["bitrate_kbps"] = round(size * 8 / duration / 1000)
    return out


def seed_error(doc: dict) -> dict:
    """The document's error object for a failed (or canceled) job."""
    error = doc.get("error") or {}
    code = error.get("code") or "internal"
    return {"code": ERROR_CODES.get(code, "GENERATION_FAILED"), "message": error.get("message") or "generation failed",
            "details": f"vidspool error code {code}" + ("; retryable" if error.get("retryable") else "")}


def translate(doc: dict, estimate: dict | None = None) -> dict:
    """GET /generate/status/{id} for a status document (with view.estimate's numbers)."""
    state = STATES.get(doc.get("state"), doc.get("state"))
    out: dict = {"request_id": doc["id"], "status": state,
                 "progress": 100 if state == "completed" else int(doc.get("progress") or 0)}
    if state == "pending":
        out["current_step"] = "queued"
        out["queue_position"] = doc.get("queue_position")
    elif state == "processing":
        out["current_step"] = STEPS.get(doc.get("stage"), doc.get("stage"))
    if state in ("pending", "processing"):
        remaining = (estimate or {}).get("estimated_remaining_seconds")
        out["estimated_remaining_seconds"] = round(remaining, 1) if isinstance(remaining, (int, float)) else None
    out["model"] = doc.get("model")
    out["created_at"] = iso(doc.get("created_at"))
    if doc.get("started_at"):
        out["started_at"] = iso(doc["started_at"])
    if state == "completed":
        out["result"] = {**urls(doc), "metadata": metadata(doc)}
        if (doc.get("result") or {}).get("deleted"):
            out["result"]["deleted"] = True
        out["completed_at"] = iso(doc.get("finished_at"))
        out["processing_time_seconds"] = seconds_between(doc.get("started_at"), doc.get("finished_at"))
    elif state == "failed":
        out["error"] = seed_error(doc)
        out["failed_at"] = iso(doc.get("finished_at"))
    elif state == "cancelled":
        out["cancelled_at"] = iso(doc.get("finished_at"))
    for key, label in (("adjusted", "compat_adjusted"), ("ignored", "compat_ignored")):
        if found := notes(doc, label):
            out[key] = found
    return out


def ws_message(doc: dict, estimate: dict | None = None) -> dict:
    """The WebSocket message for a status: progress, completed, failed or cancelled."""
    seed = translate(doc, estimate)
    state = seed["status"]
    if state == "completed":
        return {"type": "completed", "request_id": seed["request_id"], "result": seed["result"]}
    if state == "failed":
        return {"type": "failed", "request_id": seed["request_id"], "error": seed["error"]}
    if state == "cancelled":
        return {"type": "cancelled", "request_id": seed["request_id"], "cancelled_at": seed["cancelled_at"]}
    return {"type": "progress", "request_id": seed["request_id"], "status": state, "progress": seed["progress"],
            "current_step": seed.get("current_step"), "estimated_remaining_seconds": seed.get("estimated_remaining_seconds")}
