"""Visualizr's `/api/v1/assets/videos` (seed 003): the personality's completed jobs whose
video is still there, newest first, as the document's video entries.

`start_date`/`end_date` (ISO 8601; a date alone is that whole day, a time without a zone
is UTC) filter on the video's `created_at`, the moment its job completed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from contract.status import status_time
from daemon.http.compat.front import BadRequest, iso, seconds_between
from daemon.http.compat.visualizr.status import metadata, result_files, urls, video_id
from daemon.view.for_fronts import JobSummary

MAX_LIMIT = 100


def parse_date(name: str, raw: str | None, end: bool = False) -> datetime | None:
    if raw is None or raw == "":
        return None
    value = status_time(raw.strip())
    if value is None:
        raise BadRequest(f"{name} must be an ISO 8601 date or time (e.g. 2024-01-15 or 2024-01-15T10:30:00Z), got {raw!r}",
                         400, "INVALID_PARAMETERS")
    if end and len(raw.strip()) == 10:  # a date alone: up to the end of that day
        value += timedelta(days=1)
    return value


def parse_int(name: str, raw: str | None, default: int, low: int, high: int | None = None) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}", 400, "INVALID_PARAMETERS") from None
    if value < low or (high is not None and value > high):
        raise BadRequest(f"{name} must be {low}–{high}, got {value}" if high is not None else f"{name} must be ≥ {low}, got {value}",
                         400, "INVALID_PARAMETERS")
    return value


def has_video(doc: dict) -> bool:
    return doc.get("state") == "completed" and bool(doc.get("finished_at")) and "video.mp4" in result_files(doc)


def entry(doc: dict) -> dict:
    """A video in the list."""
    meta = metadata(doc)
    links = urls(doc)
    return {
        "id": video_id(doc["id"]),
        "url": links.get("video_url"),
        "thumbnail_url": links.get("thumbnail_url"),
        "prompt": ((doc.get("job") or {}).get("params") or {}).get("prompt"),
        "model": doc.get("model"),
        "metadata": {k: meta[k] for k in ("duration_seconds", "resolution", "fps", "file_size_bytes")},
        "created_at": iso(doc.get("finished_at")),
    }


def details(doc: dict) -> dict:
    """GET /assets/videos/{id}: the entry with its parameters (as run) and how it was made."""
    result = doc.get("result") or {}
    params = (doc.get("job") or {}).get("params") or {}
    ran = result.get("params") or {}  # what the worker resolved (the model's defaults filled in)
    out = entry(doc)
    out["preview_gif_url"] = urls(doc).get("preview_gif_url")
    out["negative_prompt"] = params.get("negative_prompt")
    out["parameters"] = {k: ran.get(k, params.get(k)) for k in
                         ("width", "height", "num_frames", "fps", "guidance_scale", "num_inference_steps", "seed")}
    out["metadata"] = metadata(doc)
    out["generation_info"] = {"request_id": doc["id"],
                              "processing_time_seconds": seconds_between(doc.get("started_at"), doc.get("finished_at")),
                              "gpu_memory_used_gb": None, "device": doc.get("device"), "host": doc.get("host")}
    return out


def select(jobs: list[JobSummary], query, ended_status: Callable[[str], dict | None]) -> dict:
    """The list answer for the personality's jobs (the outbox index's summaries) and the
    request's query; only the page's entries are read whole (`ended_status(id)`)."""
    limit = parse_int("limit", query.get("limit"), 50, 1, MAX_LIMIT)
    offset = parse_int("offset", query.get("offset"), 0, 0)
    start, end = parse_date("start_date", query.get("start_date")), parse_date("end_date", query.get("end_date"), end=True)
    model = query.get("model") or None
    videos = []
    for job in jobs:
        if job.state != "completed" or job.finished is None or "video.mp4" not in job.files or (model and job.model != model):
            continue
        if (start and job.finished < start.timestamp()) or (end and job.finished > end.timestamp()):
            continue
        videos.append(job)
    videos.sort(key=lambda j: j.finished, reverse=True)
    page = videos[offset:offset + limit]
    docs = [doc for j in page if (doc := ended_status(j.id)) is not None and has_video(doc)]
    return {"videos": [entry(d) for d in docs], "total_count": len(videos), "has_more": offset + len(page) < len(videos)}
