"""structlog set-up: JSON lines under systemd, a readable console on a TTY, and a copy of
every event about a job in outbox/<id>/log.jsonl."""

from __future__ import annotations

import json
import logging
import os
import sys

import structlog

from daemon.spool import LOG, is_valid_job_id


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


def configure_logging(level: str = "info", fmt: str = "auto", outbox=None) -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if outbox is not None:
        processors.append(JobLogTee(outbox))
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
