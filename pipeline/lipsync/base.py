"""What a lip-sync backend offers the talking-head kind.

The kind crops a square face region from every frame, resizes it to `face_size`, and asks
the backend to redraw the lower face to match that frame's slice of the speech.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

AUDIO_RATE = 16_000  # both backends hear 16 kHz mono


class LipSync(Protocol):
    backend: str  # "wav2lip" | "musetalk"
    face_size: int  # side of the square RGB crop it takes and returns
    components: dict  # name -> torch.nn.Module: counted against the worker's memory budget

    def to(self, device: str) -> None: ...

    def audio_features(self, audio: np.ndarray, fps: float, frames: int) -> Sequence:
        """One item per video frame (`len == frames`) from 16 kHz mono float32 audio."""

    def sync(self, faces: np.ndarray, features: Sequence) -> np.ndarray:
        """faces: uint8 (B, S, S, 3) RGB crops; features: B items of audio_features.
        Returns uint8 (B, S, S, 3): the same crops with the mouth redrawn."""


def load(backend: str, folder, device: str, dtype=None) -> LipSync:
    """The backend's model from `folder` (a checked layout), on `device`."""
    if backend == "wav2lip":
        from pipeline.lipsync.wav2lip import load_wav2lip

        return load_wav2lip(folder, device, dtype)
    if backend == "musetalk":
        from pipeline.lipsync.musetalk import load_musetalk

        return load_musetalk(folder, device, dtype)
    raise ValueError(f"unknown lip-sync backend {backend!r}")
