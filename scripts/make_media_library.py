#!/usr/bin/env python
"""A tiny media library for the narrated-video `library` background, generated offline.

    python scripts/make_media_library.py [DEST]        # default: media-library/

Each clip is a few seconds of FFmpeg test pattern in one colour family, named for what a
story might mention, with a `NAME.tags` sidecar of more words. Point the workers at it with
VIDSPOOL_MEDIA_LIBRARY=DEST (the daemon's environment). The clips are placeholders, not
footage: the point is to show which clip each sentence picked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CLIPS = {
    # name: (lavfi colour, tags)
    "fox": ("orange", "animal forest wild"),
    "river": ("steelblue", "water stream fish ocean"),
    "forest": ("darkgreen", "trees woods leaves"),
    "city": ("gray", "street buildings town village"),
    "night": ("midnightblue", "dark stars moon evening"),
}


def build(dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    made = []
    for name, (colour, tags) in CLIPS.items():
        clip = dest / f"{name}.mp4"
        if not clip.exists():
            tmp = dest / f".{name}.mp4.part"
            subprocess.run(
                ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c={colour}:size=640x360:rate=25:duration=4",
                 "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=4",
                 "-filter_complex", "[1]format=gray,colorchannelmixer=aa=0.25[p];[0][p]overlay,format=yuv420p",
                 "-c:v", "libx264", "-preset", "veryfast", "-f", "mp4", str(tmp)], check=True)
            tmp.rename(clip)
        (dest / f"{name}.tags").write_text(tags + "\n")
        made.append(clip)
    return made


if __name__ == "__main__":
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "media-library"
    for path in build(dest):
        print(path)
