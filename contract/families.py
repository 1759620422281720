"""Pipeline families: which diffusers class serves which kind, and what sizes each accepts.

A model folder's `model_index.json` names one class (`_class_name`); the family of that
class says which class to use for each kind. `WanPipeline` weights also serve
video-to-video through `WanVideoToVideoPipeline.from_pipe`, and LTX-Video's weights serve
both text and image to video, so one loaded model answers several kinds. A class not in
the table serves the kinds its registry entry names, as itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    # kind → diffusers pipeline class for that kind
    classes: dict[str, str]
    frame_rule: tuple[int, int] = (1, 0)  # num_frames % a == b
    min_frames: int = 1
    size_multiple: int = 8
    default_fps: int = 16
    guidance_scale: float = 5.0  # its pipelines' own default (SVD: the max_guidance_scale it ramps to)
    # Per-component dtypes its authors recommend over the model's default dtype (a table in
    # `[models.NAME] dtype` wins): Wan2.1 decodes in float32, as its diffusers docs load it.
    dtypes: tuple[tuple[str, str], ...] = ()

    def frames_ok(self, frames: int) -> bool:
        a, b = self.frame_rule
        return frames >= self.min_frames and frames % a == b

    def describe_frames(self) -> str:
        a, b = self.frame_rule
        if a == 1:
            return f"at least {self.min_frames} frames"
        examples = ", ".join(str(a * k + b) for k in (4, 8, 20))
        return f"{a}k+{b} frames (e.g. {examples})"

    def nearest_frames(self, frames: int) -> int:
        """The largest valid frame count ≤ frames (at least the smallest valid one)."""
        a, b = self.frame_rule
        smallest = next(n for n in range(self.min_frames, self.min_frames + a) if n % a == b)
        return max(smallest, frames - ((frames - b) % a))


# Wan2.1: VAE 4× in time, 8× in space, transformer patches of 2; made at 16 fps.
_WAN = {"frame_rule": (4, 1), "size_multiple": 16, "default_fps": 16, "dtypes": (("vae", "float32"),)}
FAMILIES = [
    Family("wan2.1", {"text-to-video": "WanPipeline", "video-to-video": "WanVideoToVideoPipeline"}, **_WAN),
    Family("wan2.1-i2v", {"image-to-video": "WanImageToVideoPipeline"},
           **{**_WAN, "dtypes": (("vae", "float32"), ("image_encoder", "float32"))}),
    Family(
        "ltx-video",
        {"text-to-video": "LTXPipeline", "image-to-video": "LTXImageToVideoPipeline"},
        frame_rule=(8, 1), size_multiple=32, default_fps=24, guidance_scale=3.0,
    ),
    Family(
        "stable-video-diffusion",
        {"image-to-video": "StableVideoDiffusionPipeline"},
        min_frames=2, size_multiple=8, default_fps=7, guidance_scale=3.0,
    ),
]
_BY_CLASS = {cls: fam for fam in FAMILIES for cls in fam.classes.values()}


def family_of(class_name: str) -> Family | None:
    return _BY_CLASS.get(class_name)


def kinds_of(class_name: str) -> list[str]:
    """The kinds a model whose model_index.json names `class_name` can serve."""
    family = family_of(class_name)
    return sorted(family.classes) if family else []


def class_for(class_name: str, kind: str) -> str:
    """The pipeline class that runs `kind` with the weights of a `class_name` model."""
    family = family_of(class_name)
    if family is None:
        return class_name
    return family.classes.get(kind, class_name)
