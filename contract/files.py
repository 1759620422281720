"""Result files as both sides describe them: content hash and media type."""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def media_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"
