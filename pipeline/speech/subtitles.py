"""SubRip (.srt) and WebVTT (.vtt) captions from timed segments.

A segment is anything with `text`, `start` and `end` (seconds), or a plain
`(text, start, end)` tuple. The writers put cues in time order and make them
non-overlapping (a cue that starts before the previous one ends starts when it ends), drop
cues with no text, and round times to milliseconds with the end never before the start.
`width` wraps each cue's text to lines of at most that many characters (words longer
than a line are kept whole unless they are longer than `width`); `split_cues` cuts long
cues into several shorter ones, sharing the time by length, for on-screen captions.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple


class Cue(NamedTuple):
    text: str
    start: float
    end: float


def as_cues(segments: Iterable) -> list[Cue]:
    """Ordered, non-overlapping cues in whole milliseconds, from segments of any shape."""
    raw = []
    for segment in segments:
        if isinstance(segment, tuple) and not hasattr(segment, "start"):
            text, start, end = segment[:3]
        else:
            text, start, end = segment.text, segment.start, segment.end
        text = " ".join(str(text).split())
        if text:
            raw.append((float(start), float(end), text))
    raw.sort(key=lambda item: item[0])
    cues: list[Cue] = []
    previous_end = 0
    for start, end, text in raw:
        start_ms = max(round(start * 1000), previous_end, 0)
        end_ms = max(round(end * 1000), start_ms)
        cues.append(Cue(text, start_ms / 1000, end_ms / 1000))
        previous_end = end_ms
    return cues


def split_cues(segments: Iterable, max_chars: int) -> list[Cue]:
    """Cues of at most max_chars characters: a longer cue is cut at spaces into roughly
    equal pieces whose times are shared in proportion to their length."""
    out: list[Cue] = []
    for cue in as_cues(segments):
        if len(cue.text) <= max_chars:
            out.append(cue)
            continue
        pieces = _balanced_pieces(cue.text, max_chars)
        total = sum(len(p) for p in pieces)
        start = cue.start
        duration = cue.end - cue.start
        for index, piece in enumerate(pieces):
            end = cue.end if index == len(pieces) - 1 else start + duration * len(piece) / total
            out.append(Cue(piece, start, end))
            start = end
    return as_cues(out)


def _balanced_pieces(text: str, max_chars: int) -> list[str]:
    count = -(-len(text) // max_chars)
    while True:
        target = -(-len(text) // count)
        pieces = textwrap.wrap(text, width=max(target, 1), break_long_words=True, break_on_hyphens=False)
        if all(len(p) <= max_chars for p in pieces) and len(pieces) <= count + 1:
            return pieces
        count += 1
        if count > len(text):
            return textwrap.wrap(text, width=max_chars, break_long_words=True)


def srt_time(seconds: float) -> str:
    """`HH:MM:SS,mmm` (hours may exceed 99)."""
    return _clock(seconds, ",")


def vtt_time(seconds: float) -> str:
    """`HH:MM:SS.mmm`."""
    return _clock(seconds, ".")


def _clock(seconds: float, separator: str) -> str:
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def _lines(text: str, width: int | None) -> list[str]:
    if not width:
        return [text]
    return textwrap.wrap(text, width=width, break_long_words=True, break_on_hyphens=False) or [text]


def format_srt(segments: Iterable, width: int | None = None) -> str:
    blocks = []
    for number, cue in enumerate(as_cues(segments), start=1):
        text = "\n".join(_lines(cue.text.replace("-->", "->"), width))
        blocks.append(f"{number}\n{srt_time(cue.start)} --> {srt_time(cue.end)}\n{text}\n")
    return "\n".join(blocks)


def format_vtt(segments: Iterable, width: int | None = None) -> str:
    blocks = ["WEBVTT\n"]
    for cue in as_cues(segments):
        escaped = cue.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        text = "\n".join(_lines(escaped, width))
        blocks.append(f"{vtt_time(cue.start)} --> {vtt_time(cue.end)}\n{text}\n")
    return "\n".join(blocks)


def write_srt(segments: Iterable, path: Path, width: int | None = None) -> Path:
    Path(path).write_text(format_srt(segments, width), encoding="utf-8")
    return Path(path)


def write_vtt(segments: Iterable, path: Path, width: int | None = None) -> Path:
    Path(path).write_text(format_vtt(segments, width), encoding="utf-8")
    return Path(path)


def parse_srt(text: str) -> list[Cue]:
    """Reads SubRip text back (for tests and for kinds that take captions)."""
    cues = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        lines = block.strip().split("\n")
        if len(lines) < 2 or "-->" not in lines[1]:
            continue
        start, end = (part.strip() for part in lines[1].split("-->"))
        cues.append(Cue(" ".join(lines[2:]), _parse_clock(start), _parse_clock(end)))
    return cues


def _parse_clock(value: str) -> float:
    hms, _, ms = value.replace(".", ",").partition(",")
    hours, minutes, seconds = (int(p) for p in hms.split(":"))
    return hours * 3600 + minutes * 60 + seconds + int(ms or 0) / 1000
