"""The operator key: how `vidspool models download` shows it is the operator's when no [api]
tokens are configured.

At start an online daemon writes a new random key to `[registry] dir/.operator-HOST.key`,
mode 0600: only the daemon's user (and root) can read it. A download request presenting it
as `Authorization: Bearer` is the operator's; the CLI reads it from the same config. It is
kept in the registry folder, not the spool: whoever can write the registry can add models
by hand already, so the key gives them nothing new, while the spool may be group-writable
(people who only drop jobs), shared with other hosts, or an rclone mount that keeps no
file modes. A new key at each start makes an old copy worthless.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import structlog

log = structlog.get_logger()


def key_file(registry: Path, host: str) -> Path:
    return Path(registry) / f".operator-{host}.key"


def publish_key(path: Path) -> str | None:
    """A new key, written to `path` (0600, a new file renamed over the old one, no link
    followed); None when it cannot be written (downloads then need a token)."""
    key = secrets.token_urlsafe(32)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask says
            os.write(fd, f"{key}\n".encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        log.warning("operator_key.not_written", path=str(path), error=str(exc),
                    effect="vidspool models download needs an [api] token with the submit scope")
        return None
    return key


def read_key(path: Path) -> str | None:
    """The key at `path` (None when there is none); PermissionError for a user who may not
    read it. A link is not followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if isinstance(exc, PermissionError):
            raise
        return None  # ELOOP: a link, not the daemon's file
    with os.fdopen(fd, "rb") as f:
        return f.read(256).decode("ascii", "replace").strip() or None
