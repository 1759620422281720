"""Media I/O shared by the job kinds: MP4 writing, probing, image and audio loading.

Everything here runs inside a worker process, so it may import PyAV, Pillow and numpy at
module level; kind modules import this module inside their `run` function only.

A file is read only as contract.input_formats allows (`open_input`): a regular file, not
through a link, of a format its media type takes, decoded with that demuxer or Pillow
format forced (`demux`, `load_image`), never guessed: a guessing FFmpeg follows playlists.

Conventions: video frames are numpy uint8 arrays shaped (height, width, 3) in RGB; audio
is float32 shaped (channels, samples) in [-1, 1], at AUDIO_RATE Hz, stereo.
"""

from __future__ import annotations

import errno
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, NoReturn

import av
import numpy as np
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc
from PIL import Image, ImageOps

from contract.errors import MOUNT_ERRNOS, ErrorCode, JobError
from contract.input_formats import Format, MediaRefused, open_media

AUDIO_RATE = 48_000
AUDIO_CHANNELS = 2
# Tried in order; "h264" is FFmpeg's default H.264 encoder, whatever it is in this build.
H264_ENCODERS = ("libx264", "libopenh264", "h264")


# -- encoder choice ------------------------------------------------------------


def choose_h264_encoder() -> str:
    """The first H.264 encoder this PyAV build has, from H264_ENCODERS."""
    for name in H264_ENCODERS:
        try:
            av.Codec(name, "w")
        except (ValueError, av.FFmpegError):
            continue
        return name
    raise JobError(ErrorCode.INTERNAL, "this PyAV build has no H.264 encoder")


def _encoder_options(encoder: str) -> dict[str, str]:
    if encoder == "libx264":
        # Constant quality; "veryfast" keeps CPU-only workers quick (narrated-video at 720p30
        # renders faster than 4× real time on 2 cores) at a small size cost.
        return {"crf": "20", "preset": "veryfast"}
    return {}


def _fallback_bit_rate(width: int, height: int, fps: Fraction) -> int:
    # Encoders without a quality mode need a bit rate: ~0.1 bit per pixel, at least 1 Mbit/s.
    return max(1_000_000, int(width * height * float(fps) * 0.1))


def error_reason(error: Exception, path: Path) -> str:
    """The library's message without the file's full path, which is host detail users need not see."""
    if isinstance(error, av.FFmpegError) and error.strerror:
        return error.strerror
    return str(error).replace(str(path), path.name) or type(error).__name__


# -- opening inputs ----------------------------------------------------------------


def open_input(path: Path, media: Collection[str], label: str = "") -> tuple[BinaryIO, Format]:
    """The file opened as contract.input_formats allows, and its format; JobError
    (unsupported_input) naming it ("{label}{name} is an HLS playlist, ...") otherwise."""
    try:
        return open_media(path, media)
    except MediaRefused as exc:
        raise JobError(ErrorCode.UNSUPPORTED_INPUT, f"{label}{path.name} {exc.reason}") from None
    except OSError as exc:
        if exc.errno in MOUNT_ERRNOS:
            raise  # the spool's fault, not the input's
        raise JobError(ErrorCode.UNSUPPORTED_INPUT, f"{label}{path.name} cannot be read ({exc.strerror})") from None


def _no_second_file(url: str, flags: int, options: dict) -> NoReturn:
    raise av.PermissionError(errno.EPERM, "refused: an input is read as one file, never one it names")


def demux_file(file: BinaryIO, found: Format) -> av.container.InputContainer:
    """An open input file (open_input) as a PyAV container, its demuxer forced."""
    # Belt and braces: the forced demuxers name no other file, and _no_second_file opens none.
    return av.open(file, format=found.demuxer, options={"protocol_whitelist": "file"}, io_open=_no_second_file)


@contextmanager
def demux(path: Path, media: Collection[str]) -> Iterator[av.container.InputContainer]:
    """The input at `path` as a PyAV container (see open_input, demux_file). Raises
    JobError(unsupported_input) when it is refused, av.FFmpegError when FFmpeg cannot read it."""
    file, found = open_input(path, media)
    with file, demux_file(file, found) as container:
        yield container


# -- writing -------------------------------------------------------------------


class Mp4Writer:
    """Streams RGB frames (and an optional audio track) into an H.264/AAC MP4.

    The file is yuv420p, BT.709, with the index (moov) before the data (`+faststart`) so
    browsers can start playing it at once. Frames are encoded as they are written, so a
    long video never sits in memory. Audio is trimmed or padded with silence to the video's
    length and faded out over its last `fade_out_seconds`. If the `with` block raises, the
    partial file is removed.

        with Mp4Writer(path, 1280, 720, fps=25, audio=samples) as writer:
            for frame in frames:
                writer.write(frame)
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: float | Fraction,
        audio: np.ndarray | Path | None = None,
        audio_rate: int = AUDIO_RATE,
        fade_out_seconds: float = 0.5,
    ):
        if width % 2 or height % 2 or width < 2 or height < 2:
            raise ValueError(f"H.264 yuv420p needs even width and height, got {width}x{height}")
        self.path = Path(path)
        self.width = width
        self.height = height
        self.fps = Fraction(fps).limit_denominator(1001)
        self.frames_written = 0
        self._audio = _prepare_audio(audio, audio_rate)
        self._audio_sent = 0
        self._fade_samples = max(0, round(fade_out_seconds * AUDIO_RATE))
        self._closed = False

        # format= is explicit because callers write to temporary names such as ".video.mp4.tmp".
        self._container = av.open(
            str(self.path), mode="w", format="mp4", options={"movflags": "+faststart"}
        )
        try:
            self._video = self._add_video_stream()
            self._audio_stream = self._add_audio_stream() if self._audio is not None else None
        except BaseException:
            self._abort()
            raise

    def _add_video_stream(self) -> av.VideoStream:
        encoder = choose_h264_encoder()
        stream = self._container.add_stream(encoder, rate=self.fps)
        stream.width = self.width
        stream.height = self.height
        stream.pix_fmt = "yuv420p"
        stream.time_base = 1 / self.fps
        stream.options = _encoder_options(encoder)
        if encoder != "libx264":
            stream.bit_rate = _fallback_bit_rate(self.width, self.height, self.fps)
        # Tagged as HD video usually is, so players do not guess BT.601 and shift colours.
        context = stream.codec_context
        context.color_primaries = ColorPrimaries.BT709
        context.color_trc = ColorTrc.BT709
        context.colorspace = Colorspace.ITU709
        context.color_range = ColorRange.MPEG
        return stream

    def _add_audio_stream(self) -> av.AudioStream:
        stream = self._container.add_stream("aac", rate=AUDIO_RATE)
        stream.layout = "stereo"
        stream.bit_rate = 192_000
        return stream

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            self.close()
        except BaseException:
            self._abort()
            raise

    @property
    def duration(self) -> float:
        """Seconds of video written so far."""
        return float(self.frames_written / self.fps)

    def write(self, frame: np.ndarray) -> None:
        """Encode one RGB frame shaped (height, width, 3), dtype uint8."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"frame must be uint8 ({self.height}, {self.width}, 3), "
                f"got {frame.dtype} {frame.shape}"
            )
        rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        # Convert here rather than in the encoder so the matrix matches the BT.709 tags.
        yuv = rgb.reformat(
            format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
        )
        yuv.pts = self.frames_written
        self._container.mux(self._video.encode(yuv))
        self.frames_written += 1
        # Keep audio level with the video so the file is interleaved, but hold back the
        # last fade_out_seconds: the fade can only be applied once the end is known.
        self._send_audio(self._samples_for(self.frames_written) - self._fade_samples)

    def close(self) -> None:
        """Finish the audio (pad, fade out), flush the encoders and write the index."""
        if self._closed:
            return
        if self._audio is not None:
            total = self._samples_for(self.frames_written)
            self._audio = _fit_length(self._audio, total)
            _fade_out(self._audio, self._audio_sent, self._fade_samples)
            self._send_audio(total)
            self._container.mux(self._audio_stream.encode(None))
        self._container.mux(self._video.encode(None))
        self._container.close()
        self._closed = True

    def _samples_for(self, frames: int) -> int:
        return round(frames / self.fps * AUDIO_RATE)

    def _send_audio(self, until: int) -> None:
        """Encode audio samples [sent, until), padding with silence past the track's end."""
        if self._audio is None or until <= self._audio_sent:
            return
        start = self._audio_sent
        chunk = self._audio[:, start:until]
        if chunk.shape[1] < until - start:
            silence = np.zeros((AUDIO_CHANNELS, until - start - chunk.shape[1]), np.float32)
            chunk = np.concatenate([chunk, silence], axis=1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="stereo")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE)
        self._container.mux(self._audio_stream.encode(frame))
        self._audio_sent = until

    def _abort(self) -> None:
        self._closed = True
        try:
            self._container.close()
        except Exception:  # the file is being thrown away; its trailer does not matter
            pass
        self.path.unlink(missing_ok=True)


def _prepare_audio(audio: np.ndarray | Path | None, audio_rate: int) -> np.ndarray | None:
    if audio is None:
        return None
    if isinstance(audio, (str, Path)):
        return load_audio(Path(audio))
    return resample_audio(audio, audio_rate)


def _fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    if samples.shape[1] >= length:
        return samples[:, :length].copy()
    padding = np.zeros((samples.shape[0], length - samples.shape[1]), np.float32)
    return np.concatenate([samples, padding], axis=1)


def _fade_out(samples: np.ndarray, not_before: int, fade_samples: int) -> None:
    """Fade the last fade_samples to silence, in place, never touching samples already sent."""
    length = samples.shape[1]
    start = max(not_before, length - fade_samples)
    if start >= length:
        return
    ramp = np.linspace(1.0, 0.0, length - start, dtype=np.float32)
    samples[:, start:] *= ramp


# -- audio -----------------------------------------------------------------------


def load_audio(path: Path, max_seconds: float | None = None) -> np.ndarray:
    """Decode an audio file (contract.input_formats: audio) to float32 (2, n) at AUDIO_RATE.

    Raises JobError(unsupported_input) when the file is not readable audio.
    """
    limit = None if max_seconds is None else round(max_seconds * AUDIO_RATE)
    chunks: list[np.ndarray] = []
    have = 0
    try:
        with demux(path, ("audio",)) as container:
            if not container.streams.audio:
                raise JobError(ErrorCode.UNSUPPORTED_INPUT, f"{path.name}: has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(
                format="fltp", layout=_mono_or_stereo(stream.codec_context.channels), rate=AUDIO_RATE
            )
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
                    have += out.samples
                if limit is not None and have >= limit:
                    break
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
    except av.FFmpegError as e:
        message = f"{path.name}: not readable audio ({error_reason(e, path)})"
        raise JobError(ErrorCode.UNSUPPORTED_INPUT, message) from e
    if not chunks:
        raise JobError(ErrorCode.UNSUPPORTED_INPUT, f"{path.name}: contains no audio samples")
    samples = _as_stereo(np.concatenate(chunks, axis=1).astype(np.float32, copy=False))
    return samples if limit is None else samples[:, :limit]


def _mono_or_stereo(channels: int) -> str:
    # Mono stays mono through the resampler: FFmpeg's mono-to-stereo upmix lowers it by 3 dB.
    return "mono" if channels == 1 else "stereo"


def _as_stereo(samples: np.ndarray) -> np.ndarray:
    return np.repeat(samples, 2, axis=0) if samples.shape[0] == 1 else samples


def resample_audio(samples: np.ndarray, sample_rate: int, to_rate: int = AUDIO_RATE) -> np.ndarray:
    """Float audio, mono (n,) or (channels, n) with 1 or 2 channels, to (2, n) at `to_rate`."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[np.newaxis, :]
    channels = samples.shape[0]
    if samples.ndim != 2 or channels not in (1, 2):
        raise ValueError(f"audio must be shaped (n,) or (1|2, n), got {samples.shape}")
    if sample_rate == to_rate or samples.shape[1] == 0:
        return _as_stereo(samples.copy())
    layout = _mono_or_stereo(channels)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=layout)
    frame.sample_rate = sample_rate
    frame.pts = 0
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=to_rate)
    outs = resampler.resample(frame) + resampler.resample(None)
    resampled = np.concatenate([out.to_ndarray() for out in outs], axis=1)
    return _as_stereo(resampled.astype(np.float32, copy=False))


# -- probing -----------------------------------------------------------------------


def probe(path: Path) -> dict:
    """Describe a media file: {"video": {...} | None, "audio": {...} | None}.

    video: duration (s), fps, width, height, codec; audio: duration (s), sample_rate,
    channels, codec. Raises JobError(unsupported_input) when FFmpeg cannot open the file.
    """
    try:
        with demux(path, ("video", "audio")) as container:
            container_seconds = container.duration / av.time_base if container.duration else None
            video = next(iter(container.streams.video), None)
            audio = next(iter(container.streams.audio), None)
            return {
                "video": None
                if video is None
                else {
                    "duration": _stream_seconds(video, container_seconds),
                    "fps": round(float(video.average_rate or video.guessed_rate or 0), 3),
                    "width": video.codec_context.width,
                    "height": video.codec_context.height,
                    "codec": video.codec_context.name,
                },
                "audio": None
                if audio is None
                else {
                    "duration": _stream_seconds(audio, container_seconds),
                    "sample_rate": audio.codec_context.sample_rate,
                    "channels": audio.codec_context.channels,
                    "codec": audio.codec_context.name,
                },
            }
    except av.FFmpegError as e:
        message = f"{path.name}: not a readable media file ({error_reason(e, path)})"
        raise JobError(ErrorCode.UNSUPPORTED_INPUT, message) from e


def _stream_seconds(stream: av.stream.Stream, container_seconds: float | None) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return round(float(stream.duration * stream.time_base), 3)
    return None if container_seconds is None else round(container_seconds, 3)


# -- images --------------------------------------------------------------------------


def load_image(path: Path, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Open and decode an image, upright (EXIF orientation applied), as RGB or RGBA.

    draft_size lets JPEG decode at a reduced scale that is still at least that size, which
    is much faster for camera photos. Raises JobError(unsupported_input) when the file is
    not a readable image.
    """
    file, found = open_input(path, ("image",))
    try:
        with file, Image.open(file, formats=[found.pillow]) as image:
            if draft_size is not None:
                image.draft("RGB", draft_size)
            image.load()
            image = ImageOps.exif_transpose(image)
            has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            return image.convert("RGBA" if has_alpha else "RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        message = f"{path.name}: not a readable image ({error_reason(e, path)})"
        raise JobError(ErrorCode.UNSUPPORTED_INPUT, message) from e


def fit_image(
    image: Image.Image, width: int, height: int, background: str | tuple[int, int, int] = "#000000"
) -> np.ndarray:
    """Scale an image to fit inside width x height, keeping its aspect ratio, centred on
    `background` (letterbox or pillarbox); returns an RGB frame."""
    scale = min(width / image.width, height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    scaled = image.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (width, height), background)
    offset = ((width - size[0]) // 2, (height - size[1]) // 2)
    canvas.paste(scaled, offset, mask=scaled if scaled.mode == "RGBA" else None)
    return np.asarray(canvas, dtype=np.uint8)


def write_thumb(frame: np.ndarray, path: Path, max_side: int = 640) -> None:
    """Save an RGB frame as a JPEG thumbnail no larger than max_side on either side."""
    image = Image.fromarray(frame)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    # format= is explicit because callers write to temporary names such as ".thumb.jpg.tmp".
    image.save(path, format="JPEG", quality=88)


def cover_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale an image to cover width x height, keeping its aspect ratio, and centre-crop it."""
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    scaled = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return scaled.crop((left, top, left + width, top + height))


# -- video in ---------------------------------------------------------------------------


def read_video_frames(path: Path, max_frames: int | None = None) -> tuple[list[Image.Image], float]:
    """Decode the first max_frames frames of a video as RGB images, and its frame rate.

    Raises JobError(unsupported_input) when the file is not a readable video.
    """
    frames: list[Image.Image] = []
    try:
        with demux(path, ("video",)) as container:
            if not container.streams.video:
                raise JobError(ErrorCode.UNSUPPORTED_INPUT, f"{path.name}: has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
            for frame in container.decode(stream):
                frames.append(frame.to_image())
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except av.FFmpegError as e:
        raise JobError(ErrorCode.UNSUPPORTED_INPUT, f"{path.name}: not a readable video ({error_reason(e, path)})") from e
    if not frames:
        raise JobError(ErrorCode.UNSUPPORTED_INPUT, f"{path.name}: contains no video frames")
    return frames, fps


# -- previews ---------------------------------------------------------------------------


def write_preview_gif(frames: list[np.ndarray], fps: float, path: Path, max_side: int = 256, max_fps: float = 10) -> None:
    """A small looping GIF of the frames: at most max_side pixels and max_fps frames a second."""
    step = max(1, round(fps / max_fps))
    images = []
    for frame in frames[::step]:
        image = Image.fromarray(frame)
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        images.append(image.convert("P", palette=Image.Palette.ADAPTIVE, colors=128))
    duration_ms = max(20, round(1000 * step / fps))
    # format= is explicit because callers write to temporary names such as ".preview.gif.tmp".
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0, optimize=True)
