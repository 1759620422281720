"""FFmpeg's command-line tools (ffprobe, ffmpeg) run on an uploaded file, safely.

FFmpeg left to guess a file's format follows playlists (Debian's even when the file is named
.mp4) to other files and URLs. So the file is opened once as contract.input_formats allows
(no link followed, a regular file of an accepted format), and the tool reads that open file
(/dev/fd/N, passed to it) with the demuxer forced and no protocol but `file`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from pathlib import Path

from contract.input_formats import open_media


async def run_on_file(tool: str, path: Path, media: Collection[str], before: list[str], after: list[str],
                      timeout: float) -> tuple[int, bytes, bytes] | None:
    """`tool *before <the file as its input> *after`: its exit code, stdout and stderr; None
    when the tool is not installed. Raises contract.input_formats.MediaRefused for a file
    `media` does not take, TimeoutError (the tool killed) after `timeout` seconds."""
    file, found = open_media(path, media)
    with file:
        fd = file.fileno()
        source = ["-protocol_whitelist", "file", "-f", str(found.demuxer), "-i", f"file:/dev/fd/{fd}"]
        try:
            proc = await asyncio.create_subprocess_exec(
                tool, *before, *source, *after, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, pass_fds=(fd,))
        except FileNotFoundError:
            return None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    return proc.returncode, out, err
