"""`[models.NAME] accelerate` and per-component dtypes (SPEC §11): the options, checked
without torch.

Compile and attention backends are lossless (the frames stay within bf16 tolerance of the
default call); step caches are lossy and a job with `params.quality = "exact"` runs without
them. The worker applies the options (pipeline/models/acceleration.py); this module only
says which exist and what each needs, so `vidspool doctor` and start-up can name a bad key.
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DTYPES = ("float32", "float16", "bfloat16")
Dtype = Literal["auto", "float32", "float16", "bfloat16"]

# diffusers' attention backends (attention_dispatch.AttentionBackendName) and the package
# each needs; "cuda" ones run only on an NVIDIA GPU. Hub kernels are left out: they download
# at load, and a worker never reaches the network.
ATTENTION_BACKENDS: dict[str, tuple[str | None, bool]] = {
    "default": (None, False),  # the pipeline's own (PyTorch SDPA)
    "native": (None, False),
    "_native_math": (None, False),
    "_native_cudnn": (None, True),
    "_native_efficient": (None, True),
    "_native_flash": (None, True),
    "flex": (None, False),
    "flash": ("flash_attn", True),
    "flash_varlen": ("flash_attn", True),
    "_flash_3": ("flash_attn_interface", True),
    "_flash_varlen_3": ("flash_attn_interface", True),
    "sage": ("sageattention", True),
    "sage_varlen": ("sageattention", True),
    "xformers": ("xformers", True),
}


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FirstBlockCache(_Options):
    """Reuses the other blocks' residual while the first block's output barely changes."""

    kind: Literal["first_block"]
    threshold: float = Field(0.05, gt=0, le=10)


class MagCache(_Options):
    """Skips whole steps while the accumulated residual-magnitude error stays small."""

    kind: Literal["magcache"]
    threshold: float = Field(0.06, gt=0, le=10)
    max_skip_steps: int = Field(3, ge=1, le=100)
    retention_ratio: float = Field(0.2, ge=0, lt=1)
    # The model's residual-magnitude ratio per step, from a calibration run (MagCache's
    # paper, or diffusers' MagCacheConfig(calibrate=True)); interpolated to the job's steps.
    mag_ratios: list[float] = Field(min_length=2)


class PyramidAttentionBroadcast(_Options):
    """Reuses attention outputs for a few blocks' steps inside a timestep window."""

    kind: Literal["pab"]
    spatial_attention_block_skip_range: int = Field(2, ge=2, le=20)
    spatial_attention_timestep_skip_range: tuple[int, int] = (100, 800)


Cache = Annotated[FirstBlockCache | MagCache | PyramidAttentionBroadcast,
                  Field(discriminator="kind")]
CACHE_KINDS = ("first_block", "magcache", "pab")


class Accelerate(_Options):
    compile: Literal["none", "regional", "full"] = "none"
    attention: str = "default"
    cache: Cache | None = None

    @model_validator(mode="after")
    def _known(self):
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"attention: unknown backend {self.attention!r}; one of {', '.join(ATTENTION_BACKENDS)}")
        if self.cache is not None and self.compile != "none":
            raise ValueError(
                f"cache: {self.cache.kind!r} decides per step in Python, which compiled code "
                "(fullgraph) cannot hold; use compile = \"none\" with a cache, or no cache")
        return self

    @property
    def lossy(self) -> bool:
        return self.cache is not None


def dtype_table(value) -> dict[str, str]:
    """A model's `dtype` (one name, or a table per component with `default`) as a table."""
    return {"default": value} if isinstance(value, str) else dict(value)


def check_dtype_table(value) -> None:
    if isinstance(value, str):
        return
    for component, name in value.items():
        if name not in DTYPES and not (component == "default" and name == "auto"):
            raise ValueError(f"dtype.{component}: {name!r} is not one of {', '.join(DTYPES)}")


def cache_problem(cache, model_index: dict) -> str | None:
    """Why a model folder's denoiser cannot take `cache` (None: it has a transformer)."""
    if cache is None or "transformer" in model_index:
        return None
    denoiser = model_index.get("unet", [None, "no denoiser"])[1]
    return f"{cache.kind!r} needs a diffusers transformer; this model's denoiser ({denoiser}) supports no step cache"


def attention_problem(backend: str) -> str | None:
    """Why `backend` cannot run on this host, judged without torch (None: it may)."""
    package, _ = ATTENTION_BACKENDS[backend]
    if package and importlib.util.find_spec(package) is None:
        return f"attention backend {backend!r} needs the Python package {package!r}, which is not installed"
    return None
