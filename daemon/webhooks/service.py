"""Webhooks (SPEC §10.1): which status writes are events, and their crash-safe record.

The arbiter calls `on_status` with every status document this daemon writes, right after
the write. A job whose validated `webhook` lists the event gets it: `queued` (accepted, or
requeued), `running` (the first running write of an attempt), `progress` (later running
writes, at most every `[webhooks] progress_seconds`), `completed` / `failed` / `canceled`.

Before `on_status` returns, the event is a marker webhooks/<host>/<webhook-id>.json (url,
source, job, event, the exact body, attempts so far; sealed with the secret); then it goes
to the sender process (daemon/webhooks/send.py), which posts it, journals every attempt in
outbox/<id>/webhooks.jsonl and removes the marker once it is delivered or given up, and
which takes up every sealed marker again when it starts. The pipe never holds up the daemon:
what the sender has not read waits in a bounded queue, and a marker that finds it full is
left for the sender to find when it next reads its folder. The markers of a host judged dead
(daemon/spool/hosts.py) are renamed into ours, one rename each, which decides the one live host
that sends it. The webhook-id comes from the event
itself, so a status written again (a publish redone after a crash, a delivery folder's
rewrite of the final status) is no new event, and a receiver that deduplicates by
webhook-id sees each event once.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable

import structlog

from contract.status import utc_now
from daemon.config import Settings, WebhooksConfig
from daemon.spool.fsops import atomic_write_json, move, read_json
from daemon.spool.layout import Spool
from daemon.webhooks.send import JOURNAL, is_marker, is_sealed, main, marker_mac, marker_path

log = structlog.get_logger()

ENDED = frozenset({"delivered", "given_up", "refused"})  # journal results after which an event is done
RESTART_SECONDS = 1.0  # a sender process that died is started again after this
# Messages waiting for the sender's pipe (markers ~2 kB each); beyond, a wake-up is dropped
# and the sender reads its folder again once the queue has drained.
WAITING_MESSAGES = 100
_spawn = multiprocessing.get_context("spawn")


def webhook_id(doc: dict, event: str) -> str:
    """The event's id: the same for the same event whenever its status is written again."""
    parts = [doc["id"], doc.get("created_at") or "", event, str(doc.get("attempt") or 0)]
    if event == "progress":
        parts += [str(doc.get(k)) for k in ("stage", "step", "progress")]
    elif event == "queued" and doc.get("message"):
        # A requeue (it says why) is written once, but `pause --now` requeues keep the attempt
        # number; an accept redone after a crash writes the same queued status (no message) again.
        parts += [doc["message"], doc.get("updated_at") or ""]
    return "msg_" + hashlib.sha256("\x1f".join(parts).encode("utf-8", "backslashreplace")).hexdigest()[:32]


class Webhooks:
    def __init__(self, spool: Spool, settings: Callable[[], Settings], fsync_markers: bool = False):
        self.spool = spool
        self.settings = settings  # the current settings (SIGHUP replaces them)
        self.fsync_markers = fsync_markers  # measured: not worth it (BENCHMARKS.md, "Webhooks")
        self._running: dict[str, tuple[int, float]] = {}  # job id → (attempt, last running/progress event)
        self._left: set[tuple[str, str]] = set()  # (dead host, marker) not taken, logged once
        self.sender = SenderProcess(spool, lambda: self.settings().log.level, lambda: self.settings().webhooks)

    def on_attempt(self, listener: Callable[[str], None]) -> None:
        """`listener(result)` after each attempt, in a thread of the daemon (metrics count them)."""
        self.sender.attempt_listeners.append(listener)

    def start(self) -> None:
        """Starts the sender (which takes up the markers a previous run left) where webhooks
        are configured or owed (after the spool is opened)."""
        if self.settings().webhooks.secret or any(n.endswith(".json") for n in os.listdir(self.spool.webhooks)):
            self.sender.start()

    def stop(self) -> None:
        self.sender.stop()

    def on_status(self, doc: dict) -> None:
        """A status this daemon wrote: records and sends the event it is, if the job asks for it."""
        target = (doc.get("job") or {}).get("webhook")
        if not isinstance(target, dict) or not target.get("url"):
            return
        try:
            event = self._event(doc)
            if event is None or event not in (target.get("events") or ()):
                return
            wid = webhook_id(doc, event)
            if self._known(doc["id"], wid):
                return
            now = utc_now()
            body = json.dumps({"type": f"job.{event}", "timestamp": now, "data": doc}, separators=(",", ":"))
            marker = {"webhook_id": wid, "job_id": doc["id"], "event": event, "url": target["url"],
                      "source": target.get("source") or "job", "timestamp": now, "body": body, "attempts": 0}
            marker["mac"] = marker_mac(self.settings().webhooks.secret, marker)
        except Exception:  # noqa: BLE001 - a bug here must never break the spool transition that wrote the status
            log.exception("webhook.event_failed", job_id=doc.get("id"))
            return
        try:
            atomic_write_json(marker_path(self.spool, wid), marker, fsync=self.fsync_markers)
        except OSError as exc:  # a broken spool: sent from memory, not resumed after a crash
            log.error("webhook.unrecorded", job_id=doc["id"], webhook_id=wid, error=str(exc))
            marker["unrecorded"] = True
        self.sender.send(marker)

    def take_over(self, host: str) -> None:
        """The events dead `host` still owed: each marker sealed with our secret (every host
        of a spool has the same one) is renamed into our folder, and the sender takes them up.
        One that is not stays where it is (logged once): sealed with another secret, ours
        would refuse and remove it."""
        src, secret, taken = self.spool.webhooks_of(host), self.settings().webhooks.secret, 0
        try:
            names = sorted(os.listdir(src))
        except FileNotFoundError:
            return
        for name in names:
            path = src / name
            if name.startswith(".") and name.endswith(".tmp"):  # a marker write its death cut short
                path.unlink(missing_ok=True)
                continue
            marker = read_json(path) if name.endswith(".json") else None
            problem = ("not a webhook marker" if not is_marker(marker, name) else
                       None if is_sealed(marker, secret) else
                       "not sealed with this host's [webhooks] secret: every host sharing a spool needs the same one")
            if problem:
                if (host, name) not in self._left:  # looked at again on each lease check, logged once
                    self._left.add((host, name))
                    log.error("webhook.not_taken_over", dead_host=host, marker=name, reason=problem)
                continue
            try:
                taken += move(path, marker_path(self.spool, name.removesuffix(".json")))
            except FileExistsError:  # pending here already (we redid the publish that made it)
                path.unlink(missing_ok=True)
        if taken:
            log.warning("webhook.taken_over", dead_host=host, events=taken)
            self.sender.rescan()

    def _event(self, doc: dict) -> str | None:
        job_id, state = doc["id"], doc.get("state")
        if state != "running":
            self._running.pop(job_id, None)
            return state
        now, attempt = time.monotonic(), doc.get("attempt") or 0
        seen = self._running.get(job_id)
        if seen is None or seen[0] != attempt:
            self._running[job_id] = (attempt, now)
            return "running"
        if now - seen[1] < self.settings().webhooks.progress_seconds:
            return None
        self._running[job_id] = (attempt, now)
        return "progress"

    def _known(self, job_id: str, wid: str) -> bool:
        """Whether the event is pending (its marker) or done (its journal; the sender writes
        the journal line before it removes the marker)."""
        if os.path.exists(marker_path(self.spool, wid)):
            return True
        try:
            with open(self.spool.job_outbox(job_id) / JOURNAL, "rb") as f:
                lines = f.read().splitlines()
        except OSError:
            return False
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("webhook_id") == wid and entry.get("result") in ENDED:
                return True
        return False


class SenderProcess:
    """The daemon's handle on the sender process, kept by one supervising thread: started
    when first needed, started again (after RESTART_SECONDS) if it dies; what it owed is in
    its markers. (One thread starts it every time: PR_SET_PDEATHSIG follows the thread.)"""

    def __init__(self, spool: Spool, log_level: Callable[[], str], config: Callable[[], WebhooksConfig]):
        self.spool = spool
        self._log_level = log_level
        self._config = config
        self._sent_config: WebhooksConfig | None = None
        self._conn = None  # None while (re)starting: the new process resumes what is written meanwhile
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False
        # What the daemon's loop hands over without ever waiting: a writer thread feeds the pipe
        # (a sender that stops reading, SIGSTOPped or stuck, blocks only that thread).
        self._waiting: queue.Queue[tuple[str, dict | None] | None] = queue.Queue(WAITING_MESSAGES)
        self._rescan = threading.Event()  # markers the sender has not been told of: it reads its folder
        self.attempt_listeners: list[Callable[[str], None]] = []

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._supervise, name="webhook-sender", daemon=True)
                self._thread.start()
                threading.Thread(target=self._write, name="webhook-pipe", daemon=True).start()

    def send(self, marker: dict) -> None:
        """Hands the sender a marker just written; never waits (a full queue: it rescans)."""
        self.start()
        if self._stopped:  # the daemon is stopping: the marker waits for the next start
            return
        try:
            self._waiting.put_nowait(("send", marker))
        except queue.Full:
            if not self._rescan.is_set():
                log.warning("webhook.sender_behind", waiting=WAITING_MESSAGES,
                            reason="the sender process is not reading; later events wait in their markers")
            self.rescan()

    def rescan(self) -> None:
        """Asks the sender to read its folder again once it has read what waits."""
        self.start()
        self._rescan.set()
        try:
            self._waiting.put_nowait(None)  # wakes the writer if it idles
        except queue.Full:
            pass  # it is busy: it sees the flag once the queue is empty

    def stop(self) -> None:
        """Asks it to end, without waiting for what is pending (its markers keep it; one that
        never reads this dies with the daemon: PR_SET_PDEATHSIG)."""
        with self._lock:
            self._stopped = True
        try:
            self._waiting.put_nowait(("stop", None))
        except queue.Full:
            pass

    def _write(self) -> None:
        """The writer thread: what waits, into the current process's pipe."""
        while True:
            message = self._waiting.get()
            with self._lock:
                conn, config = self._conn, self._config()
                sent_config, self._sent_config = self._sent_config, config
            out = [] if config is sent_config else [("config", config.model_dump(mode="json"))]
            if message is not None:
                out.append(message)
            if self._rescan.is_set() and self._waiting.empty():
                self._rescan.clear()
                out.append(("rescan", None))
            if conn is not None:  # else (re)starting: the new process reads the folder
                try:
                    for item in out:
                        conn.send(item)
                except OSError:  # it died: started again, it resumes the markers
                    pass
            if message is not None and message[0] == "stop":
                return

    def _supervise(self) -> None:
        while True:
            with self._lock:
                if self._stopped:
                    return
                ours, theirs = _spawn.Pipe()
                self._conn, self._sent_config = ours, self._config()
                args = (theirs, str(self.spool.root), self.spool.host, self._log_level(),
                        self._sent_config.model_dump(mode="json"), utc_now(), os.getpid())
            process = _spawn.Process(target=main, name="vidspool-webhooks", daemon=True, args=args)
            try:
                process.start()
                log.info("webhook.sender_started", pid=process.pid)
            except OSError as exc:  # e.g. no memory for another process: tried again
                log.error("webhook.sender_failed", error=str(exc), restart_in_seconds=RESTART_SECONDS)
                ours.close()
            theirs.close()
            while True:
                try:
                    what, result, fields = ours.recv()
                except (EOFError, OSError):
                    break
                if what == "log":
                    getattr(log, result, log.info)(fields[0], **{"host": self.spool.host, **fields[1]})
                    continue
                for listener in self.attempt_listeners:
                    listener(result)
            if process.pid is not None:
                process.join(5)
            with self._lock:
                self._conn = None
                if self._stopped:
                    return
            log.warning("webhook.sender_exited", exitcode=process.exitcode, restart_in_seconds=RESTART_SECONDS)
            time.sleep(RESTART_SECONDS)
