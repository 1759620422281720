"""Visualizr's `/api/v1/models` (seed 003): the registry's video models described in the
document's shape, from the registry entry, its pipeline family (contract/families.py) and
the kind's params schema; no torch.

Ranges are what vidspool accepts for the model (the kind's params limits, [limits] and the
model's max_frame_pixels, the family's size and frame rules), not the range it was trained
on. `requirements.gpu_memory_gb` is the size of its weights on disk; `vram_usage_gb` is
measured on a worker holding it (null until one has), `estimated_load_time_seconds` too, else
taken from this host's past loads of it (null until it has loaded once); `performance` is
measured from the outbox (view.model_stats).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from contract.families import Family, family_of
from contract.model_folders import INDEX, weights_bytes as folder_weights

GIB = 1 << 30
VIDEO_KINDS = ("text-to-video", "image-to-video")
# What each family's pipelines take besides sizes (their __call__ signatures), and its name.
FAMILY_INFO = {
    "wan2.1": ("Wan2.1", True, True),
    "wan2.1-i2v": ("Wan2.1 image-to-video", True, True),
    "ltx-video": ("LTX-Video", True, True),
    "stable-video-diffusion": ("Stable Video Diffusion", False, False),
}  # family → (display name, takes a prompt, takes a negative prompt)
PARAM_TEXT = {
    "guidance_scale": "Controls adherence to prompt",
    "num_inference_steps": "Number of denoising steps",
    "width": "Frame width in pixels",
    "height": "Frame height in pixels",
    "num_frames": "Frames to generate",
    "fps": "Frames per second of the MP4",
}


def gb(n: float | None) -> float | None:
    """Bytes as GiB to 3 significant digits (a tiny test model's weights are not 0)."""
    return None if n is None else float(f"{n / GIB:.3g}")


def bounds(params_cls, name: str) -> tuple:
    """(minimum, maximum) of a params field, from its pydantic constraints."""
    low = high = None
    for m in params_cls.model_fields[name].metadata:
        low = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else low
        high = getattr(m, "le", None) if getattr(m, "le", None) is not None else high
    return low, high


def weights_bytes(folder: str | None) -> int | None:
    return folder_weights(Path(folder)) if folder else None


def folder_family(entry: dict) -> Family | None:
    name = entry.get("pipeline")
    if not name and entry.get("folder"):
        try:
            name = json.loads((Path(entry["folder"]) / INDEX).read_text(encoding="utf-8")).get("_class_name")
        except (OSError, ValueError, AttributeError):
            name = None
    return family_of(name or "")


def video_types(entry: dict, family: Family | None) -> list[str]:
    """The kinds of the two this personality runs that the model serves."""
    served = entry.get("kinds") or (sorted(family.classes) if family else list(VIDEO_KINDS))
    return [k for k in VIDEO_KINDS if k in served]


class ModelCatalog:
    """The document's model views for one personality (its view, settings and kinds)."""

    def __init__(self, front):
        self.front = front

    @property
    def view(self):
        return self.front.view

    def entries(self) -> list[tuple[dict, Family | None, list[str]]]:
        """(registry entry, family, video kinds) of every model serving a video kind."""
        out = []
        for entry in self.view.models():
            if entry["name"] not in self.view.settings.models:
                continue  # a hub download still under way
            family = folder_family(entry)
            if types := video_types(entry, family):
                out.append((entry, family, types))
        return out

    def find(self, model_id: str) -> tuple[dict, Family | None, list[str]] | None:
        return next((e for e in self.entries() if e[0]["name"] == model_id), None)

    def capabilities(self, entry: dict, family: Family | None, kind: str) -> dict:
        settings = self.view.settings
        params = self.view.kinds[kind].params
        multiple = family.size_multiple if family else 8
        (min_side, max_side), (min_fps, max_fps) = bounds(params, "width"), bounds(params, "fps")
        _, max_frames = bounds(params, "num_frames")
        min_frames = family.min_frames if family else 1
        limit = min(settings.limits.max_frame_pixels,
                    settings.models[entry["name"]].max_frame_pixels or settings.limits.max_frame_pixels)
        low = max(multiple, math.ceil(min_side / multiple) * multiple)
        high = min(max_side, math.isqrt(limit // min_frames)) // multiple * multiple
        frames = min(max_frames, limit // (low * low))
        if family:
            frames = family.nearest_frames(frames)
        fps = self.model_fps(entry, family, kind)
        _, prompt, negative = FAMILY_INFO.get(family.name if family else "", ("", True, True))
        return {
            "max_resolution": f"{high}x{high}", "min_resolution": f"{low}x{low}",
            "max_duration_seconds": round(frames / fps, 1), "min_duration_seconds": round(min_frames / fps, 2),
            "max_fps": max_fps, "min_fps": min_fps, "default_fps": fps,
            "frame_rule": family.describe_frames() if family else "at least 1 frame",
            "size_multiple": multiple,
            "supported_formats": ["mp4"],
            "supports_negative_prompt": negative,
            "supports_style_transfer": prompt and bool(self.front.config.styles),
        }

    def defaults(self, entry: dict, kind: str) -> dict:
        """The params a job of this model gets when the request leaves them out."""
        settings = self.view.settings
        kind_cfg = settings.kinds.get(kind)
        return {**(kind_cfg.defaults if kind_cfg else {}), **(entry.get("defaults") or {})}

    def model_fps(self, entry: dict, family: Family | None, kind: str) -> int:
        return self.defaults(entry, kind).get("fps") or (family.default_fps if family else 16)

    def summary(self, entry: dict, family: Family | None, types: list[str]) -> dict:
        caps = self.capabilities(entry, family, types[0])
        display = FAMILY_INFO.get(family.name, (family.name,))[0] if family else entry["name"]
        perf = self.view.model_stats(entry["name"])
        served = " and ".join(t for t in types if t not in display)  # "Wan2.1 image-to-video" says it already
        return {
            "id": entry["name"],
            "name": display,
            "description": f"{display} {served}".strip() + (f" ({self.view.paths.text(entry['problem'])})"
                                                            if entry.get("problem") else ""),
            "type": types[0],
            "types": types,
            "max_resolution": caps["max_resolution"],
            "max_duration_seconds": caps["max_duration_seconds"],
            "supported_formats": caps["supported_formats"],
            "gpu_memory_required_gb": gb(weights_bytes(entry.get("folder"))),
            "average_generation_time_seconds": perf.get("average_generation_time_seconds"),
            "available": entry.get("available", False),
            "loaded": bool(entry.get("loaded_on")),
        }

    def details(self, entry: dict, family: Family | None, types: list[str]) -> dict:
        kind = types[0]
        params = self.view.kinds[kind].params
        defaults = self.defaults(entry, kind)
        held = self.front.resident(entry["name"])
        out = self.summary(entry, family, types)
        for key in ("max_resolution", "max_duration_seconds", "supported_formats",
                    "gpu_memory_required_gb", "average_generation_time_seconds"):
            out.pop(key)
        out["version"] = entry.get("repo") and self.view.settings.models[entry["name"]].revision
        out["pipeline"] = entry.get("pipeline") or (family.classes.get(kind) if family else None)
        out["capabilities"] = self.capabilities(entry, family, kind)
        out["requirements"] = {
            "gpu_memory_gb": gb(weights_bytes(entry.get("folder"))),
            "vram_usage_gb": gb(max((h["bytes"] for h in held), default=None)),
            "estimated_load_time_seconds": self.front.load_seconds(entry["name"], held),
        }
        if family is not None:
            defaults.setdefault("fps", family.default_fps)  # what a job without fps gets
            defaults.setdefault("guidance_scale", family.guidance_scale)  # its pipeline's own
        out["parameters"] = {}
        for name in ("guidance_scale", "num_inference_steps", "width", "height", "num_frames", "fps"):
            low, high = bounds(params, name)
            out["parameters"][name] = {"min": low, "max": high, "default": defaults.get(name),
                                       "description": PARAM_TEXT[name] + ("" if name in defaults else " (default: the pipeline's own)")}
        out["performance"] = self.view.model_stats(entry["name"])
        out["loaded_on"] = entry.get("loaded_on") or []
        return out
