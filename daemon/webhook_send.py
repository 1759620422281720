"""The webhook sender (SPEC §10.1): a process of its own, fed by the daemon over a pipe.

A process, not threads in the daemon: a POST through requests, its journal line and its log
line hold the GIL about 1.5 ms, and sender threads competing with the arbiter's loop for it
cost a burst of jobs a quarter of its throughput (BENCHMARKS.md, "Webhooks").

The daemon writes each event's marker, webhooks/<host>/<webhook-id>.json, then sends it here.
Sender threads post events as they come due, one event of a job at a time; every attempt is
a line of outbox/<id>/webhooks.jsonl; a failed one waits retry_seconds × 2^(n−1) (capped at
1 h) until `max_attempts`; the marker goes once the event is delivered or given up. At start
(also after a crash of this process) every marker in the folder is taken up again.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from contract.status import utc_now
from daemon.config import WebhooksConfig
from daemon.fsops import atomic_write_json, read_json
from daemon.logs import append_line, configure_logging
from daemon.spool import Spool, is_valid_job_id
from daemon.webhook_http import Poster

log = structlog.get_logger()

JOURNAL = "webhooks.jsonl"  # in outbox/<id>/: one line per attempt
MARKER_KEYS = frozenset({"webhook_id", "job_id", "event", "url", "source", "timestamp", "body", "attempts"})
RETRY_CAP_SECONDS = 3600.0
SENDER_THREADS = 4


def retry_delay(retry_seconds: float, attempts: int) -> float:
    """The wait after the `attempts`-th failed attempt: retry_seconds, doubling, capped at 1 h."""
    return min(retry_seconds * 2 ** (attempts - 1), RETRY_CAP_SECONDS)


def marker_path(spool: Spool, webhook_id: str) -> Path:
    return spool.webhooks / f"{webhook_id}.json"


class SendQueue:
    """Keys due at a time; SENDER_THREADS threads call `send(key)` for each one that is due.
    Keys of one group (a job's events) are sent one at a time, in the order they were put
    (a key waiting for its retry does not hold the others back)."""

    def __init__(self, send: Callable[[str], None], threads: int = SENDER_THREADS):
        self._send = send
        self._n = threads
        self._heap: list[tuple[float, int, str, str]] = []  # (due, order, group, key)
        self._seq = itertools.count()
        self._busy: set[str] = set()  # groups being sent now
        self._held: dict[str, list[tuple[float, int, str, str]]] = {}  # due while their group was busy
        self._cv = threading.Condition()
        self._threads: list[threading.Thread] = []

    def put(self, key: str, group: str, delay: float = 0.0) -> None:
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), group, key))
            self._cv.notify()
            while len(self._threads) < self._n:
                t = threading.Thread(target=self._run, name=f"webhook-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()

    def _next(self) -> tuple[str, str]:
        with self._cv:
            while True:
                wait = self._heap[0][0] - time.monotonic() if self._heap else None
                if wait is not None and wait <= 0:
                    entry = heapq.heappop(self._heap)
                    if entry[2] in self._busy:
                        self._held.setdefault(entry[2], []).append(entry)
                        continue
                    self._busy.add(entry[2])
                    return entry[2], entry[3]
                self._cv.wait(wait)

    def _done(self, group: str) -> None:
        with self._cv:
            self._busy.discard(group)
            for entry in self._held.pop(group, ()):
                heapq.heappush(self._heap, entry)  # its own place in line again
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            group, key = self._next()
            try:
                self._send(key)
            except Exception:  # noqa: BLE001 - a bug here must not end deliveries
                log.exception("webhook.crashed", webhook_id=key)
            finally:
                self._done(group)


class Sender:
    """Delivers markers: attempts, journal lines, retries, the marker's removal."""

    def __init__(self, spool: Spool, config: WebhooksConfig, report: Callable[[str], None]):
        self.spool = spool
        self.config = config  # replaced when the daemon's settings change (SIGHUP)
        self._report = report  # each attempt's result, back to the daemon (metrics)
        self._pending: dict[str, dict] = {}  # webhook id → its marker
        self._lock = threading.Lock()
        self._poster = Poster()
        self._queue = SendQueue(self._deliver)

    def add(self, marker: dict) -> None:
        with self._lock:
            if marker["webhook_id"] in self._pending:  # resumed from its file already
                return
            self._pending[marker["webhook_id"]] = marker
        self._queue.put(marker["webhook_id"], marker["job_id"])

    def resume(self, started_at: str) -> None:
        """Takes up every marker in the folder, oldest event first; those older than this
        process (`started_at`) were left by an earlier one."""
        found = [m for name in os.listdir(self.spool.webhooks) if (m := self._read_marker(name)) is not None]
        for marker in sorted(found, key=lambda m: str(m["timestamp"])):
            if str(marker["timestamp"]) < started_at:
                log.info("webhook.resumed", job_id=marker["job_id"], webhook_id=marker["webhook_id"],
                         webhook_event=marker["event"], attempts=marker["attempts"])
            self.add(marker)

    def _read_marker(self, name: str) -> dict | None:
        path = self.spool.webhooks / name
        if name.startswith(".") and name.endswith(".tmp"):  # a marker write a crash cut short
            path.unlink(missing_ok=True)
            return None
        marker = read_json(path) if name.endswith(".json") else None
        if marker is None or not MARKER_KEYS <= marker.keys() or name != f"{marker['webhook_id']}.json":
            return None
        return marker if is_valid_job_id(str(marker["job_id"])) else None

    def _deliver(self, wid: str) -> None:
        with self._lock:
            marker = self._pending[wid]
        config, n = self.config, marker["attempts"] + 1
        attempt = self._poster.attempt(marker["url"], marker["source"], wid, marker["body"], config)
        if attempt.delivered:
            result = "delivered"
        elif attempt.refused:
            result = "refused"
        else:
            result = "retry" if n < config.max_attempts else "given_up"
        line = {"webhook_id": wid, "event": marker["event"], "url": marker["url"], "attempt": n,
                "status": attempt.status, "seconds": round(attempt.seconds, 4), "result": result,
                "error": attempt.error, "at": utc_now()}
        append_line(self.spool.job_outbox(marker["job_id"]) / JOURNAL, (json.dumps(line) + "\n").encode())
        self._report(result)
        fields = {"job_id": marker["job_id"], "webhook_id": wid, "webhook_event": marker["event"], "url": marker["url"],
                  "attempt": n, "status": attempt.status}
        if result == "retry":
            marker["attempts"] = n
            wait = retry_delay(config.retry_seconds, n)
            try:
                atomic_write_json(marker_path(self.spool, wid), marker, fsync=False)
            except OSError as exc:  # resumed with fewer attempts counted
                log.error("webhook.unrecorded", job_id=marker["job_id"], webhook_id=wid, error=str(exc))
            log.info("webhook.retry", error=attempt.error, retry_in_seconds=wait, **fields)
            self._queue.put(wid, marker["job_id"], wait)
            return
        if result == "delivered":
            log.info("webhook.delivered", seconds=round(attempt.seconds, 4), **fields)
        else:
            log.warning("webhook.given_up", result=result, error=attempt.error, **fields)
        try:
            os.unlink(marker_path(self.spool, wid))
        except FileNotFoundError:
            pass
        except OSError as exc:  # sent again after a restart: a deduplicating receiver drops it
            log.error("webhook.marker_kept", job_id=marker["job_id"], webhook_id=wid, error=str(exc))
        with self._lock:
            del self._pending[wid]


def forward_logs(send: Callable[[tuple], None]):
    """A structlog processor that hands each event to the daemon, which writes it: one
    process writes the log (lines of two writers could interleave), as for workers."""

    def processor(logger, method_name, event_dict):
        event = event_dict.pop("event")
        send(("log", "error" if method_name == "exception" else method_name, (event, event_dict)))
        raise structlog.DropEvent

    return processor


def main(conn, root: str, host: str, log_level: str, config: dict, started_at: str, daemon_pid: int) -> None:
    """The sender process: ("send", marker) and ("config", dict) in; ("attempt", result, None)
    and ("log", level, (event, fields)) out."""
    try:  # must not outlive a SIGKILLed daemon: the next one resumes the markers
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != daemon_pid:  # it died while this process was starting
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    spool = Spool(Path(root), host)
    lock = threading.Lock()

    def send(message: tuple) -> None:
        with lock:
            conn.send(message)

    configure_logging(log_level)  # for its bridge of library warnings into structlog
    structlog.configure(processors=[structlog.processors.format_exc_info, forward_logs(send)])
    sender = Sender(spool, WebhooksConfig.model_validate(config), lambda result: send(("attempt", result, None)))
    sender.resume(started_at)
    while True:
        try:
            what, payload = conn.recv()
        except (EOFError, OSError):
            return
        if what == "send":
            sender.add(payload)
        elif what == "config":
            sender.config = WebhooksConfig.model_validate(payload)
        else:
            return
