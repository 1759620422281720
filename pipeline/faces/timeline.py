"""Which face frame each output frame shows, by time.

Output frame i is at i / out_fps seconds; the source frame on screen then is
floor(seconds × source_fps), so a 30 fps face video plays at its own speed in a 25 fps
output. Past the source's end the index is folded back by `mode`:

- `pingpong`: forward, then backward, without showing the end frames twice
  (0, 1, …, n-1, n-2, …, 1, 0, 1, …): no jump where the clip restarts.
- `loop`: 0, 1, …, n-1, 0, 1, …: for clips made to loop.
- `trim`: the source from its start, cut where the speech ends. This is the same mapping
  as `pingpong` (which only differs once the source runs out): trim is meant for speech
  shorter than the clip, and a longer speech then plays on ping-pong instead of freezing.

A photo (source_fps None, or a single frame) is frame 0 throughout.
"""

from __future__ import annotations

import math

MODES = ("pingpong", "loop", "trim")
# Absorbs float error in i × source_fps / out_fps (25 × 3 / 25 must be 3, not 2.9999…).
_EPSILON = 1e-6


def source_indices(
    source_frames: int, source_fps: float | None, out_frames: int, out_fps: float, mode: str = "pingpong"
) -> list[int]:
    """The source frame index for each of out_frames output frames."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if source_frames < 1 or out_frames < 0 or out_fps <= 0:
        raise ValueError(f"need source_frames >= 1, out_frames >= 0, out_fps > 0; got "
                         f"{source_frames}, {out_frames}, {out_fps}")
    if source_fps is None or source_frames == 1:
        return [0] * out_frames
    if source_fps <= 0:
        raise ValueError(f"source_fps must be positive, got {source_fps}")
    played = (math.floor(i * source_fps / out_fps + _EPSILON) for i in range(out_frames))
    if mode == "loop":
        return [k % source_frames for k in played]
    period = 2 * source_frames - 2
    return [k % period if k % period < source_frames else period - k % period for k in played]
