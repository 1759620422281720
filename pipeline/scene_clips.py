"""Generated backgrounds for narrated-video: one text-to-video clip per scene.

The job's model (its "model", or `[kinds.narrated-video] model`) is a registry model that
serves text-to-video; it is loaded once per worker and kept warm like any other. A scene's
prompt is the job's `background_prompt` (a style, e.g. "watercolor, soft light") followed by
the scene's sentence. Size, frame count, steps and guidance are the model's registry
`defaults`, else its pipeline's own; scene i is seeded with the job's seed + i, so a job
repeats. Everything that can be refused (no model, sizes the model would round, the frame
budget) is refused when the generator is made, before any speech is synthesized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline import diffusion
from contract.errors import ErrorCode, JobError

if TYPE_CHECKING:
    import numpy as np

    from pipeline.context import JobContext

MODEL_KIND = "text-to-video"
PLANNED = ("negative_prompt", "width", "height", "num_frames", "fps", "num_inference_steps", "guidance_scale")


@dataclass
class SceneCall:
    """What diffusion.plan_call reads of a job's params, for one scene."""

    prompt: str
    seed: int
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None


class SceneClips:
    def __init__(self, ctx: JobContext, style: str | None, seed: int):
        if ctx.model_name is None:
            raise JobError(ErrorCode.MODEL_NOT_FOUND, (
                "background 'generate' needs a text-to-video model: name one in the job (\"model\") or set "
                "[kinds.narrated-video] model in config; this host has none for narrated-video "
                "(or use background 'color', 'images' or 'library')"))
        self.name, self.config, self.store = ctx.model_name, ctx.model_config, ctx.models
        self.style = (style or "").strip()
        self.seed = seed
        defaults = self.config.get("defaults") or {}
        self.defaults = {k: defaults[k] for k in PLANNED if defaults.get(k) is not None}
        self.cls = self.store.pipeline_class_for(self.name, self.config, MODEL_KIND)
        # Sizes, frame rules and frame budgets, before any work.
        diffusion.check_budget(ctx, self.plan(0, "check"), self.config)
        self.loaded_now = False

    def plan(self, index: int, sentence: str) -> diffusion.Plan:
        prompt = f"{self.style}, {sentence}" if self.style else sentence
        return diffusion.plan_call(self.cls, SceneCall(prompt=prompt, seed=self.seed + index, **self.defaults),
                                   MODEL_KIND, self.name)

    def generate(self, ctx: JobContext, index: int, scenes: int, sentence: str,
                 span: tuple[float, float]) -> tuple[list[np.ndarray], float]:
        """Scene `index`'s clip (uint8 RGB frames) and its frame rate, with progress over `span`."""
        plan = self.plan(index, sentence)
        pipe, resident, loaded_now = self.store.pipeline(
            self.name, self.config, MODEL_KIND,
            on_load=lambda message: ctx.progress(span[0], stage="backgrounds", message=message),
            warm_size=plan.size, log=ctx.log)
        self.loaded_now = self.loaded_now or loaded_now
        low, high = span

        def on_step(step: int, total: int, eta: float | None) -> None:
            ctx.progress(low + (high - low) * step / total, stage="backgrounds",
                         message=f"scene {index + 1}/{scenes}: step {step}/{total}", step=step,
                         total_steps=total, eta_seconds=eta)

        try:
            return diffusion.denoise(ctx, pipe, plan, on_step=on_step), plan.fps
        except Exception as exc:
            if type(exc).__name__ != "OutOfMemoryError":
                raise
            raise diffusion.out_of_memory(self.store, self.name, plan, exc) from None

    def describe(self) -> dict:
        return {"name": self.name, "pipeline": self.cls.__name__, "loaded": self.loaded_now, "seed": self.seed,
                "defaults": self.defaults}
