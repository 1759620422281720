"""Pausing the queue (SPEC §10.4): a file says so, so every host sharing the spool obeys.

    R/PAUSE                  every host stops claiming
    R/hosts/<host>.pause     only <host> does

Either file may be empty or hold JSON: {"now": true, "free_memory": true, "by": "…",
"reason": "…", "since": "…"}. While paused, drops are still accepted and queued; `now` also
sends running jobs back to the queue at their next step (the attempt is not counted);
`free_memory` makes idle workers unload their models. Removing the file resumes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from contract.status import utc_now
from daemon.spool.fsops import atomic_write_json
from daemon.spool.layout import Spool

PAUSE_FILE = "PAUSE"
HOST_PAUSE_SUFFIX = ".pause"
# What is read of a pause file at most (it is a few fields).
PAUSE_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Pause:
    scope: str  # "all" (R/PAUSE) or "host" (hosts/<host>.pause)
    host: str | None
    now: bool = False
    free_memory: bool = False
    by: str | None = None
    reason: str | None = None
    since: str | None = None

    def describe(self) -> dict:
        return asdict(self)

    def words(self) -> str:
        where = "all hosts" if self.scope == "all" else f"host {self.host}"
        why = f": {self.reason}" if self.reason else ""
        return f"paused ({where}{why})"


def pause_path(spool: Spool, host: str | None) -> Path:
    """R/PAUSE, or hosts/<host>.pause for one host."""
    return spool.root / PAUSE_FILE if host is None else spool.hosts / f"{host}{HOST_PAUSE_SUFFIX}"


def read_pause(spool: Spool, host: str) -> Pause | None:
    """The pause that holds for `host`: the spool-wide one first, then its own; None if neither."""
    for scope, path in (("all", pause_path(spool, None)), ("host", pause_path(spool, host))):
        found = _read(path)
        if found is not None:
            return _pause_of(found, scope, None if scope == "all" else host)
    return None


def _read(path: Path) -> dict | None:
    """The file's fields ({} for an empty or unreadable body: the file alone pauses); None if absent."""
    try:
        with open(path, "rb") as f:
            raw = f.read(PAUSE_FILE_BYTES)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return {"reason": f"{path.name} is a folder (still a pause)"}
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {"reason": f"{path.name} is not JSON (still a pause): {raw[:80].decode('utf-8', 'replace')!r}"}
    return doc if isinstance(doc, dict) else {}


def _pause_of(doc: dict, scope: str, host: str | None) -> Pause:
    def text(key: str) -> str | None:
        value = doc.get(key)
        return str(value)[:500] if value is not None else None

    return Pause(scope, host, now=doc.get("now") is True, free_memory=doc.get("free_memory") is True,
                 by=text("by"), reason=text("reason"), since=text("since"))


def pause(spool: Spool, host: str | None = None, *, now: bool = False, free_memory: bool = False,
          by: str | None = None, reason: str | None = None) -> Pause:
    """Writes the pause file (all hosts, or `host`); a pause already there is replaced."""
    doc = {"now": now, "free_memory": free_memory, "by": by, "reason": reason, "since": utc_now()}
    atomic_write_json(pause_path(spool, host), doc)
    return _pause_of(doc, "all" if host is None else "host", host)


def resume(spool: Spool, host: str | None = None) -> list[str]:
    """Removes the pause file of `host`, or (None) the spool-wide one and every host's;
    returns the names removed."""
    paths = [pause_path(spool, host)] if host is not None else [pause_path(spool, None)] + host_pause_files(spool)
    removed = []
    for path in paths:
        try:
            os.unlink(path)
            removed.append(str(path.relative_to(spool.root)))
        except FileNotFoundError:
            pass
    return removed


def host_pause_files(spool: Spool) -> list[Path]:
    try:
        return sorted(spool.hosts / n for n in os.listdir(spool.hosts) if n.endswith(HOST_PAUSE_SUFFIX))
    except FileNotFoundError:
        return []


class PauseWatch:
    """What this daemon last read of the pause files; read again at most every
    CHECK_SECONDS (two stats: cheap on any filesystem), or at once when asked."""

    CHECK_SECONDS = 0.25

    def __init__(self, spool: Spool, host: str):
        self.spool = spool
        self.host = host
        self.current: Pause | None = None
        self._next_check = 0.0

    def refresh(self, now: float, force: bool = False) -> tuple[Pause | None, Pause | None] | None:
        """(before, after) when the pause changed since the last look; else None."""
        if not force and now < self._next_check:
            return None
        self._next_check = now + self.CHECK_SECONDS
        before, after = self.current, read_pause(self.spool, self.host)
        # `since` is when it was written; a rewrite with the same fields is no change.
        if _same(before, after):
            return None
        self.current = after
        return before, after


def _same(a: Pause | None, b: Pause | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.scope, a.now, a.free_memory, a.reason) == (b.scope, b.now, b.free_memory, b.reason)
