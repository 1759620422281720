"""Delivery folders (SPEC §10.3): a preset's `deliver_to` gets a copy of each completed job's
main result (`deliver = "all"`: of every result), named by the preset's `name` template.

Crash-safe by a marker, deliveries/<host>/<id>.json: written when the `completed` status is
(the plan: folder, names, hashes), then updated as each copy goes (its temp, the name it is
being published under, the name it got), so a daemon killed mid-copy redoes the delivery at
start without a second copy of what had already arrived. The copies run in threads (a share
can be slow), never on the arbiter's loop; each attempt's outcome comes back to the loop,
which rewrites the status with `result.delivered`, or with `result.delivery_error` and a
retry after deliver_retry_seconds, doubling up to an hour, for as long as a daemon runs (the
outbox copy always stays). The marker goes once the status says delivered. A host judged dead
(daemon/spool/hosts.py) has its markers renamed into the folder of the live host that takes them
over, which redoes each delivery from where it got.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import structlog

from contract.files import file_sha256
from daemon.config import Settings
from daemon.delivery.files import (Stopped, delivery_name, drop_stem, finished_date, in_folder, is_numbered,
                                   is_temp_of, publish, temp_name, write_temp)
from daemon.spool.fsops import atomic_write_json, move, read_json, unlink_quietly
from daemon.spool.job_files import open_job_file
from daemon.spool.layout import Spool, is_valid_job_id

log = structlog.get_logger()

DEFAULT_NAMES = {"main": "{stem}.{ext}", "all": "{stem}-{result}.{ext}"}
RETRY_CAP_SECONDS = 3600.0
COPY_THREADS = 2


@dataclass
class Outcome:
    """What one attempt did: error None = every file delivered; gone = the results are no
    longer in the outbox (nothing left to deliver, no retry)."""

    error: str | None = None
    gone: bool = False
    bytes: int = 0
    seconds: float = 0.0


@dataclass
class Deliveries:
    spool: Spool
    kinds: dict
    settings: Callable[[], Settings]  # the current settings (SIGHUP replaces them)
    read_status: Callable[[str], dict | None]
    write_status: Callable[[dict], None]  # StatusWriter.write: on the loop only
    _plans: dict[str, dict] = field(default_factory=dict)  # job id → its marker, while busy
    _retries: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    _todo: queue.Queue = field(default_factory=queue.Queue)
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _left: set[tuple[str, str]] = field(default_factory=set)  # (dead host, marker) left for another host: logged
    _loop: asyncio.AbstractEventLoop | None = None

    # -- on the loop ------------------------------------------------------------------------
    def on_status(self, doc: dict) -> None:
        """A status this daemon wrote: a first `completed` one of a delivering preset starts
        a delivery (its marker is written before this returns)."""
        result = doc.get("result") or {}
        if doc.get("state") != "completed" or doc["id"] in self._plans:
            return
        if result.get("delivered") is not None or result.get("delivery_error") is not None:
            return  # our own rewrite
        plan, marker = self._plan(doc), self._marker(doc["id"])
        if plan is None:
            return
        if owner := self._owed_by_another(doc["id"]):  # a dead host's publish we redo: not a second copy
            log.info("delivery.elsewhere", job_id=doc["id"], owner_host=owner)
            return
        try:
            plan = with_progress(plan, read_json(marker))  # a marker there already: a publish redone after a crash
            atomic_write_json(marker, plan)
        except OSError as exc:  # a broken spool: delivered from memory, not redone after a crash
            log.error("delivery.unrecorded", job_id=doc["id"], marker=str(marker), error=str(exc))
        self._begin(plan)

    def start(self) -> None:
        """Redoes the deliveries a previous run left (after the spool is opened)."""
        for name in sorted(os.listdir(self.spool.deliveries)):
            job_id = name.removesuffix(".json")
            if name.endswith(".json") and is_valid_job_id(job_id) and job_id not in self._plans:
                # The folder and names come from the job's status and preset as they are now;
                # the marker (a file anyone who writes the spool can write) only says how far it got.
                doc = self.read_status(job_id)
                plan = self._plan(doc) if doc is not None and doc.get("state") == "completed" else None
                if plan is None:
                    log.warning("delivery.dropped", job_id=job_id, reason="no completed job of a preset with deliver_to")
                    unlink_quietly(self.spool.deliveries / name)
                    continue
                self._resume(plan, self.spool.deliveries / name)

    def take_over(self, host: str) -> None:
        """The deliveries dead `host` still owed: each marker is renamed into our folder (that
        rename decides which live host copies it) and the delivery redone from where it got,
        where this host has the preset's deliver_to folder; else it stays (logged once) for a
        host that has it."""
        src = self.spool.deliveries_of(host)
        try:
            names = sorted(os.listdir(src))
        except FileNotFoundError:
            return
        for name in names:
            job_id = name.removesuffix(".json")
            if name.startswith(".") and name.endswith(".tmp"):  # a marker write its death cut short
                unlink_quietly(src / name)
                continue
            if not name.endswith(".json") or not is_valid_job_id(job_id):
                continue
            doc = self.read_status(job_id)
            if doc is None or doc.get("state") != "completed" or job_id in self._plans:
                log.warning("delivery.dropped", job_id=job_id, dead_host=host, reason=(
                    "being delivered by this host already" if job_id in self._plans else "no completed job"))
                unlink_quietly(src / name)
                continue
            plan = self._plan(doc)
            if plan is None or not os.path.isdir(plan["folder"]):
                if (host, name) not in self._left:  # looked at again on each lease check, logged once
                    self._left.add((host, name))
                    log.error("delivery.not_taken_over", job_id=job_id, dead_host=host, preset=(doc.get("job") or {}).get("preset"),
                              reason="its preset has no deliver_to folder on this host; left for a host where it has")
            elif move(src / name, self._marker(job_id)):  # False: another live host took it
                log.warning("delivery.taken_over", job_id=job_id, dead_host=host)
                self._resume(plan, self._marker(job_id))

    def _owed_by_another(self, job_id: str) -> str | None:
        """Another host whose folder holds the job's delivery marker: it delivers the job (one
        that took the marker over from a dead host, or the dead host, whose marker waits there
        for a host with the folder)."""
        try:
            hosts = os.listdir(self.spool.deliveries.parent)
            return next((h for h in sorted(hosts) if h != self.spool.host
                         and os.path.lexists(self.spool.deliveries_of(h) / f"{job_id}.json")), None)
        except OSError:  # a broken spool: delivered from here
            return None

    def _resume(self, plan: dict, marker: Path) -> None:
        plan = with_progress(plan, read_json(marker))
        log.info("delivery.resumed", job_id=plan["id"], attempts=plan["attempts"])
        self._begin(plan)

    def stop(self) -> None:
        """Abandons copies at their next chunk (their markers redo them at the next start)."""
        self._stop.set()
        for handle in self._retries.values():
            handle.cancel()
        for _ in self._threads:
            self._todo.put(None)

    def _begin(self, plan: dict) -> None:
        self._loop = self._loop or asyncio.get_running_loop()
        self._plans[plan["id"]] = plan
        self._enqueue(plan["id"])

    def _enqueue(self, job_id: str) -> None:
        self._retries.pop(job_id, None)
        if self._stop.is_set():
            return
        while len(self._threads) < COPY_THREADS:
            t = threading.Thread(target=self._copier, name=f"delivery-{len(self._threads)}", daemon=True)
            self._threads.append(t)
            t.start()
        self._todo.put(job_id)

    def _finished(self, job_id: str, outcome: Outcome) -> None:
        """An attempt's outcome: the status rewritten, then the marker removed or a retry set."""
        plan = self._plans[job_id]
        delivered = [f["delivered"] for f in plan["files"] if f.get("delivered")]
        error, wait = self._failure(plan, outcome) if outcome.error is not None else (None, 0.0)
        if error is None:
            log.info("delivery.done", job_id=job_id, paths=delivered, bytes=outcome.bytes, seconds=round(outcome.seconds, 3))
        try:
            doc = self.read_status(job_id)
            if doc is not None and doc.get("state") == "completed":
                doc["result"] = {**(doc.get("result") or {}), "delivered": delivered or None, "delivery_error": error}
                self.write_status(doc)
            if error is None or outcome.gone or doc is None:  # done, or nothing left to deliver
                unlink_quietly(self._marker(job_id))
                del self._plans[job_id]
                return
            atomic_write_json(self._marker(job_id), plan)
        except OSError as exc:  # the spool: this attempt's report waits for the next one
            log.error("delivery.unrecorded", job_id=job_id, error=str(exc))
            wait = plan["retry_seconds"]
        self._retries[job_id] = self._loop.call_later(wait, self._enqueue, job_id)

    @staticmethod
    def _failure(plan: dict, outcome: Outcome) -> tuple[dict, float]:
        """The status's delivery_error for a failed attempt, and the wait before the next."""
        plan["attempts"] = plan.get("attempts", 0) + 1
        wait = min(plan["retry_seconds"] * 2 ** (plan["attempts"] - 1), RETRY_CAP_SECONDS)
        next_at = None if outcome.gone else datetime.now(timezone.utc) + timedelta(seconds=wait)
        error = {"message": outcome.error, "attempts": plan["attempts"],
                 "next_attempt_at": next_at and next_at.isoformat(timespec="seconds").replace("+00:00", "Z")}
        log.warning("delivery.failed", job_id=plan["id"], reason=outcome.error, attempts=plan["attempts"],
                    next_try=error["next_attempt_at"] or "never: the results are gone")
        return error, wait

    # -- in the copy threads ----------------------------------------------------------------
    def _copier(self) -> None:
        while (job_id := self._todo.get()) is not None and not self._stop.is_set():
            try:
                outcome = self._attempt(self._plans[job_id])
            except Stopped:
                return
            except Exception as exc:  # noqa: BLE001 - a bug here must not end deliveries
                log.exception("delivery.crashed", job_id=job_id)
                outcome = Outcome(error=f"internal error: {exc}")
            try:
                self._loop.call_soon_threadsafe(self._finished, job_id, outcome)
            except RuntimeError:  # the loop is closed: the daemon has stopped
                return

    def _attempt(self, plan: dict) -> Outcome:
        started, copied = time.monotonic(), 0
        folder = Path(plan["folder"])
        try:
            for f in plan["files"]:
                if f.get("temp"):
                    self._settle_interrupted(f, plan)
                if f.get("delivered"):
                    continue
                src = open_job_file(self.spool, plan["id"], f["name"])  # never a link, nor outside its folder
                if src is None:
                    return Outcome(error=f"{f['name']} is no longer in the outbox", gone=True)
                with src:
                    if not folder.is_dir():
                        return Outcome(error=f"{folder} does not exist or is not a folder")
                    f["temp"] = str(temp_name(folder, f["as"]))
                    self._save(plan)
                    copied += write_temp(src, Path(f["temp"]), self._stop)
                final = publish(Path(f["temp"]), f["as"], lambda p, f=f: self._save(plan, f, final=str(p)))
                f.update(delivered=str(final), temp=None, final=None)
                self._save(plan)
        except OSError as exc:
            return Outcome(error=f"{exc.strerror or exc}: {exc.filename or folder}")
        return Outcome(bytes=copied, seconds=time.monotonic() - started)

    def _settle_interrupted(self, f: dict, plan: dict) -> None:
        """A copy a crash interrupted: it arrived if the name it was being published under
        holds its bytes; else its temp goes and it is copied again."""
        final = f.get("final")
        if final and os.path.isfile(final) and file_sha256(Path(final)) == f.get("sha256"):
            f["delivered"] = final
        unlink_quietly(f["temp"])
        f.update(temp=None, final=None)
        self._save(plan)

    def _save(self, plan: dict, entry: dict | None = None, **changes) -> None:
        if entry is not None:
            entry.update(changes)
        atomic_write_json(self._marker(plan["id"]), plan)

    # -- the plan ---------------------------------------------------------------------------
    def _marker(self, job_id: str) -> Path:
        return self.spool.deliveries / f"{job_id}.json"

    def _plan(self, doc: dict) -> dict | None:
        """What to deliver where, from the job's preset as configured now; None: nothing."""
        preset_name = (doc.get("job") or {}).get("preset")
        preset = self.settings().presets.get(preset_name) if preset_name else None
        if preset is None or preset.deliver_to is None:
            return None
        files = [f for f in (doc.get("result") or {}).get("files") or [] if isinstance(f, dict) and f.get("name")]
        if not files:
            return None
        if preset.deliver == "main":
            kind = self.kinds.get(doc.get("kind") or "")
            main = [f for f in files if kind is not None and f["name"] == kind.main_result]
            files = main or files[:1]  # as GET /api/v1/jobs/{id}/download chooses
        template = preset.name or DEFAULT_NAMES[preset.deliver]
        fields = {"stem": drop_stem(doc), "id": doc["id"], "kind": doc.get("kind") or "", "date": finished_date(doc)}
        return {
            "id": doc["id"], "preset": preset_name, "folder": str(preset.deliver_to.expanduser().absolute()),
            "retry_seconds": preset.deliver_retry_seconds, "attempts": 0,
            "files": [{"name": f["name"], "sha256": f.get("sha256"), "size": f.get("size"),
                       "as": delivery_name(template, fields, f["name"]), "temp": None, "final": None, "delivered": None}
                      for f in files],
        }


def with_progress(plan: dict, marker: dict | None) -> dict:
    """`plan` with what a marker left says of its progress (attempts; per file the temp being
    written, the name being published under, where it arrived), where that stays in the
    plan's folder under the plan's names: nothing in a marker chooses what is written,
    read or removed."""
    if not isinstance(marker, dict) or marker.get("id") != plan["id"]:
        return plan
    attempts = marker.get("attempts")
    plan["attempts"] = attempts if isinstance(attempts, int) and 0 <= attempts < 10**6 else 0
    folder = plan["folder"]
    earlier = {f.get("name"): f for f in marker.get("files") or [] if isinstance(f, dict)}
    for f in plan["files"]:
        was = earlier.get(f["name"]) or {}
        if in_folder(folder, was.get("temp"), is_temp_of(f["as"])):
            f["temp"] = was["temp"]
        for key in ("final", "delivered"):
            if in_folder(folder, was.get(key), is_numbered(f["as"])):
                f[key] = was[key]
    return plan
