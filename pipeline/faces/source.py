"""The talking-head `face` input, read as frames: a photo (one frame) or a short video.

Photo or video is told by content, not by the file's name: its first bytes name one of
the image or video formats contract.input_formats accepts. An image is read by Pillow (EXIF
orientation applied; an animated GIF or WebP is its first frame), a video by FFmpeg (PyAV)
with its demuxer forced, and a video's display rotation (phones) is applied. A decode that
gives a single frame is a photo too (`fps` None), so a one-frame "video" behaves like one.

`max_side` bounds the frames' long side as they are decoded: ten seconds of 4K video are
7 GB as RGB arrays, the same at 1080p under 2 GB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
from PIL import Image, ImageOps

from contract.errors import ErrorCode, JobError
from contract.input_formats import Format
from pipeline.media import demux_file, error_reason, open_input

FACE_MEDIA = ("image", "video")


@dataclass
class FaceSource:
    frames: list[np.ndarray]  # RGB uint8 (H, W, 3), all the same size
    fps: float | None  # None for a photo
    is_video: bool
    name: str  # the file's name, for messages


def load_face_source(path: Path, max_frames: int, *, max_side: int | None = None) -> FaceSource:
    """Decode the face input: a photo as one frame, a video as its first max_frames frames,
    shrunk (aspect kept) to at most max_side pixels on the long side when it is given.

    Raises JobError(unsupported_input) naming the file when it is neither a readable image
    nor a readable video, or holds no frames.
    """
    path = Path(path)
    if max_frames < 1 or (max_side is not None and max_side < 2):
        raise ValueError(f"need max_frames >= 1 and max_side >= 2, got {max_frames}, {max_side}")
    file, found = open_input(path, FACE_MEDIA, label="input face: ")
    with file:
        try:
            if found.pillow is not None:
                return FaceSource(frames=[_read_photo(file, found, max_side)], fps=None, is_video=False, name=path.name)
            frames, fps = _read_video(file, found, max_frames, max_side)
        except _Unreadable as e:
            raise _unreadable(path, e.reason) from e
        # Pillow's and FFmpeg's (ValueError: PyAV's own checks, e.g. an unknown pixel format)
        except (av.FFmpegError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise _unreadable(path, error_reason(e, path)) from e
    if len(frames) == 1:
        return FaceSource(frames=frames, fps=None, is_video=False, name=path.name)
    return FaceSource(frames=frames, fps=fps, is_video=True, name=path.name)


class _Unreadable(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _unreadable(path: Path, reason: str) -> JobError:
    return JobError(
        ErrorCode.UNSUPPORTED_INPUT,
        f"input face: {path.name} is not a readable image or video ({reason})",
    )


def _read_photo(file: BinaryIO, found: Format, max_side: int | None) -> np.ndarray:
    """The image's frame; Pillow's errors pass (a truncated or corrupt image)."""
    with Image.open(file, formats=[found.pillow]) as image:
        image.seek(0)  # animated GIF/WebP/APNG: the first frame
        image.load()
        upright = ImageOps.exif_transpose(image)
        size = _bounded_size(upright.width, upright.height, max_side)
        if size != upright.size:
            upright = upright.resize(size, Image.Resampling.LANCZOS)
        return _as_rgb(upright)


def _as_rgb(image: Image.Image) -> np.ndarray:
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if has_alpha:
        # Flatten on black: fully transparent pixels may hold any colour, often garbage.
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _bounded_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _read_video(file: BinaryIO, found: Format, max_frames: int, max_side: int | None) -> tuple[list[np.ndarray], float]:
    """Its first max_frames frames and its rate; FFmpeg's and PyAV's errors pass."""
    frames: list[np.ndarray] = []
    size: tuple[int, int] | None = None  # every frame is decoded to the first one's size
    with demux_file(file, found) as container:
        if not container.streams.video:
            raise _Unreadable("it has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        for frame in container.decode(stream):
            size = size or _bounded_size(frame.width, frame.height, max_side)
            frames.append(_upright(frame, size))
            if len(frames) >= max_frames:
                break
    if not frames:
        raise _Unreadable("it holds no frames")
    return frames, fps


def _upright(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    pixels = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
    # `rotation` is the display matrix's counter-clockwise angle; phones store portrait
    # video sideways with one. np.rot90 turns counter-clockwise for positive k.
    quarter_turns = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(pixels, quarter_turns)) if quarter_turns else pixels
