"""Word wrap to a width in pixels, for text drawn with Pillow: slideshow title cards and
burned-in captions wrap alike. Imports nothing heavy: the drawing and font come in."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import ImageDraw, ImageFont


def wrap_text(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, max_width: float
) -> list[str]:
    """Greedy word wrap to max_width pixels; keeps the text's own line breaks and splits
    words too long for a line."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            for piece in _split_long_word(draw, word, font, max_width):
                candidate = f"{line} {piece}" if line else piece
                if line and draw.textlength(candidate, font=font) > max_width:
                    lines.append(line)
                    line = piece
                else:
                    line = candidate
        lines.append(line)
    return lines


def _split_long_word(
    draw: ImageDraw.ImageDraw, word: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, max_width: float
) -> list[str]:
    pieces: list[str] = []
    piece = ""
    for char in word:
        if piece and draw.textlength(piece + char, font=font) > max_width:
            pieces.append(piece)
            piece = ""
        piece += char
    return pieces + [piece] if piece else pieces
