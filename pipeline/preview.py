"""Live previews (SPEC §10.2): `outbox/<id>/preview.jpg` while a job runs.

A video job's preview is its current latents made visible by a linear latent→RGB map (one
(C+1)×3 matrix) fitted once per model from that model's own VAE: a few random latents of a
small size are decoded the way the pipeline decodes them, the pixels are averaged onto the
latent grid, and least squares gives the map. No family needs hand-made factors, tiny
random-weight models included. Narrated-video and talking-head show their last rendered
frame instead, at most every RENDERED_PREVIEW_SECONDS.

The file is written under a dot-name in the same folder and renamed over preview.jpg, so a
reader never sees a partial one; the attempt's end removes it (the final status has no
`preview`). A preview that cannot be written is logged once and never fails the job.
"""

from __future__ import annotations

import io
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

JPEG_QUALITY = 80
# A rendered (not denoised) video shows a new frame at most this often.
RENDERED_PREVIEW_SECONDS = 1.0
# What the fit decodes, in one batch (far cheaper than one by one on a CPU): this many random
# latents of (frames, height, width) latent cells; two latent frames, so that a causal VAE's
# later frames (the ones a preview shows) are fitted too.
FIT_DRAWS = 4
FIT_GRID = (2, 4, 4)
FIT_SEED = 0


# -- where each family keeps its latents, and how it decodes them ------------------------------
@dataclass(frozen=True)
class LatentLayout:
    """A family's latents during denoising: `channels(pipe)`; `grid(pipe, latents, plan)`,
    the callback's latents as one video's (C, T, H, W) grid; `decode(pipe, grids)`,
    (B, C, T, H, W) grids to (B, 3, T', H', W') pixels in [-1, 1], as the pipeline decodes."""

    channels: Callable
    grid: Callable
    decode: Callable


def _wan_decode(pipe, z):
    import torch

    config = pipe.vae.config
    mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1, 1).to(z.device, z.dtype)
    std = torch.tensor(config.latents_std).view(1, -1, 1, 1, 1).to(z.device, z.dtype)
    return pipe.vae.decode(z * std + mean, return_dict=False)[0]


def _ltx_grid(pipe, latents, plan):
    frames = (plan.frames - 1) // pipe.vae_temporal_compression_ratio + 1
    height, width = plan.height // pipe.vae_spatial_compression_ratio, plan.width // pipe.vae_spatial_compression_ratio
    return pipe._unpack_latents(latents, frames, height, width, pipe.transformer_spatial_patch_size,
                                pipe.transformer_temporal_patch_size)[0]


def _ltx_decode(pipe, z):
    import torch

    vae = pipe.vae
    z = pipe._denormalize_latents(z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    timestep = torch.zeros(len(z), device=z.device, dtype=z.dtype) if vae.config.timestep_conditioning else None
    return vae.decode(z, timestep, return_dict=False)[0]


def _svd_decode(pipe, z):
    frames = z.shape[2]
    return pipe.decode_latents(z.permute(0, 2, 1, 3, 4), num_frames=frames, decode_chunk_size=frames)


_WAN = LatentLayout(channels=lambda pipe: pipe.vae.config.z_dim, grid=lambda pipe, latents, plan: latents[0],
                    decode=_wan_decode)
LAYOUTS = {
    "wan2.1": _WAN,
    "wan2.1-i2v": _WAN,
    "ltx-video": LatentLayout(channels=lambda pipe: pipe.vae.config.latent_channels, grid=_ltx_grid, decode=_ltx_decode),
    "stable-video-diffusion": LatentLayout(
        channels=lambda pipe: pipe.vae.config.latent_channels,
        grid=lambda pipe, latents, plan: latents[0].permute(1, 0, 2, 3),  # (F, C, H, W) → (C, F, H, W)
        decode=_svd_decode),
}


# -- the fitted map --------------------------------------------------------------------------
@dataclass(frozen=True)
class LatentRgbMap:
    """RGB in [0, 1] = [latent, 1] @ weights for each latent cell; a cell is `scale` pixels
    wide in the decoded video."""

    weights: np.ndarray  # (C + 1, 3)
    scale: int
    fit_seconds: float

    def rgb(self, frame) -> np.ndarray:
        """One latent frame (C, H, W; a tensor or array) as uint8 (H, W, 3)."""
        import numpy as np

        cells = np.asarray(frame, dtype=np.float32)
        rgb = np.tensordot(cells, self.weights[:-1], axes=(0, 0)) + self.weights[-1]
        return (rgb.clip(0, 1) * 255 + 0.5).astype(np.uint8)


def pool_to_grid(pixels, grid_shape: tuple[int, int, int]):
    """Decoded pixels (3, T', H', W') averaged onto a (T, H, W) latent grid: (3, T, H, W) and
    the spatial scale. Time, read from the shapes: 1:1 (SVD); causal, T' = 1 + k·(T-1) with
    an even k (the first latent frame is one pixel frame, each next one k: Wan 4, LTX 8);
    else T' = k·T blocks."""
    import torch

    t, h, w = grid_shape
    frames, height, width = pixels.shape[1:]
    scale = height // h
    if height != h * scale or width != w * scale:
        raise ValueError(f"decoded {height}x{width} pixels are no multiple of the {h}x{w} latent grid")
    cells = torch.nn.functional.avg_pool3d(pixels[None], (1, scale, scale))[0]
    if frames == t:
        return cells, scale
    if t > 1 and (frames - 1) % (t - 1) == 0 and (frames - 1) // (t - 1) % 2 == 0:
        rest = cells[:, 1:].reshape(3, t - 1, (frames - 1) // (t - 1), h, w).mean(2)
        return torch.cat([cells[:, :1], rest], 1), scale
    if frames % t == 0:
        return cells.reshape(3, t, frames // t, h, w).mean(2), scale
    raise ValueError(f"{frames} decoded frames do not map onto {t} latent frames")


def fit_map(pipe, layout: LatentLayout, draws: int = FIT_DRAWS, grid: tuple[int, int, int] = FIT_GRID,
            seed: int = FIT_SEED) -> LatentRgbMap:
    """Least squares from random latents to their pooled decode (the VAE's own decoding)."""
    import numpy as np
    import torch

    started = time.monotonic()
    vae = pipe.vae
    device = getattr(pipe, "_execution_device", None) or vae.device
    generator = torch.Generator("cpu").manual_seed(seed)
    z = torch.randn((draws, layout.channels(pipe), *grid), generator=generator)
    with torch.inference_mode():
        pixels = layout.decode(pipe, z.to(device, vae.dtype)).float().cpu()
    inputs, targets, scale = [], [], 1
    for latent, decoded in zip(z, pixels):
        cells, scale = pool_to_grid((decoded + 1) / 2, grid)
        inputs.append(latent.reshape(len(latent), -1).T)
        targets.append(cells.reshape(3, -1).T)
    x = torch.cat(inputs).double().numpy()
    x = np.hstack([x, np.ones((len(x), 1))])
    weights, *_ = np.linalg.lstsq(x, torch.cat(targets).double().numpy(), rcond=None)
    if hasattr(pipe, "maybe_free_model_hooks"):
        pipe.maybe_free_model_hooks()  # with offload: the VAE goes back where it waits
    return LatentRgbMap(weights.astype(np.float32), scale, round(time.monotonic() - started, 3))


# -- writing the file --------------------------------------------------------------------------
def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept, so the longer side is at most max_side."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    return max(1, round(width * max_side / longest)), max(1, round(height * max_side / longest))


class PreviewWriter:
    """Writes one job's preview.jpg; `take_step()` hands the step of a new one to the next
    progress message. Off (every_steps 0, or no path) it does nothing."""

    def __init__(self, path: str | Path | None = None, every_steps: int = 0, max_side: int = 512, log=None):
        self.path = Path(path) if path and every_steps > 0 else None
        self.every_steps = every_steps
        self.max_side = max_side
        self._log = log
        self._tmp = self.path and self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        self._new_step: int | None = None
        self._last_frame_at: float | None = None
        self._failed = False
        self.written = 0
        self.seconds = 0.0  # making and writing previews, this job
        self.fit_seconds = 0.0  # fitting the model's map, when this job did

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def step_due(self, step: int) -> bool:
        return self.path is not None and step % self.every_steps == 0

    def write(self, rgb: np.ndarray, step: int, size: tuple[int, int] | None = None) -> None:
        """Shows uint8 (H, W, 3) `rgb` at `size` (default its own), capped at max_side."""
        if self.path is None:
            return
        from PIL import Image

        started = time.monotonic()
        image = Image.fromarray(rgb)
        target = fit_size(*(size or image.size), self.max_side)
        if target != image.size:
            image = image.resize(target, Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        # The step rides in the JPEG comment too, so a reader can tell which one it got.
        image.save(buf, format="JPEG", quality=JPEG_QUALITY, comment=f"vidspool preview step {step}")
        try:
            self._tmp.write_bytes(buf.getvalue())
            os.replace(self._tmp, self.path)
        except OSError as exc:  # the spool's trouble, not the job's: the result is made locally
            if not self._failed and self._log:
                self._log("preview.write_failed", level="warning", path=str(self.path), reason=str(exc))
            self._failed = True
            return
        self._new_step = step
        self.written += 1
        self.seconds += time.monotonic() - started

    def frame(self, rgb: np.ndarray, index: int) -> None:
        """A rendered frame: shown at once, then at most every RENDERED_PREVIEW_SECONDS."""
        if self.path is None:
            return
        now = time.monotonic()
        if self._last_frame_at is None or now - self._last_frame_at >= RENDERED_PREVIEW_SECONDS:
            self._last_frame_at = now
            self.write(rgb, index)

    def describe(self) -> dict:
        """What previews cost this job (`result.previews`)."""
        return {"written": self.written, "seconds": round(self.seconds, 3), "fit_seconds": self.fit_seconds}

    def take_step(self) -> int | None:
        step, self._new_step = self._new_step, None
        return step

    def remove(self) -> None:
        if self.path is None:
            return
        for path in (self._tmp, self.path):
            try:
                os.unlink(path)
            except OSError:
                pass


class LatentPreview:
    """A denoising job's previews: the model's map applied to the middle latent frame."""

    def __init__(self, writer: PreviewWriter, pipe, layout: LatentLayout, rgb_map: LatentRgbMap, plan):
        self.writer, self.pipe, self.layout, self.map, self.plan = writer, pipe, layout, rgb_map, plan

    def due(self, step: int) -> bool:
        return self.writer.step_due(step)

    def show(self, latents, step: int) -> None:
        started = time.monotonic()
        grid = self.layout.grid(self.pipe, latents, self.plan)
        frame = grid[:, grid.shape[1] // 2].detach().float().cpu()
        rgb = self.map.rgb(frame)
        self.writer.seconds += time.monotonic() - started
        self.writer.write(rgb, step, size=(rgb.shape[1] * self.map.scale, rgb.shape[0] * self.map.scale))


def latent_preview(writer: PreviewWriter, pipe, resident, plan, log=None) -> LatentPreview | None:
    """The job's latent previews, fitting the model's map on first use (kept on `resident`,
    so it goes with the model); None when previews are off or the family is unknown."""
    from contract.families import family_of

    if not writer.enabled:
        return None
    family = family_of(type(pipe).__name__)
    layout = LAYOUTS.get(family.name) if family else None
    if layout is None:
        if log:
            log("preview.unsupported", pipeline=type(pipe).__name__)
        return None
    if resident.latent_rgb is None:
        try:
            resident.latent_rgb = fit_map(pipe, layout)
        except Exception as exc:  # noqa: BLE001 - a preview must never fail the job
            if log:
                log("preview.fit_failed", level="warning", model=resident.name, reason=f"{type(exc).__name__}: {exc}")
            return None
        writer.fit_seconds = resident.latent_rgb.fit_seconds
        if log:
            log("preview.fitted", model=resident.name, seconds=writer.fit_seconds)
    return LatentPreview(writer, pipe, layout, resident.latent_rgb, plan)
