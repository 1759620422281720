"""R/corrupt/: spool entries the daemon cannot make sense of (a claimed job whose .job.json
cannot be read, a queue name that does not parse), moved aside with a reason, never deleted
(Postfix's `corrupt` queue). An operator reads `<name>.reason.json`, fixes or removes them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import structlog

from contract.status import utc_now
from daemon.spool.fsops import atomic_write_json, move
from daemon.spool.layout import Spool

log = structlog.get_logger()

REASON_SUFFIX = ".reason.json"


def quarantine(spool: Spool, path: Path, reason: str) -> Path | None:
    """Moves `path` into R/corrupt/ (a free name) beside a reason file; None if it was gone."""
    spool.corrupt.mkdir(exist_ok=True)
    name = path.name.lstrip(".") or "entry"
    target, n = spool.corrupt / name, 1
    while os.path.lexists(target) or os.path.lexists(target.with_name(target.name + REASON_SUFFIX)):
        n += 1
        target = spool.corrupt / f"{name}.{n}"
    atomic_write_json(target.with_name(target.name + REASON_SUFFIX), {
        "reason": reason, "was": str(path.relative_to(spool.root)), "host": spool.host, "at": utc_now(),
        "unix": time.time()})
    if not move(path, target):
        os.unlink(target.with_name(target.name + REASON_SUFFIX))
        return None
    log.warning("spool.quarantined", entry=str(path.relative_to(spool.root)), to=str(target.relative_to(spool.root)),
                reason=reason)
    return target


def corrupt_count(spool: Spool) -> int | None:
    """How many entries R/corrupt/ holds; None while the spool cannot be read (a dead mount)."""
    try:
        return sum(1 for n in os.listdir(spool.corrupt) if not n.endswith(REASON_SUFFIX) and not n.startswith("."))
    except FileNotFoundError:
        return 0
    except OSError:
        return None
