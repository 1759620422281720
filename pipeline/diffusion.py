"""One generic diffusers video call for text, image and video to video.

The job's params become keyword arguments of the pipeline's own `__call__`, filtered by its
signature (a param the pipeline does not take is an `invalid_job`, not silently dropped).
Sizes the pipeline would silently round are refused before loading with a suggestion.
Progress comes from `callback_on_step_end`; a cancel raises there, at the next step.
"""

from __future__ import annotations

import inspect
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from contract.errors import ErrorCode, JobError
from contract.families import Family, family_of

if TYPE_CHECKING:
    import numpy as np

    from pipeline.context import JobContext
    from pipeline.preview import LatentPreview

# Share of the progress bar per stage.
LOADING, DENOISING, DECODING, ENCODING = 0.0, 10.0, 85.0, 90.0
DEFAULT_FPS = 16
DEFAULT_FRAMES = 14  # for pipelines whose signature leaves num_frames to the model (SVD)


@dataclass
class Plan:
    """The resolved call: sizes with defaults filled in, and the pipeline's kwargs."""

    cls: type
    family: Family | None
    width: int
    height: int
    frames: int
    fps: int
    steps: int
    seed: int
    kwargs: dict

    @property
    def size(self) -> dict:
        """Its width, height and num_frames (where a compiled model loaded for it warms up)."""
        return {"width": self.width, "height": self.height, "num_frames": self.frames}


def plan_call(cls: type, params, kind: str, model: str, video_frames: int | None = None,
              video_size: tuple[int, int] | None = None) -> Plan:
    """Checks the params against pipeline class `cls` and fills in its defaults."""
    sig = inspect.signature(cls.__call__).parameters
    family = family_of(cls.__name__)
    what = f"model {model!r} ({cls.__name__})"

    def default(name, fallback=None):
        p = sig.get(name)
        return p.default if p is not None and p.default is not inspect.Parameter.empty and p.default is not None else fallback

    width = params.width or (video_size[0] if video_size else None) or default("width")
    height = params.height or (video_size[1] if video_size else None) or default("height")
    if width is None or height is None:
        raise JobError(ErrorCode.INVALID_JOB, f"params.width/height: {what} has no default size; give both")
    multiple = family.size_multiple if family else 8
    if video_size and not (params.width and params.height):
        width, height = width - width % multiple, height - height % multiple  # the input's size, rounded down
    for key, value in (("width", width), ("height", height)):
        if value % multiple:
            raise JobError(ErrorCode.INVALID_JOB, (
                f"params.{key}: {what} needs a multiple of {multiple}, got {value} "
                f"(e.g. {value - value % multiple or multiple} or {value - value % multiple + multiple})"))

    if video_frames is not None:  # video-to-video: the input's frames, up to num_frames
        frames = min(video_frames, params.num_frames or video_frames)
        if family and not family.frames_ok(frames):
            frames = family.nearest_frames(frames)
            if frames > video_frames:
                raise JobError(ErrorCode.UNSUPPORTED_INPUT, f"input video: {what} needs {family.describe_frames()}, the video has {video_frames}")
    else:
        frames = params.num_frames or default("num_frames", DEFAULT_FRAMES)
        if family and not family.frames_ok(frames):
            lower = family.nearest_frames(frames)
            raise JobError(ErrorCode.INVALID_JOB, (
                f"params.num_frames: {what} needs {family.describe_frames()}, got {frames} "
                f"(nearest: {lower} or {lower + family.frame_rule[0]})"))
    fps = params.fps or (family.default_fps if family else DEFAULT_FPS)
    steps = params.num_inference_steps or default("num_inference_steps", 50)
    seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**31)

    kwargs: dict = {}

    def put(name: str, value, param: str | None = None) -> None:
        if value is None:
            return
        if name not in sig:
            raise JobError(ErrorCode.INVALID_JOB, f"params.{param or name}: {what} does not take it; leave it out")
        kwargs[name] = value

    if params.prompt is None and "prompt" in sig:
        kwargs["prompt"] = ""  # image-to-video without a prompt: Wan and LTX still want one
    put("prompt", params.prompt or None)
    put("negative_prompt", params.negative_prompt)
    put("width", width)
    put("height", height)
    if "num_frames" in sig:
        kwargs["num_frames"] = frames
    put("num_inference_steps", steps)
    if params.guidance_scale is not None:
        if "max_guidance_scale" in sig:  # SVD ramps guidance over the frames
            kwargs["max_guidance_scale"] = params.guidance_scale
            kwargs["min_guidance_scale"] = min(1.0, params.guidance_scale)
        else:
            put("guidance_scale", params.guidance_scale)
    if "frame_rate" in sig:
        kwargs["frame_rate"] = fps
    elif "fps" in sig:
        kwargs["fps"] = fps
    if "decode_chunk_size" in sig:
        kwargs["decode_chunk_size"] = min(8, frames)
    put("strength", getattr(params, "strength", None))
    return Plan(cls, family, width, height, frames, fps, steps, seed, kwargs)


def check_budget(ctx: JobContext, plan: Plan, config: dict) -> None:
    """Refuses a call over [limits] max_frame_pixels or the model's own max_frame_pixels."""
    from pipeline.context import check_frame_budget

    ctx.check_frame_budget(plan.frames, plan.width, plan.height)
    check_frame_budget(plan.frames, plan.width, plan.height, config.get("max_frame_pixels"))


def denoise(ctx: JobContext, pipe, plan: Plan, on_step=None, preview: LatentPreview | None = None,
            **inputs) -> list[np.ndarray]:
    """Runs the pipeline with per-step progress; returns the frames as uint8 RGB arrays.

    `on_step(step, total, eta_seconds)` replaces the default progress report (the stages
    denoising and decoding over DENOISING–DECODING) for a caller with its own progress bar.
    `preview` shows the latents every [preview] every_steps steps, before that step's report."""
    import torch

    generator = torch.Generator("cpu").manual_seed(plan.seed)
    started = time.monotonic()
    step_times: list[float] = []

    def on_step_end(pipeline, index, timestep, tensors):
        now = time.monotonic()
        step_times.append(now)
        step = index + 1
        total = getattr(pipeline, "num_timesteps", None) or plan.steps
        if preview is not None and preview.due(step):
            preview.show(tensors["latents"], step)
        per_step = (now - started) / step if len(step_times) < 3 else (now - step_times[0]) / (len(step_times) - 1)
        if on_step is not None:
            on_step(step, total, round(per_step * (total - step), 2))
        elif step >= total:
            ctx.progress(DECODING, stage="decoding", message="decoding latents to frames", step=step, total_steps=total)
        else:
            ctx.progress(DENOISING + (DECODING - DENOISING) * step / total, stage="denoising",
                         message=f"step {step}/{total}", step=step, total_steps=total,
                         eta_seconds=round(per_step * (total - step), 2))
        return tensors

    if on_step is None:
        ctx.progress(DENOISING, stage="denoising", message=f"step 0/{plan.steps}", step=0, total_steps=plan.steps)
    out = pipe(**plan.kwargs, **inputs, generator=generator, output_type="np", callback_on_step_end=on_step_end,
               callback_on_step_end_tensor_inputs=["latents"])
    ended = time.monotonic()
    seconds = ctx.meta.setdefault("seconds", {})
    seconds["denoise_and_decode"] = round(ended - started, 3)
    if step_times:  # after the last step: decoding, timed apart for the daemon's estimates
        seconds["decode"] = round(ended - step_times[-1], 3)
    if len(step_times) > 1:
        ctx.meta["seconds_per_step"] = round((step_times[-1] - step_times[0]) / (len(step_times) - 1), 4)
    return to_uint8_frames(out.frames)


def to_uint8_frames(frames) -> list[np.ndarray]:
    """The first video of a pipeline output (np array, tensor or PIL list) as uint8 frames."""
    import numpy as np

    video = frames[0]
    if hasattr(video, "detach"):  # a torch tensor
        video = video.detach().float().cpu().numpy()
    if isinstance(video, list):
        video = np.stack([np.asarray(f) for f in video])
    video = np.asarray(video)
    if video.ndim != 4:
        raise JobError(ErrorCode.INTERNAL, f"the pipeline returned frames shaped {video.shape}, not (frames, height, width, 3)")
    if video.shape[-1] != 3 and video.shape[1] == 3:
        video = video.transpose(0, 2, 3, 1)
    if video.dtype != np.uint8:
        video = (np.nan_to_num(video.astype(np.float32)).clip(0, 1) * 255 + 0.5).astype(np.uint8)
    return [np.ascontiguousarray(f) for f in video]


def out_of_memory(store, name: str, plan: Plan, exc: Exception) -> JobError:
    """The job's error for a CUDA out-of-memory, after emptying the cache for the next job."""
    store.free_cache()
    return JobError(ErrorCode.GPU_OUT_OF_MEMORY, (
        f"out of GPU memory running {name} at {plan.width}x{plan.height}, {plan.frames} frames: {exc}. "
        "Try fewer frames or a smaller size, or set offload = \"model\" / vae_tiling = true for this model"))
