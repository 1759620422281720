"""Whether the spool can be used now, and why not (a dead mount, a full or read-only disk).

Every piece of spool work runs inside `health.guard()`: an OSError that means a broken
spool (fscheck.spool_fault) puts the daemon in the fault state instead of escaping; any
other error escapes as before. While in the fault the arbiter neither accepts nor claims,
probes the spool every PROBE_SECONDS, and resumes by itself when it answers again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog

from daemon.spool.fscheck import spool_fault

log = structlog.get_logger()

# How often a broken spool is probed.
PROBE_SECONDS = 0.5


class SpoolHealth:
    def __init__(self, root):
        self.root = root
        self.fault: str | None = None  # why the spool cannot be used; None when fine
        self.since = 0.0
        self.next_probe = 0.0

    @property
    def ok(self) -> bool:
        return self.fault is None

    def probe_due(self, now: float) -> bool:
        return self.fault is not None and now >= self.next_probe

    def enter(self, reason: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.fault is None:
            self.since = now
        if reason != self.fault:
            log.error("spool.unavailable", reason=reason, spool=str(self.root),
                      action="not accepting or claiming; running jobs keep their results until it is back")
        self.fault = reason
        self.next_probe = now + PROBE_SECONDS

    def still(self, reason: str, now: float) -> None:
        """A probe failed: still in the fault (its reason may have changed)."""
        self.fault = reason
        self.next_probe = now + PROBE_SECONDS

    def clear(self, now: float) -> None:
        log.info("spool.recovered", after_seconds=round(now - self.since, 1), reason=self.fault)
        self.fault = None

    @contextmanager
    def guard(self, on_fault: Callable[[], None] | None = None) -> Iterator[None]:
        """Runs spool work; a broken spool enters the fault (then `on_fault`) instead of raising."""
        try:
            yield
        except OSError as exc:
            reason = spool_fault(exc)
            if reason is None:
                raise
            if on_fault is not None:
                on_fault()
            self.enter(reason)
