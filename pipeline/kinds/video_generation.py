"""text-to-video, image-to-video and video-to-video: a diffusers pipeline from the registry.

The job's model (job, preset or `[kinds.KIND] model`) is loaded once per worker and kept
warm (pipeline/models/resident.py); the call itself is generic (pipeline/diffusion.py), so
any family whose pipeline takes the usual arguments works: Wan2.1, LTX-Video and Stable
Video Diffusion are the ones tested. Results: video.mp4 (H.264 yuv420p, faststart),
thumb.jpg (the middle frame), preview.gif (small, ≤ 10 fps); `result.seed` repeats a run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.kinds import InputSpec, KindSpec

if TYPE_CHECKING:
    from pipeline.context import JobContext

MAX_SIDE = 4096


class VideoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(None, max_length=10_000)
    negative_prompt: str | None = Field(None, max_length=10_000)
    width: int | None = Field(None, ge=16, le=MAX_SIDE, description="default: the model's")
    height: int | None = Field(None, ge=16, le=MAX_SIDE, description="default: the model's")
    num_frames: int | None = Field(None, ge=1, le=2000, description="default: the model's")
    fps: int | None = Field(None, ge=1, le=120, description="of the MP4 (and conditioning where the model takes it)")
    num_inference_steps: int | None = Field(None, ge=1, le=1000)
    guidance_scale: float | None = Field(None, ge=0, le=100)
    seed: int | None = Field(None, ge=0, lt=2**63, description="same seed, same frames; default: random, reported in result.seed")
    quality: Literal["default", "exact"] | None = Field(None, description=(
        "exact: run without the model's lossy accelerate options (step caches); see result.accelerate"))


class TextToVideoParams(VideoParams):
    prompt: str = Field(min_length=1, max_length=10_000)


class VideoToVideoParams(TextToVideoParams):
    strength: float = Field(0.8, gt=0, le=1, description="how far from the input video to go")


def frame_pixels(params: VideoParams, inputs: Mapping[str, list[Path]]) -> int | None:
    if params.width and params.height and params.num_frames:
        return params.width * params.height * params.num_frames
    return None  # the model's defaults decide: checked in the worker before loading


def run(ctx: JobContext, params: VideoParams) -> None:
    from pipeline import diffusion, media
    from pipeline.models.resident import ran_dtypes
    from pipeline.preview import latent_preview

    kind = ctx.job["kind"]
    name, config = ctx.model_name, ctx.model_config
    store = ctx.models
    ctx.progress(diffusion.LOADING, stage="loading_model", message=f"model {name}")

    # Everything that can be refused is refused before any weights are read.
    cls = store.pipeline_class_for(name, config, kind)
    inputs: dict = {}
    video_frames = video_size = None
    if kind == "video-to-video":
        frames, _ = media.read_video_frames(ctx.input("video"), max_frames=params.num_frames)
        video_frames, video_size = len(frames), frames[0].size
    plan = diffusion.plan_call(cls, params, kind, name, video_frames, video_size)
    diffusion.check_budget(ctx, plan, config)
    if kind == "image-to-video":
        inputs["image"] = media.cover_image(media.load_image(ctx.input("image")), plan.width, plan.height)
    elif kind == "video-to-video":
        inputs["video"] = [media.cover_image(f, plan.width, plan.height) for f in frames[:plan.frames]]

    started = time.monotonic()
    pipe, resident, loaded_now = store.pipeline(
        name, config, kind, on_load=lambda message: ctx.progress(1, stage="loading_model", message=message),
        exact=params.quality == "exact", warm_size=plan.size, log=ctx.log)
    ctx.meta["model"] = {"name": name, "pipeline": type(pipe).__name__, "loaded": loaded_now,
                         "load_seconds": round(resident.load_seconds, 3) if loaded_now else 0.0,
                         "dtypes": ran_dtypes(pipe)}
    ctx.meta.setdefault("seconds", {})["load_model"] = round(time.monotonic() - started, 3)
    ctx.meta["seed"] = plan.seed
    ctx.meta["params"] = {"width": plan.width, "height": plan.height, "num_frames": plan.frames, "fps": plan.fps,
                          "num_inference_steps": plan.steps, "seed": plan.seed}
    ctx.log("generation.start", model=name, pipeline=type(pipe).__name__, width=plan.width, height=plan.height,
            frames=plan.frames, steps=plan.steps, seed=plan.seed, loaded=loaded_now)

    preview = latent_preview(ctx.preview, pipe, resident, plan, log=ctx.log)
    accelerated = resident.accelerated
    try:
        with accelerated.job(pipe, params.quality == "exact", plan.steps) if accelerated else nullcontext({}) as report:
            frames_out = diffusion.denoise(ctx, pipe, plan, preview=preview, **inputs)
        if accelerated:
            ctx.meta["accelerate"] = report
    except Exception as exc:
        if type(exc).__name__ != "OutOfMemoryError":
            raise
        raise diffusion.out_of_memory(store, name, plan, exc) from None

    encode_started = time.monotonic()
    ctx.progress(diffusion.ENCODING, stage="encoding", message="writing video.mp4")
    write_video_results(ctx, frames_out, plan.fps)
    ctx.meta["seconds"]["encode"] = round(time.monotonic() - encode_started, 3)


def write_video_results(ctx: JobContext, frames: list, fps: float) -> None:
    """video.mp4, thumb.jpg and preview.gif from uint8 RGB frames, and result.video."""
    from pipeline import media

    height, width = frames[0].shape[:2]
    with media.Mp4Writer(ctx.output_path("video.mp4"), width, height, fps) as writer:
        for frame in frames:
            writer.write(frame)
    media.write_thumb(frames[len(frames) // 2], ctx.output_path("thumb.jpg"))
    media.write_preview_gif(frames, fps, ctx.output_path("preview.gif"))
    ctx.meta["video"] = {**media.probe(ctx.output_path("video.mp4"))["video"], "frames": len(frames)}
    for name in ("video.mp4", "thumb.jpg", "preview.gif"):
        ctx.publish(name)


def _kind(name: str, params: type[VideoParams], inputs: tuple[InputSpec, ...], description: str,
          sized_by_input: tuple[str, ...] = ()) -> KindSpec:
    return KindSpec(name=name, params=params, run=run, inputs=inputs, frame_pixels=frame_pixels,
                    main_result="video.mp4", needs_model=True, description=description, sized_by_input=sized_by_input)


KINDS = (
    _kind("text-to-video", TextToVideoParams, (), "A prompt to a generated video."),
    _kind("image-to-video", VideoParams, (InputSpec("image", media=("image",), required=True),),
          "An image (and an optional prompt) to a generated video."),
    # The video keeps its size unless the job itself asks for another: a preset's is never stretched onto it.
    _kind("video-to-video", VideoToVideoParams, (InputSpec("video", media=("video",), required=True),),
          "A video restyled by a prompt; strength says how far from it to go.", sized_by_input=("width", "height")),
)
