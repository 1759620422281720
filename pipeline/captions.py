"""Captions drawn onto video frames: each cue rendered once, alpha-composited with numpy.

`CaptionStyle.for_frame(width, height)` sizes the font to the frame (DejaVu Sans Bold,
white with a dark outline) and tells how many characters fit a line, so the caption files
and the burned-in captions wrap alike. `render_caption(text, style)` draws one cue's lines
(at most `MAX_LINES`, word-wrapped to the frame inside 5 % safe margins) into a small RGBA
patch, bottom-centred; `composite(frame, caption)` lays it onto a frame (a new array, the
frame itself is not touched) by integer blending of that patch's rectangle only.

Runs in a worker process: imports numpy and Pillow at module level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.text_wrap import wrap_text

FONT_PATHS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)
SAFE_MARGIN = 0.05  # of the width (left, right) and height (bottom)
MAX_LINES = 2
TEXT_COLOR = (255, 255, 255, 255)
OUTLINE_COLOR = (0, 0, 0, 255)
# Text typical of captions, to measure the average character width.
_SAMPLE = "The quick brown fox jumps over the lazy dog, then it ran home."


def load_caption_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in FONT_PATHS:
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default(size)  # fonts-dejavu-core missing: still readable


@dataclass(frozen=True)
class CaptionStyle:
    width: int
    height: int
    font_size: int
    stroke: int
    max_text_width: float
    chars_per_line: int

    @classmethod
    def for_frame(cls, width: int, height: int) -> CaptionStyle:
        font_size = max(10, round(min(height, width * 9 / 16) / 16))
        stroke = max(1, round(font_size / 12))
        max_text_width = width * (1 - 2 * SAFE_MARGIN) - 2 * stroke
        font = load_caption_font(font_size)
        average = font.getlength(_SAMPLE) / len(_SAMPLE) if hasattr(font, "getlength") else font_size * 0.55
        chars = max(8, int(max_text_width / max(average, 1.0) * 0.92))  # a little slack for wide words
        return cls(width, height, font_size, stroke, max_text_width, chars)

    @property
    def max_cue_chars(self) -> int:
        """Longest cue text that fits MAX_LINES lines (for split_cues)."""
        return self.chars_per_line * MAX_LINES

    @property
    def font(self) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        return load_caption_font(self.font_size)


@dataclass(frozen=True)
class Caption:
    """A rendered cue: where it goes and its premultiplied colour and inverse alpha."""

    x: int
    y: int
    color: np.ndarray  # uint16 (h, w, 3): rgb × alpha
    inverse_alpha: np.ndarray  # uint16 (h, w, 1): 255 − alpha

    @property
    def box(self) -> tuple[int, int, int, int]:
        h, w = self.inverse_alpha.shape[:2]
        return self.x, self.y, self.x + w, self.y + h


def render_caption(text: str, style: CaptionStyle) -> Caption | None:
    """One cue's text as a patch bottom-centred in the safe area; None for empty text.

    The text is wrapped to the safe width; when it needs more than MAX_LINES lines (a cue
    longer than split_cues allowed), the font shrinks until it fits.
    """
    text = " ".join(text.split())
    if not text:
        return None
    scratch = ImageDraw.Draw(Image.new("L", (1, 1)))
    size, stroke = style.font_size, style.stroke
    while True:
        font = load_caption_font(size)
        lines = wrap_text(scratch, text, font, style.max_text_width)
        if len(lines) <= MAX_LINES or size <= 8:
            break
        size = max(8, int(size * 0.9))
        stroke = max(1, round(size / 12))
    body = "\n".join(lines)
    spacing = max(2, size // 5)
    left, top, right, bottom = scratch.multiline_textbbox(
        (0, 0), body, font=font, spacing=spacing, align="center", stroke_width=stroke
    )
    patch_w = min(style.width, int(right - left) + 2)
    patch_h = min(style.height, int(bottom - top) + 2)
    patch = Image.new("RGBA", (patch_w, patch_h), (0, 0, 0, 0))
    ImageDraw.Draw(patch).multiline_text(
        (patch_w / 2, 1 - top), body, font=font, fill=TEXT_COLOR, anchor="ma", align="center",
        spacing=spacing, stroke_width=stroke, stroke_fill=OUTLINE_COLOR,
    )
    rgba = np.asarray(patch, dtype=np.uint16)
    alpha = rgba[:, :, 3:4]
    x = (style.width - patch_w) // 2
    bottom_edge = style.height - round(style.height * SAFE_MARGIN)
    y = max(0, bottom_edge - patch_h)
    return Caption(x, y, rgba[:, :, :3] * alpha, 255 - alpha)


def composite(frame: np.ndarray, caption: Caption | None) -> np.ndarray:
    """A copy of the RGB frame with the caption laid over it (the frame is unchanged)."""
    if caption is None:
        return frame
    out = frame.copy()
    x0, y0, x1, y1 = caption.box
    region = out[y0:y1, x0:x1]
    blended = (region.astype(np.uint16) * caption.inverse_alpha + caption.color + 127) // 255
    region[...] = blended.astype(np.uint8)
    return out
