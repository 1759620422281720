"""The square face crop a lip-sync backend sees, and pasting its output back.

`face_region` places the square in the frame, `crop_face` cuts and resizes it, and
`paste_face` blends the backend's redrawn crop back through `lower_face_mask`: 1 over the
mouth and jaw, feathered to exactly 0 well inside the crop, so the frame outside the mask
(and always outside the region) stays the source frame, byte for byte, with no seam.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# The mask's outer edge (where it reaches 0), as an ellipse in crop fractions: centre and
# semi-axes. It spans x 0.10-0.90 and y 0.40-0.92, mouth (about 0.78 down a detector box)
# and jaw, and stays clear of the crop's border by 0.08 of its side or more.
MASK_CENTRE = (0.5, 0.66)
MASK_SEMI_AXES = (0.40, 0.26)
DEFAULT_FEATHER = 0.08

Region = tuple[int, int, int, int]  # x0, y0, x1, y1: a square, inside the frame


def face_region(
    box: Sequence[float], frame_w: int, frame_h: int, scale: float = 1.0, shift_down: float = 0.0
) -> Region:
    """A square around `box` (x, y, w, h, ...): side max(w, h) × scale, centre moved down by
    shift_down × side. Moved to lie inside the frame, and shrunk only when it cannot fit."""
    x, y, w, h = (float(v) for v in box[:4])
    side = max(w, h) * scale
    cx, cy = x + w / 2, y + h / 2 + shift_down * side
    side = int(max(1, min(round(side), frame_w, frame_h)))
    x0 = min(max(round(cx - side / 2), 0), frame_w - side)
    y0 = min(max(round(cy - side / 2), 0), frame_h - side)
    return int(x0), int(y0), int(x0 + side), int(y0 + side)


def crop_face(frame: np.ndarray, region: Region, size: int) -> np.ndarray:
    """The region cut out of the frame and resized to a uint8 (size, size, 3) crop."""
    x0, y0, x1, y1 = _check_region(region, frame)
    crop = frame[y0:y1, x0:x1]
    return _resize(crop, size, size)


def lower_face_mask(size: int, feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """float32 (size, size): 1 over the lower face, falling smoothly over `feather` × size
    pixels to exactly 0 at the ellipse MASK_CENTRE/MASK_SEMI_AXES, and 0 beyond it."""
    if not 0 < feather <= 0.2:
        raise ValueError(f"feather must be in (0, 0.2], got {feather}")
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size
    (cx, cy), (ax, ay) = MASK_CENTRE, MASK_SEMI_AXES
    inside = ((centres[None, :] - cx) / ax) ** 2 + ((centres[:, None] - cy) / ay) ** 2 < 1
    # Distance (pixels) from each inside pixel to the nearest outside one.
    depth = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 5)
    t = np.clip(depth / max(feather * size, 1.0), 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)  # smoothstep: no kink at either end


def paste_face(frame: np.ndarray, face: np.ndarray, region: Region, mask: np.ndarray) -> np.ndarray:
    """A copy of the frame with `face` blended in over `region` through `mask` (both resized
    to the region). Pixels where the resized mask is 0, and all outside the region, are the
    frame's own."""
    x0, y0, x1, y1 = _check_region(region, frame)
    width, height = x1 - x0, y1 - y0
    face = _resize(face, width, height).astype(np.float32)
    # Linear, not cubic, for the mask: cubic rings, and could lift its zeros near the edge.
    weight = np.clip(_resize(mask.astype(np.float32), width, height, cv2.INTER_LINEAR), 0.0, 1.0)[..., None]
    out = frame.copy()
    source = out[y0:y1, x0:x1].astype(np.float32)
    # source + 0 × difference is exactly source, so zero weight changes nothing.
    blended = source + (face - source) * weight
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def _check_region(region: Region, frame: np.ndarray) -> Region:
    x0, y0, x1, y1 = (int(v) for v in region)
    height, width = frame.shape[:2]
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"region {region} is not inside the {width}x{height} frame")
    return x0, y0, x1, y1


def _resize(image: np.ndarray, width: int, height: int, enlarge: int = cv2.INTER_CUBIC) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image.copy()
    shrinking = width * height < image.shape[0] * image.shape[1]
    # INTER_AREA averages when shrinking (no aliasing); cubic keeps an enlarged face sharp.
    interpolation = cv2.INTER_AREA if shrinking else enlarge
    return cv2.resize(image, (width, height), interpolation=interpolation)
