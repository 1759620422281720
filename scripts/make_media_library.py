#!/usr/bin/env python
"""A tiny media library for the narrated-video `library` background, generated offline.

    python scripts/make_media_library.py [DEST]        # default: media-library/

Each clip is a few seconds of one solid colour with a faint FFmpeg test pattern over it,
named for what a story might mention, with a `NAME.tags` sidecar of more words, the colour's
name among them. Point the workers at it with VIDSPOOL_MEDIA_LIBRARY=DEST (the daemon's
environment). The clips are placeholders, not footage: the colour shows which clip each
sentence picked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CLIPS = {
    # name: (colour, an FFmpeg/CSS colour name, also its first tag; more tags)
    "fox": ("orange", "animal forest wild"),
    "river": ("blue", "water stream fish ocean"),
    "forest": ("green", "trees woods leaves"),
    "city": ("gray", "street buildings town village"),
    "night": ("navy", "dark stars moon evening"),
}
SIZE, RATE, SECONDS = "640x360", 25, 4
# The test pattern's share of each pixel: enough to see motion, little enough to keep the colour.
PATTERN_OPACITY = 0.2
# Which recipe made each clip: a clip from another recipe (an older version of this script) is remade.
STAMP = ".make_media_library.json"


def recipe(colour: str) -> list[str]:
    """The ffmpeg arguments (before the output) for a clip of `colour`."""
    return ["-f", "lavfi", "-i", f"color=c={colour}:size={SIZE}:rate={RATE}:duration={SECONDS}",
            "-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate={RATE}:duration={SECONDS}",
            # rgba before the mixer: the pattern needs an alpha channel to be see-through
            "-filter_complex", f"[1]format=gray,format=rgba,colorchannelmixer=aa={PATTERN_OPACITY}[p];"
                               "[0][p]overlay,format=yuv420p",
            "-c:v", "libx264", "-preset", "veryfast", "-f", "mp4"]


def build(dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    stamp_path = dest / STAMP
    try:
        stamps = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamps = {}
    made = []
    for name, (colour, tags) in CLIPS.items():
        clip, args = dest / f"{name}.mp4", recipe(colour)
        if not clip.exists() or stamps.get(name) != args:
            tmp = dest / f".{name}.mp4.part"
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(tmp)], check=True)
            tmp.rename(clip)
            stamps[name] = args
        (dest / f"{name}.tags").write_text(f"{colour} {tags}\n")
        made.append(clip)
    stamp_path.write_text(json.dumps(stamps, indent=1) + "\n")
    return made


if __name__ == "__main__":
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "media-library"
    for path in build(dest):
        print(path)
