"""File descriptors: raise the soft limit at start, and size the HTTP connection cap so
that spool work (renames, status writes, worker pipes) always has descriptors left."""

from __future__ import annotations

import os
import resource

import structlog

log = structlog.get_logger()

# Descriptors kept for spool work whatever HTTP clients do.
SPOOL_RESERVE = 128
# An HTTP connection may hold more than its socket: an upload being written, or a file being
# sent (the descriptor it was opened by without following links, and the one read from).
PER_CONNECTION = 3
# An unlimited hard limit is taken as this (setrlimit refuses RLIM_INFINITY for NOFILE).
UNLIMITED = 1 << 20


def raise_nofile_limit() -> tuple[int, int]:
    """Raises the soft RLIMIT_NOFILE to the hard limit; returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("daemon.fd_limit_unchanged", soft=soft, hard=hard, error=str(exc))
            return soft, soft
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64  # no /proc: a fair guess for a started daemon


def connection_budget(configured: int, listeners: int = 1) -> int:
    """How many HTTP connections each of `listeners` fronts may hold: the configured cap,
    lowered so that all of them together leave SPOOL_RESERVE descriptors free."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return configured
    spare = soft - open_descriptors() - SPOOL_RESERVE
    return max(1, min(configured, spare // (PER_CONNECTION * max(1, listeners))))
