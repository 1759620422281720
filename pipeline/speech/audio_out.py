"""Writing a mono speech track as wav, mp3 or m4a with PyAV.

- wav: PCM 16-bit at the track's own sample rate;
- mp3: libmp3lame (when the bundled FFmpeg has it), 64 kbit/s mono at up to 24 kHz, 96 above;
- m4a: AAC-LC in an MPEG-4 audio file (the index first, so it plays while downloading).

A rate the encoder cannot take is resampled to 48 kHz. Runs inside a worker: imports
PyAV and numpy at module level.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from contract.errors import ErrorCode, JobError

FORMATS = ("wav", "mp3", "m4a")
# format -> (FFmpeg muxer, encoder, container options)
_SETTINGS = {
    "wav": ("wav", "pcm_s16le", {}),
    "mp3": ("mp3", "libmp3lame", {}),
    "m4a": ("ipod", "aac", {"movflags": "+faststart"}),
}
MEDIA_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg", "m4a": "audio/mp4"}
FALLBACK_RATE = 48_000
CHUNK_SECONDS = 1.0


def encoder_available(fmt: str) -> bool:
    return _SETTINGS[fmt][1] in av.codecs_available


def write_audio(samples: np.ndarray, sample_rate: int, path: Path, fmt: str) -> Path:
    """Writes float mono samples in [-1, 1] to `path` as `fmt`; returns the path.

    The muxer is named explicitly, so `path` may be a temporary name (".speech.mp3.tmp").
    Raises JobError(internal) when this PyAV build lacks the encoder.
    """
    if fmt not in _SETTINGS:
        raise ValueError(f"unknown audio format {fmt!r} (known: {', '.join(FORMATS)})")
    muxer, encoder, options = _SETTINGS[fmt]
    if encoder not in av.codecs_available:
        raise JobError(ErrorCode.INTERNAL, f"this PyAV build has no {encoder} encoder, needed for {fmt}; try format wav")
    codec = av.Codec(encoder, "w")
    rates = codec.audio_rates
    out_rate = sample_rate if not rates or sample_rate in rates else FALLBACK_RATE
    formats = [f.name for f in codec.audio_formats or ()]
    sample_format = next((f for f in ("s16", "fltp", "s16p", "flt") if f in formats), formats[0] if formats else "s16")

    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    path = Path(path)
    try:
        with av.open(str(path), mode="w", format=muxer, options=options) as container:
            stream = container.add_stream(encoder, rate=out_rate)
            stream.layout = "mono"
            stream.format = sample_format
            if fmt != "wav":
                stream.bit_rate = 64_000 if out_rate <= 24_000 else 96_000
            resampler = av.AudioResampler(format=sample_format, layout="mono", rate=out_rate)
            step = max(1, round(CHUNK_SECONDS * sample_rate))
            for start in range(0, len(samples), step):
                chunk = np.clip(samples[start : start + step], -1.0, 1.0)[np.newaxis, :]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="flt", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = start
                frame.time_base = Fraction(1, sample_rate)
                for out in resampler.resample(frame):
                    container.mux(stream.encode(out))
            for out in resampler.resample(None):
                container.mux(stream.encode(out))
            container.mux(stream.encode(None))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def audio_info(path: Path) -> dict | None:
    """`result.audio` for a written file: duration, sample_rate, channels, codec."""
    from pipeline.media import probe

    return probe(Path(path))["audio"]
