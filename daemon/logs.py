"""structlog set-up: JSON lines under systemd, a readable console on a TTY, and a copy of
every event about a job in outbox/<id>/log.jsonl."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import structlog
from aiohttp.http_exceptions import HttpProcessingError

from daemon.spool.layout import LOG, is_valid_job_id


class JobLogTee:
    """A structlog processor: appends events that carry a job_id to that job's log.jsonl."""

    def __init__(self, outbox):
        self.outbox = outbox

    def __call__(self, logger, method_name, event_dict):
        job_id = event_dict.get("job_id")
        if isinstance(job_id, str) and is_valid_job_id(job_id):
            line = json.dumps({"level": method_name, **event_dict}, default=str) + "\n"
            append_line(self.outbox / job_id / LOG, line.encode())
        return event_dict


def append_line(path, data: bytes) -> None:
    """Appends to a job's log; never lets a log line break the daemon. Some network
    filesystems (rclone) refuse O_APPEND with ESPIPE: then write at the end by hand."""
    for flags in (os.O_WRONLY | os.O_APPEND | os.O_CREAT, os.O_WRONLY | os.O_CREAT):
        try:
            fd = os.open(path, flags, 0o664)
        except OSError:
            return
        try:
            if not flags & os.O_APPEND:
                os.lseek(fd, 0, os.SEEK_END)
            os.write(fd, data)
            return
        except OSError:
            continue
        finally:
            try:
                os.close(fd)
            except OSError:
                pass


# Identical warnings and errors are written once per this many seconds, with a count.
REPEAT_INTERVAL_SECONDS = 30.0
REPEAT_LEVELS = frozenset({"warning", "error", "critical", "exception"})
VOLATILE_KEYS = frozenset({"timestamp", "exc_info", "repeated"})


class RepeatFilter:
    """A structlog processor: a warning or error identical to one written less than
    `interval` seconds ago is dropped; the next one written says how many were dropped
    (`repeated`). Identical = the same fields, and the same exception type and message."""

    def __init__(self, interval: float = REPEAT_INTERVAL_SECONDS, clock=time.monotonic):
        self.interval = interval
        self.clock = clock
        self.last: dict[tuple, list] = {}  # key → [time written, dropped since]

    def __call__(self, logger, method_name, event_dict):
        if event_dict.get("level", method_name) not in REPEAT_LEVELS:
            return event_dict
        key = self._key(event_dict)
        now = self.clock()
        seen = self.last.get(key)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            raise structlog.DropEvent
        if seen is not None and seen[1]:
            event_dict["repeated"] = seen[1]
        self.last[key] = [now, 0]
        if len(self.last) > 10_000:  # distinct events are not a flood; forget the old ones
            cutoff = now - self.interval
            self.last = {k: v for k, v in self.last.items() if v[0] >= cutoff}
        return event_dict

    @staticmethod
    def _key(event_dict) -> tuple:
        fields = tuple(sorted((k, repr(v)) for k, v in event_dict.items() if k not in VOLATILE_KEYS))
        exc = event_dict.get("exc_info")
        if exc is True:
            exc = sys.exc_info()
        if isinstance(exc, BaseException):
            return fields + (type(exc).__name__, str(exc))
        if isinstance(exc, tuple) and len(exc) == 3 and exc[1] is not None:
            return fields + (type(exc[1]).__name__, str(exc[1]))
        return fields


class StdlibBridge(logging.Handler):
    """Library warnings (asyncio's accept errors, aiohttp's handler errors) as structlog
    events, so they are JSON lines too and floods of them are cut by RepeatFilter."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc = record.exc_info[1] if record.exc_info else None
            if isinstance(exc, HttpProcessingError):  # a client's malformed request, answered 400
                # by aiohttp: not the daemon's fault, no traceback; the type only, so floods fold.
                structlog.get_logger().warning("api.malformed_request", error=type(exc).__name__, status=exc.code)
                return
            level = record.levelname.lower()
            method = getattr(structlog.get_logger(), "error" if level == "critical" else level, None)
            if method is None:
                return
            fields = {"logger": record.name, "message": record.getMessage()}
            if record.exc_info and record.exc_info[1] is not None:
                fields["exc_info"] = record.exc_info
            method(f"{record.name}.log", **fields)
        except Exception:  # noqa: BLE001 - a log line must never break the daemon
            self.handleError(record)


def configure_logging(level: str = "info", fmt: str = "auto", outbox=None) -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if outbox is not None:
        processors.append(JobLogTee(outbox))  # each job's own log keeps every line about it
    processors.append(RepeatFilter())
    if use_json:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers[:] = [StdlibBridge()]
    root.setLevel(logging.WARNING)
