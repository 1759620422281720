"""The webhook sender (SPEC §10.1): a process of its own, fed by the daemon over a pipe.

A process, not threads in the daemon: a POST, its journal line and its log line hold the
GIL, and sender threads competing with the arbiter's loop for it cost a burst of jobs a
quarter of its throughput (BENCHMARKS.md, "Webhooks").

The daemon writes each event's marker, webhooks/<host>/<webhook-id>.json, then sends it here
(or, when the pipe is backed up, asks this process to read its folder again: the markers are
the truth).
Events are posted as they come due, each attempt a task on this process's event loop, one
event of a job at a time; at most `[webhooks] max_per_host` attempts go to one receiver at
once (and SENDING_AT_ONCE in all), each cut at `timeout_seconds`, so a slow receiver holds
back only its own events. Every attempt is a line of outbox/<id>/webhooks.jsonl; a failed one
waits retry_seconds × 2^(n−1) (capped at 1 h) until `max_attempts`; the marker goes once the
event is delivered or given up. At start (also after a crash of this process) every marker
in the folder is taken up again; one that leaves the folder (taken over by another host that
judged this one dead) is not sent from here again.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import heapq
import hmac
import itertools
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import structlog

from contract.status import utc_now
from daemon.config import WebhooksConfig
from daemon.spool.fsops import atomic_write_json, read_json
from daemon.logs import append_line, configure_logging
from daemon.spool.layout import Spool, is_valid_job_id
from daemon.webhooks.http_client import Poster
from daemon.webhooks.urls import host_port

log = structlog.get_logger()

JOURNAL = "webhooks.jsonl"  # in outbox/<id>/: one line per attempt
MARKER_KEYS = frozenset({"webhook_id", "job_id", "event", "url", "source", "timestamp", "body", "attempts"})
RETRY_CAP_SECONDS = 3600.0
SENDING_AT_ONCE = 64  # attempts in flight, all receivers together (each also capped per receiver)


def retry_delay(retry_seconds: float, attempts: int) -> float:
    """The wait after the `attempts`-th failed attempt: retry_seconds, doubling, capped at 1 h."""
    return min(retry_seconds * 2 ** (attempts - 1), RETRY_CAP_SECONDS)


def marker_path(spool: Spool, webhook_id: str) -> Path:
    return spool.webhooks / f"{webhook_id}.json"


def marker_mac(secret: str, marker: dict) -> str:
    """The marker's seal: an HMAC, keyed by the signing secret, of what it says to send where.
    Whoever can write the spool can write a marker; one they wrote has no valid seal, so it is
    never sent (it would be a signed request of theirs, to any URL, as the daemon)."""
    sealed = json.dumps({k: marker.get(k) for k in sorted(MARKER_KEYS - {"attempts"})}, sort_keys=True)
    return hmac.new(secret.encode(), sealed.encode("utf-8", "backslashreplace"), hashlib.sha256).hexdigest()


def is_marker(marker: dict | None, name: str) -> bool:
    """Whether `marker`, read from the file `name`, has a marker's shape (sealed or not)."""
    return (isinstance(marker, dict) and MARKER_KEYS <= marker.keys() and name == f"{marker['webhook_id']}.json"
            and is_valid_job_id(str(marker["job_id"])))


def is_sealed(marker: dict, secret: str) -> bool:
    return hmac.compare_digest(str(marker.get("mac")), marker_mac(secret, marker))


class SendQueue:
    """Keys due at a time, each sent by `send(key)` in a task of its own once due. Keys of one
    group (a job's events) are sent one at a time, in the order they were put (a key waiting
    for its retry does not hold the others back). `put` is for the loop's thread."""

    def __init__(self, send: Callable[[str], Awaitable[None]]):
        self._send = send
        self._heap: list[tuple[float, int, str, str]] = []  # (due, order, group, key)
        self._seq = itertools.count()
        self._busy: set[str] = set()  # groups being sent now
        self._held: dict[str, list[tuple[float, int, str, str]]] = {}  # due while their group was busy
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()

    def put(self, key: str, group: str, delay: float = 0.0) -> None:
        heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), group, key))
        self._wake.set()

    async def run(self) -> None:
        """Starts each key as it comes due, for ever."""
        while True:
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                entry = heapq.heappop(self._heap)
                if entry[2] in self._busy:
                    self._held.setdefault(entry[2], []).append(entry)
                    continue
                self._busy.add(entry[2])
                task = asyncio.create_task(self._run(entry[2], entry[3]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            self._wake.clear()
            wait = self._heap[0][0] - now if self._heap else None
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    async def _run(self, group: str, key: str) -> None:
        try:
            await self._send(key)
        except Exception:  # noqa: BLE001 - a bug here must not end deliveries
            log.exception("webhook.crashed", webhook_id=key)
        finally:
            self._busy.discard(group)
            for entry in self._held.pop(group, ()):
                heapq.heappush(self._heap, entry)  # its own place in line again
            self._wake.set()


class Receivers:
    """Slots for attempts: at most `per_host` at once to one receiver (host and port), and
    `total` in all. A slot for a busy receiver is waited for without holding one of the
    total, so other receivers' attempts go on."""

    def __init__(self, per_host: Callable[[], int], total: int = SENDING_AT_ONCE):
        self._per_host = per_host  # read when a receiver gets its first attempt (config may change)
        self._total = asyncio.Semaphore(total)
        self._hosts: dict[tuple, asyncio.Semaphore] = {}
        self._users: Counter = Counter()

    @asynccontextmanager
    async def slot(self, url: str) -> AsyncIterator[None]:
        host = host_port(url)
        if host not in self._hosts:
            self._hosts[host] = asyncio.Semaphore(self._per_host())
        self._users[host] += 1
        try:
            async with self._hosts[host], self._total:
                yield
        finally:
            self._users[host] -= 1
            if not self._users[host]:  # forgotten when idle: a flood of hosts leaves nothing behind
                del self._users[host], self._hosts[host]


class Sender:
    """Delivers markers: attempts, journal lines, retries, the marker's removal. Lives on the
    sender process's event loop."""

    def __init__(self, spool: Spool, config: WebhooksConfig, report: Callable[[str], None]):
        self.spool = spool
        self.config = config  # replaced when the daemon's settings change (SIGHUP)
        self._report = report  # each attempt's result, back to the daemon (metrics)
        self._pending: dict[str, dict] = {}  # webhook id → its marker
        self._poster = Poster()
        self._receivers = Receivers(lambda: self.config.max_per_host)
        self._queue = SendQueue(self._deliver)

    def add(self, marker: dict) -> None:
        if marker["webhook_id"] in self._pending:  # resumed from its file already
            return
        self._pending[marker["webhook_id"]] = marker
        self._queue.put(marker["webhook_id"], marker["job_id"])

    async def run(self, started_at: str, stopped: asyncio.Event) -> None:
        """Takes up the markers a previous process left, then sends until `stopped`."""
        self.resume(started_at)
        sending = asyncio.create_task(self._queue.run())
        try:
            await stopped.wait()
        finally:
            sending.cancel()
            await self._poster.close()

    def resume(self, started_at: str, first: bool = True) -> None:
        """Takes up every marker in the folder not pending already, oldest event first: at
        start (`first`), and when the daemon asks again (a wake-up it dropped, markers it took
        over from a dead host). Those older than this process (`started_at`) were left by an
        earlier one, or by the dead host."""
        found = [m for name in os.listdir(self.spool.webhooks) if (m := self._read_marker(name, first)) is not None]
        for marker in sorted(found, key=lambda m: str(m["timestamp"])):
            if marker["webhook_id"] in self._pending:
                continue
            if str(marker["timestamp"]) < started_at:
                log.info("webhook.resumed", job_id=marker["job_id"], webhook_id=marker["webhook_id"],
                         webhook_event=marker["event"], attempts=marker["attempts"])
            self.add(marker)

    def _read_marker(self, name: str, first: bool) -> dict | None:
        path = self.spool.webhooks / name
        if name.startswith(".") and name.endswith(".tmp"):
            if first:  # a marker write a crash cut short (later, maybe one being written now)
                path.unlink(missing_ok=True)
            return None
        marker = read_json(path) if name.endswith(".json") else None
        if not is_marker(marker, name):
            return None
        if not is_sealed(marker, self.config.secret):
            log.warning("webhook.marker_refused", marker=name, job_id=str(marker["job_id"])[:64],
                        reason="not sealed with [webhooks] secret (not this daemon's, or the secret changed)")
            path.unlink(missing_ok=True)
            return None
        return marker

    def _taken_over(self, marker: dict) -> bool:
        """Whether its marker has left our folder: another host judged this one dead (it was
        only hung) and took it over, so that host sends it, not we. (Checked before each
        attempt and before a retry rewrites the marker, which would bring it back.)"""
        try:
            os.stat(marker_path(self.spool, marker["webhook_id"]))
        except FileNotFoundError:
            return not marker.get("unrecorded")  # never written (a broken spool): sent from memory
        except OSError:
            return False
        return False

    def _drop(self, marker: dict, why: str) -> None:
        log.warning("webhook.taken_over", job_id=marker["job_id"], webhook_id=marker["webhook_id"],
                    webhook_event=marker["event"], reason=why)
        del self._pending[marker["webhook_id"]]

    async def _deliver(self, wid: str) -> None:
        marker = self._pending[wid]
        async with self._receivers.slot(marker["url"]):
            if self._taken_over(marker):
                self._drop(marker, "its marker was taken by another host before this attempt")
                return
            config, n = self.config, marker["attempts"] + 1
            attempt = await self._poster.attempt(marker["url"], marker["source"], wid, marker["body"], config)
        if attempt.delivered:
            result = "delivered"
        elif attempt.refused:
            result = "refused"
        else:
            result = "retry" if n < config.max_attempts else "given_up"
        line = {"webhook_id": wid, "event": marker["event"], "url": marker["url"], "attempt": n,
                "status": attempt.status, "seconds": round(attempt.seconds, 4), "result": result,
                "error": attempt.error, "at": utc_now()}
        await asyncio.to_thread(append_line, self.spool.job_outbox(marker["job_id"]) / JOURNAL,
                                (json.dumps(line) + "\n").encode())
        self._report(result)
        fields = {"job_id": marker["job_id"], "webhook_id": wid, "webhook_event": marker["event"], "url": marker["url"],
                  "attempt": n, "status": attempt.status}
        if result == "retry":
            if self._taken_over(marker):
                self._drop(marker, "its marker was taken by another host during this attempt")
                return
            marker["attempts"] = n
            wait = retry_delay(config.retry_seconds, n)
            try:
                await asyncio.to_thread(atomic_write_json, marker_path(self.spool, wid), marker, False)
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
    """The sender process: ("send", marker), ("rescan", None) and ("config", dict) in;
    ("attempt", result, None) and ("log", level, (event, fields)) out."""
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
    asyncio.run(serve(conn, spool, WebhooksConfig.model_validate(config), send, started_at))


async def serve(conn, spool: Spool, config: WebhooksConfig, send: Callable[[tuple], None], started_at: str) -> None:
    """The sender on this process's event loop; the pipe is read by a thread of its own."""
    loop, stopped = asyncio.get_running_loop(), asyncio.Event()
    sender = Sender(spool, config, lambda result: send(("attempt", result, None)))

    def set_config(payload: dict) -> None:
        sender.config = WebhooksConfig.model_validate(payload)

    def read_pipe() -> None:
        while True:
            try:
                what, payload = conn.recv()
            except (EOFError, OSError):
                what, payload = "stop", None
            if what == "send":
                loop.call_soon_threadsafe(sender.add, payload)
            elif what == "rescan":
                loop.call_soon_threadsafe(sender.resume, started_at, False)
            elif what == "config":
                loop.call_soon_threadsafe(set_config, payload)
            else:
                loop.call_soon_threadsafe(stopped.set)
                return

    threading.Thread(target=read_pipe, name="webhook-pipe", daemon=True).start()
    await sender.run(started_at, stopped)
