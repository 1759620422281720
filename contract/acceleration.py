"""`[models.NAME] accelerate` and per-component dtypes (SPEC §11): the options, checked
without torch.

Compile and attention backends are lossless (the frames stay within bf16 tolerance of the
default call); step caches, quantization and layerwise casting are lossy, and a job with
`params.quality = "exact"` runs without them (the last two need a full-precision copy). The
worker applies the options (pipeline/models/acceleration.py); this module only says which
exist and what each needs, so `vidspool doctor` and start-up can name a bad key.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DTYPES = ("float32", "float16", "bfloat16")
Dtype = Literal["auto", "float32", "float16", "bfloat16"]

# diffusers' attention backends (attention_dispatch.AttentionBackendName) and the package
# each needs beyond torch. Whether the worker's device runs one is probed at load (the
# _native_cudnn/_flash/_efficient kernels and the packaged ones need an NVIDIA GPU). Hub
# kernels are left out: they download at load, and a worker never reaches the network.
ATTENTION_BACKENDS: dict[str, str | None] = {
    "default": None,  # the pipeline's own (PyTorch SDPA)
    "native": None,
    "_native_math": None,
    "_native_cudnn": None,
    "_native_efficient": None,
    "_native_flash": None,
    "flex": None,
    "flash": "flash_attn",
    "flash_varlen": "flash_attn",
    "_flash_3": "flash_attn_interface",
    "_flash_varlen_3": "flash_attn_interface",
    "sage": "sageattention",
    "sage_varlen": "sageattention",
    "xformers": "xformers",
}


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FirstBlockCache(_Options):
    """Reuses the other blocks' residual while the first block's output barely changes."""

    kind: Literal["first_block"]
    threshold: float = Field(0.05, gt=0, le=10)


class TaylorSeerCache(_Options):
    """Predicts the blocks' attention and feed-forward outputs from a Taylor series between
    full computations every `cache_interval` steps."""

    kind: Literal["taylorseer"]
    cache_interval: int = Field(5, ge=1, le=100)
    disable_cache_before_step: int = Field(3, ge=0)
    disable_cache_after_step: int | None = Field(None, ge=0)
    max_order: int = Field(1, ge=0, le=4)
    # Module names (regular expressions, whole name) to predict; default: every block's
    # attention and feed-forward (diffusers' own default matches Flux's names only).
    cache_identifiers: list[str] = [r"(blocks|transformer_blocks)\.\d+\.(attn\d*|ffn?)"]


class MagCache(_Options):
    """Skips whole steps while the accumulated residual-magnitude error stays small."""

    kind: Literal["magcache"]
    threshold: float = Field(0.06, gt=0, le=10)
    max_skip_steps: int = Field(3, ge=1, le=100)
    retention_ratio: float = Field(0.2, ge=0, lt=1)
    # The model's residual-magnitude ratio per step, interpolated to the job's steps; default:
    # the file `vidspool models calibrate NAME` writes (calibration_file).
    mag_ratios: list[float] | None = Field(None, min_length=2)


class PyramidAttentionBroadcast(_Options):
    """Reuses attention outputs for a few blocks' steps inside a timestep window."""

    kind: Literal["pab"]
    spatial_attention_block_skip_range: int = Field(2, ge=2, le=20)
    spatial_attention_timestep_skip_range: tuple[int, int] = (100, 800)


Cache = Annotated[FirstBlockCache | TaylorSeerCache | MagCache | PyramidAttentionBroadcast,
                  Field(discriminator="kind")]


class Accelerate(_Options):
    compile: Literal["none", "regional", "full"] = "none"
    attention: str = "default"
    cache: Cache | None = None
    # Memory options, lossy: the denoiser's weights in int8/float8 (torchao, weight-only), or
    # stored in float8 and cast per layer to the model's dtype for compute.
    quantize: Literal["none", "int8_weight", "float8_weight"] = "none"
    layerwise_casting: Literal["none", "float8_e4m3fn", "float8_e5m2"] = "none"

    @model_validator(mode="after")
    def _known(self):
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"attention: unknown backend {self.attention!r}; one of {', '.join(ATTENTION_BACKENDS)}")
        if self.cache is not None and self.compile != "none":
            raise ValueError(
                f"cache: {self.cache.kind!r} decides per step in Python, which compiled code "
                "(fullgraph) cannot hold; use compile = \"none\" with a cache, or no cache")
        if self.quantize != "none" and self.layerwise_casting != "none":
            raise ValueError("quantize and layerwise_casting both change how weights are stored; choose one")
        return self

    @property
    def shrinks_weights(self) -> bool:
        """Lossy options that live in the loaded weights (a job asking for exact needs a
        full-precision copy of the model)."""
        return self.quantize != "none" or self.layerwise_casting != "none"


def options_of(config: dict) -> Accelerate:
    """The accelerate options of a model's registry entry (a dict, as workers get it)."""
    return Accelerate.model_validate(config.get("accelerate") or {})


def exact_config(config: dict) -> dict:
    """A model's registry entry without its weight-shrinking options (marked: its jobs still
    report what ran)."""
    accelerate = {**(config.get("accelerate") or {}), "quantize": "none", "layerwise_casting": "none"}
    return {**config, "accelerate": accelerate, "exact_copy": True}


def calibration_file(config_dir: Path, name: str) -> Path:
    """Where `vidspool models calibrate NAME` keeps MagCache's ratios: beside the config."""
    return config_dir / "calibration" / f"{name}.magcache.json"


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
    package = ATTENTION_BACKENDS[backend]
    if package and importlib.util.find_spec(package) is None:
        return f"attention backend {backend!r} needs the Python package {package!r}, which is not installed"
    return None
