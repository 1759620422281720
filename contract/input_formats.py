"""Which file formats a media input may be, told by its first bytes (never by its name).

FFmpeg left to guess a file's format follows playlists and lists (HLS, ffconcat) to the
files and URLs they name: a job's input could make the host read its own files or fetch
URLs. So an input is opened once, not through a symbolic link, must be a regular file, and
its first bytes pick one format from a short list per input type; the workers then decode
it with that FFmpeg demuxer (or Pillow format) forced, from the same open file. Only the
standard library: the daemon checks inputs with it at intake (a few bytes each), the
workers again when they open them.
"""

from __future__ import annotations

import codecs
import errno
import os
import stat
from collections.abc import Collection
from dataclasses import dataclass
from typing import BinaryIO

HEAD_BYTES = 4096
MEDIA = ("image", "video", "audio")  # the InputSpec media types that are checked here
NOUNS = {"video": "video", "audio": "audio file", "image": "image"}
TEXT_CONTROLS = frozenset(b"\t\n\r\f")


@dataclass(frozen=True)
class Format:
    label: str  # as messages and the README name it
    media: frozenset[str]  # the input types it may be
    demuxer: str | None = None  # FFmpeg's demuxer, forced when decoding
    pillow: str | None = None  # Pillow's format, forced when decoding


MP4 = Format("MP4/MOV/M4A", frozenset({"video", "audio"}), demuxer="mov")
MATROSKA = Format("Matroska/WebM", frozenset({"video", "audio"}), demuxer="matroska")
AVI = Format("AVI", frozenset({"video"}), demuxer="avi")
MPEG_TS = Format("MPEG-TS", frozenset({"video"}), demuxer="mpegts")
MP3 = Format("MP3", frozenset({"audio"}), demuxer="mp3")
WAV = Format("WAV", frozenset({"audio"}), demuxer="wav")
FLAC = Format("FLAC", frozenset({"audio"}), demuxer="flac")
OGG = Format("Ogg", frozenset({"audio"}), demuxer="ogg")
ADTS = Format("AAC (ADTS)", frozenset({"audio"}), demuxer="aac")
PNG = Format("PNG", frozenset({"image"}), pillow="PNG")
JPEG = Format("JPEG", frozenset({"image"}), pillow="JPEG")
WEBP = Format("WebP", frozenset({"image"}), pillow="WEBP")
BMP = Format("BMP", frozenset({"image"}), pillow="BMP")
GIF = Format("GIF", frozenset({"image"}), pillow="GIF")
FORMATS = (MP4, MATROSKA, AVI, MPEG_TS, MP3, WAV, FLAC, OGG, ADTS, PNG, JPEG, WEBP, BMP, GIF)

# ISO base media boxes a QuickTime or MP4 file starts with (most start with ftyp).
ISO_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})
RIFF_FORMATS = {b"AVI ": AVI, b"WAVE": WAV, b"WEBP": WEBP}
BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
# Text that FFmpeg would read as a list of other files or URLs, named for the message.
LISTS = ((b"#EXTM3U", "an HLS playlist"), (b"ffconcat version", "an ffconcat list"),
         (b"v=0", "an SDP session description"))


class MediaRefused(ValueError):
    """An input that is not a plain file of a format its input type takes; `reason` says
    why, worded to follow the file's name ("speech.mp4 is an HLS playlist, ...")."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def checked_media(media: Collection[str]) -> tuple[str, ...]:
    """The media types of an InputSpec that are checked here (none for "any" or "text")."""
    return () if "any" in media else tuple(m for m in MEDIA if m in media)


def accepted(media: Collection[str]) -> str:
    """The formats inputs of these media types may be, for messages: "PNG, JPEG, ..."."""
    return ", ".join(f.label for f in FORMATS if f.media & set(media))


def open_media(path: str | os.PathLike, media: Collection[str]) -> tuple[BinaryIO, Format]:
    """`path` opened for reading and its format, which `media` takes. The last component
    must not be a symbolic link and the file must be a regular one; decode it from this
    open file (rewound), not by its name. MediaRefused says why not; other OSErrors pass."""
    try:
        # Non-blocking: a FIFO swapped in would otherwise hang the open.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MediaRefused("is a symbolic link, not a media file") from None
        raise
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise MediaRefused("is not a regular file")
    os.set_blocking(fd, True)
    file = os.fdopen(fd, "rb")
    try:
        found = identify(file, media)
        file.seek(0)
        return file, found
    except BaseException:
        file.close()
        raise


def check_media(path: str | os.PathLike, media: Collection[str]) -> Format:
    """The format of the file at `path` (see open_media), which is closed again."""
    file, found = open_media(path, media)
    file.close()
    return found


def identify(file: BinaryIO, media: Collection[str]) -> Format:
    """The format of an open file, one `media` takes; MediaRefused otherwise."""
    head = file.read(HEAD_BYTES)
    found = sniff(head)
    if found is MP3 and head.startswith(b"ID3") and len(head) >= 10:
        found = _after_id3(file, head)
    if found is not None and found.media & set(media):
        return found
    what = " or ".join(NOUNS[m] for m in MEDIA if m in media) or "media file"
    takes = f"vidspool accepts {accepted(media)}"
    if found is not None:
        raise MediaRefused(f"is not a readable {what} (it is {found.label}; {takes})")
    if not head:
        raise MediaRefused(f"is not a readable {what} (it is empty)")
    listed = _list_kind(head)
    if listed is not None:
        raise MediaRefused(f"is {listed}, not a media file")
    if _is_text(head):
        raise MediaRefused(f"is not a readable {what} (it is text; {takes})")
    raise MediaRefused(f"is not a readable {what} ({takes})")


def sniff(head: bytes) -> Format | None:
    """The format the first bytes of a file show, or None."""
    if head[4:8] in ISO_BOXES:
        return MP4
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML
        return MATROSKA
    if head[:4] in (b"RIFF", b"RF64", b"BW64"):
        return RIFF_FORMATS.get(head[8:12])
    if _ts_packets(head, 0, 188) or _ts_packets(head, 4, 192):  # plain and M2TS packets
        return MPEG_TS
    if head.startswith(b"ID3"):
        return MP3  # refined by what follows the tag (_after_id3)
    magic = ((b"fLaC", FLAC), (b"OggS", OGG), (b"\x89PNG\r\n\x1a\n", PNG), (b"\xff\xd8\xff", JPEG),
             (b"GIF87a", GIF), (b"GIF89a", GIF))
    for start, found in magic:
        if head.startswith(start):
            return found
    if head.startswith(b"BM") and int.from_bytes(head[14:18], "little") in BMP_HEADER_SIZES:
        return BMP
    return _audio_frame(head[:2])


def _ts_packets(head: bytes, first: int, size: int, count: int = 3) -> bool:
    # A sync byte (0x47) at the start of `count` packets in a row.
    return len(head) > first + (count - 1) * size and all(head[first + i * size] == 0x47 for i in range(count))


def _audio_frame(two: bytes) -> Format | None:
    """An ADTS (AAC) or MPEG audio frame header's first two bytes."""
    if len(two) < 2 or two[0] != 0xFF:
        return None
    if two[1] & 0xF6 == 0xF0:  # 12 sync bits, layer 0
        return ADTS
    if two[1] & 0xE0 == 0xE0 and two[1] & 0x06:  # 11 sync bits, layer 1-3
        return MP3
    return None


def _after_id3(file: BinaryIO, head: bytes) -> Format:
    """An ID3v2 tag may lead MP3, AAC and FLAC files: the format is what follows it."""
    size = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10]))
    if head[5] & 0x10:  # a footer follows the tag
        size += 10
    file.seek(size)
    after = file.read(4)
    if after == b"fLaC":
        return FLAC
    return ADTS if _audio_frame(after[:2]) is ADTS else MP3


def _list_kind(head: bytes) -> str | None:
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return next((name for start, name in LISTS if text.startswith(start)), None)


def _is_text(head: bytes) -> bool:
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or ord(c) in TEXT_CONTROLS for c in text)
