"""The read model every HTTP front takes instead of the arbiter: jobs, a status by id, the
queue, devices, models, voices, health, events, and the few writes a front may ask for
(submit, cancel, model load and unload).

The files are the truth (status.json in the outbox); the arbiter adds what only it knows
(the live status of the jobs it runs, the queue it holds, its workers). The native API,
/metrics, the page and the seed personalities use this.

Lists of jobs come from the outbox index it owns (daemon/outbox/index.py), never from a walk
of the outbox; whatever costs more than a lookup (a list, statistics) runs through
off_loop(): in a thread, at most LISTING_THREADS at once, so no client holds up the loop
that beats the heartbeat and claims jobs.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from contract.kinds import KindSpec
from contract.status import FINAL_STATES, STATES, new_status
from contract.voices import EspeakVoiceList, catalog, language_counts
from daemon import __version__
from daemon.config import Settings
from daemon.view.downloads import Downloads
from daemon.outbox.estimates import MIN_REMAINING, RunPlan
from daemon.view.events import EventLog
from daemon.spool.fsops import atomic_write_bytes, read_json
from contract.status import epoch
from daemon.outbox.history import History
from daemon.view.hostpaths import HostPaths
from daemon.view.modelview import model_entries, shown_entry
from daemon.spool.job_files import JobFolder, OpenedFile, path_signature, plain_name
from daemon.outbox.index import JobSummary, OutboxIndex
from daemon.spool.pause import Pause, PauseWatch
from daemon.spool.quarantine import corrupt_count
from daemon.outbox.results import delete_results
from daemon.spool.layout import STATUS, QueueName, Spool, is_valid_job_id, sanitize_job_id
from daemon.spool.status import StatusWriter


# Ended status documents kept parsed (the seed personalities translate them per request),
# and status bytes kept as served (the native GET).
ENDED_CACHE = 4096
RACY_NS = 1_000_000_000  # a status.json changed more recently than this is not cached
# Lists and statistics computed at once, each in a thread of its own; more wait their turn.
LISTING_THREADS = 2


class QueueFull(Exception):
    """A submission refused: [api] max_queued_jobs jobs wait (`waiting` of them)."""

    def __init__(self, waiting: int):
        super().__init__(f"{waiting} jobs are waiting ([api] max_queued_jobs)")
        self.waiting = waiting


class WebhookAttempts(Protocol):
    """The daemon's webhook sender (daemon/webhooks/service.py), as /metrics counts it."""

    def on_attempt(self, listener: Callable[[str], None]) -> None: ...


class RetentionTotals(Protocol):
    """The daemon's retention sweeps (daemon/outbox/retention.py): what they removed."""

    removed: int
    freed_bytes: int


class Supervisor(Protocol):
    """What the read model needs of the daemon's main loop (the Arbiter is one)."""

    spool: Spool
    kinds: Mapping[str, KindSpec]
    statuses: StatusWriter
    history: History
    index: OutboxIndex
    workers: list
    settings: Settings
    stop_requested: bool
    webhooks: WebhookAttempts
    retention: RetentionTotals

    def queued(self) -> list[QueueName]: ...

    def problems(self) -> list[str]: ...

    def cancel(self, job_id: str, source: str) -> str: ...

    def load_model(self, name: str) -> str: ...

    def unload_model(self, name: str) -> list[str]: ...

    def dropped(self, path: Path) -> None: ...

    def validate_job(self, doc: dict, staging: Path) -> dict: ...

    def on_status(self, listener: Callable[[dict], None]) -> None: ...

    def pause(self, host: str | None = None, **fields) -> Pause: ...

    def resume(self, host: str | None = None) -> list[str]: ...

    pausing: PauseWatch


class JobFilter:
    """GET /jobs filters, checked: ValueError names the bad one."""

    def __init__(self, state: str | None, kind: str | None, label: str | None):
        if state is not None and state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        if label is not None and "=" not in label:
            raise ValueError("label must be KEY=VALUE")
        self.state, self.kind, self.label = state, kind, label
        self.label_key, _, self.label_value = (label or "").partition("=")

    def matches(self, job: JobSummary) -> bool:
        if (self.state and job.state != self.state) or (self.kind and job.kind != self.kind):
            return False
        return not self.label or job.label(self.label_key) == self.label_value


class ReadModel:
    def __init__(self, daemon: Supervisor):
        self.daemon = daemon
        self.spool = daemon.spool
        self.events = EventLog()
        daemon.on_status(self.events.add)
        self._downloads = Downloads(lambda: self.settings)  # hub downloads, this daemon's
        self.paths = HostPaths(lambda: self.settings)  # host paths as answers show them
        self.index = daemon.index  # the arbiter's: its estimates read it too
        self.history = daemon.history
        self._ended: OrderedDict[str, tuple[tuple, dict]] = OrderedDict()
        # The bytes of status.json as served (GET /jobs/{id}), by the file's signature (lstat),
        # filled only from the link-safe read: a hit is the very file read before, unchanged.
        self._ended_bytes: OrderedDict[str, tuple[tuple, bytes]] = OrderedDict()
        self._ended_lock = threading.Lock()  # the caches are read from listing threads too
        self._listing = ThreadPoolExecutor(LISTING_THREADS, thread_name_prefix="listing")
        self._listing_turns = asyncio.Semaphore(LISTING_THREADS)
        self._espeak = EspeakVoiceList()  # espeak-ng's voices, listed again when its folders change
        # Jobs submitted here that no status is written for yet (the daemon accepts them at
        # its next turn): their labels, for the queue limit and the "being accepted" answer.
        self._accepting: dict[str, dict] = {}
        daemon.on_status(self._accepted)

    @property
    def settings(self) -> Settings:
        return self.daemon.settings  # replaced on reload

    @property
    def kinds(self) -> Mapping[str, KindSpec]:
        return self.daemon.kinds

    @property
    def stopping(self) -> bool:
        return self.daemon.stop_requested

    def on_status(self, listener: Callable[[dict], None]) -> None:
        self.daemon.on_status(listener)

    async def off_loop(self, work: Callable, *args):
        """work(*args) in a listing thread, at most LISTING_THREADS at once (the others wait
        their turn here)."""
        async with self._listing_turns:
            return await asyncio.get_running_loop().run_in_executor(self._listing, work, *args)

    # -- jobs ---------------------------------------------------------------------------
    def status(self, job_id: str) -> dict | None:
        """A job's status document (a queued one with its queue_position), or None."""
        if not is_valid_job_id(job_id):
            return None
        doc = self.daemon.statuses.live(job_id) or self._read_status(job_id)
        if doc is not None and doc.get("state") == "queued":
            doc = {**doc, "queue_position": self.queue_position(job_id)}
        return doc

    def _read_status(self, job_id: str) -> dict | None:
        """status.json of a job this daemon does not run; an ended one from a cache checked
        by the file's signature (an ended status changes only when its results are
        deleted). The document is shared: callers must not change it. Safe in a listing
        thread."""
        signature = self._signature(job_id)
        if signature is None:
            return self._being_accepted(job_id)
        with self._ended_lock:
            cached = self._ended.get(job_id)
            if cached is not None and cached[0] == signature:
                self._ended.move_to_end(job_id)
                return cached[1]
        doc = read_json(self.spool.job_outbox(job_id) / STATUS)
        if doc is not None and doc.get("state") in FINAL_STATES:
            with self._ended_lock:
                self._ended[job_id] = (signature, doc)
                if len(self._ended) > ENDED_CACHE:
                    self._ended.popitem(last=False)
        return doc

    def ended_status(self, job_id: str) -> dict | None:
        """An ended job's status document (shared: not to be changed), for a list's page; None
        if it has none or has not ended. Safe in a listing thread."""
        if not is_valid_job_id(job_id) or self.daemon.statuses.live(job_id) is not None:
            return None
        doc = self._read_status(job_id)
        return doc if doc is not None and doc.get("state") in FINAL_STATES else None

    def _signature(self, job_id: str) -> tuple | None:
        """(size, mtime, inode) of a job's status.json; None if it has none."""
        try:
            st = os.stat(self.spool.job_outbox(job_id) / STATUS)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ino)

    def ended_signature(self, job_id: str) -> tuple | None:
        """The signature of status.json of a job this daemon does not run, for a front that
        keeps answers derived from an ended one; None if there is none or it runs here."""
        if not is_valid_job_id(job_id) or self.daemon.statuses.live(job_id) is not None:
            return None
        return self._signature(job_id)

    def _being_accepted(self, job_id: str) -> dict | None:
        """A job a front submitted that the daemon has not accepted yet (its id is reserved,
        its status not written: milliseconds, or until a stalled intake goes on): queued,
        with the labels it was submitted with (a personality answers only its own)."""
        try:
            names = os.listdir(self.spool.job_outbox(job_id))
        except (FileNotFoundError, NotADirectoryError):
            return None
        reserved = [n[len(Spool.RESERVED_PREFIX):] for n in names if n.startswith(Spool.RESERVED_PREFIX)]
        if not reserved:
            return None
        labels = self._accepting.get(job_id)
        if labels is None:  # submitted through another daemon on the spool: its drop says
            drop = read_json(self.spool.inbox / reserved[0] / "job.json") if reserved[0].strip(".") else None
            labels = (drop or {}).get("labels") if isinstance((drop or {}).get("labels"), dict) else {}
        return new_status(job_id, {}, "queued", labels=labels, message="submitted; being accepted")

    def front_of(self, job_id: str) -> str | None:
        """The personality a job was submitted through (its labels.compat); None: another way."""
        if not is_valid_job_id(job_id):
            return None
        doc = self.daemon.statuses.live(job_id) or self._read_status(job_id) or {}
        return (doc.get("labels") or {}).get("compat")

    def ended_status_bytes(self, job_id: str) -> bytes | None:
        """status.json's bytes as they are, for a job this daemon does not run and that is
        not queued (no queue_position to add); None otherwise, or if there is none."""
        if not is_valid_job_id(job_id) or self.daemon.statuses.live(job_id) is not None:
            return None
        signature = path_signature(f"{self.spool.outbox}/{job_id}/{STATUS}")
        if signature is None:
            return None
        with self._ended_lock:
            cached = self._ended_bytes.get(job_id)
            if cached is not None and cached[0] == signature:  # the very file read before, unchanged
                self._ended_bytes.move_to_end(job_id)
                return cached[1]
        folder = JobFolder.open(self.spool, job_id)
        if folder is None:
            return None
        with folder:
            found = folder.read_signed(STATUS)  # never a link's target (whatever a spool writer put there)
        if found is None or b'"state": "queued"' in found[0]:
            return None
        raw, opened = found
        # A file changed within the last second may change again within the same timestamp tick:
        # its signature would not show it, so it is read again next time.
        if time.time_ns() - opened.changed_ns > RACY_NS:
            with self._ended_lock:
                self._ended_bytes[job_id] = (opened.signature, raw)
                if len(self._ended_bytes) > ENDED_CACHE:
                    self._ended_bytes.popitem(last=False)
        return raw

    def jobs(self, where: JobFilter, limit: int, cursor: str = "") -> tuple[list[dict], str | None]:
        """A page of job summaries in id order after `cursor`, and the next cursor (from the
        outbox index: call it through off_loop)."""
        compat = where.label_value if where.label_key == "compat" else None
        found = self.index.page(cursor, where.matches, limit, compat=compat)
        jobs = [j.listed() for j in found]
        return jobs, (jobs[-1]["id"] if len(jobs) == limit else None)

    def compat_jobs(self, name: str) -> list[JobSummary]:
        """The outbox index's summaries of the jobs with `labels.compat` = name, in id order
        (a seed personality's own; call it through off_loop)."""
        return self.index.compat(name)

    def result_file(self, job_id: str, name: str | None) -> tuple[OpenedFile, str] | None:
        """A file the job's status lists as a result (None: its main result), opened in its
        outbox folder only (daemon/spool/job_files.py): no path from a request or a status
        reaches the filesystem, no link is followed. The caller closes it (or sends it)."""
        folder = JobFolder.open(self.spool, job_id)
        if folder is None:
            return None
        with folder:
            doc = folder.status() or {}
            files = {f["name"]: f for f in ((doc.get("result") or {}).get("files") or [])
                     if isinstance(f, dict) and plain_name(f.get("name"))}
            if name is None:
                kind = self.kinds.get(doc.get("kind") or "")
                name = kind.main_result if kind and kind.main_result in files else next(iter(files), None)
            opened = folder.open_file(name) if name in files else None
        return (opened, str(files[name].get("media_type") or "application/octet-stream")) if opened else None

    def delete_results(self, job_id: str) -> tuple[str, int]:
        """An ended job's result files removed (daemon/outbox/results.py): ("deleted", freed bytes),
        ("already_deleted", 0), ("not_found", 0), ("not_ended", 0) or ("busy", 0)."""
        outcome = delete_results(self.spool, job_id, by=self.spool.host)
        if outcome[0] in ("deleted", "already_deleted"):
            self.index.reread(job_id)  # its result files are no longer listed
        return outcome

    # -- measured history -------------------------------------------------------------------
    def estimate(self, doc: dict) -> dict:
        """Seconds until a job is done, from this host's measured runs (daemon/outbox/estimates.py:
        per stage, scaled by the job's size): `estimated_time_seconds` (its whole time from
        now: the wait for the jobs ahead of it plus its run; for a running job its run),
        `estimated_remaining_seconds` (a running job's: what is left of its current stage and
        every stage to come), and `basis` (how many past runs the estimate rests on). None
        where there is no history yet."""
        state = doc.get("state")
        if state == "running":
            started = epoch(doc.get("started_at"))
            elapsed = max(0.0, time.time() - started) if started else 0.0
            plan = self._plan(doc)
            remaining = self._remaining(doc, plan, elapsed)
            total = None if remaining is None or plan is None else round(elapsed + remaining, 3)
            return {"estimated_time_seconds": total, "estimated_remaining_seconds": remaining,
                    "basis": plan.basis if plan else 0}
        plan = self._plan(doc)
        run, basis = (plan.total, plan.basis) if plan else (None, 0)
        if state in FINAL_STATES:
            return {"estimated_time_seconds": run, "estimated_remaining_seconds": 0.0, "basis": basis}
        wait = self._wait_ahead(doc.get("id"))
        total = None if run is None or wait is None else round(wait + run, 3)
        return {"estimated_time_seconds": total, "estimated_remaining_seconds": total, "basis": basis}

    def _plan(self, doc: dict | None, loaded: set[str] | None = None) -> RunPlan | None:
        """A job's estimated stages on this host, loading its model if no worker holds it
        (nor is in `loaded`: models the jobs ahead of it load; this one's is added)."""
        doc = doc or {}
        job = doc.get("job") or {"kind": doc.get("kind"), "model": doc.get("model")}
        model = job.get("model")
        held = model in (loaded or ()) or any(w.holds(model) for w in self.daemon.workers)
        will_load = model is not None and not held
        if loaded is not None and model is not None:
            loaded.add(model)
        return self.history.run_plan(job, self.spool.host, will_load)

    def _remaining(self, doc: dict, plan: RunPlan | None, elapsed: float) -> float | None:
        """A running job's seconds left: from its stage clock where this daemon runs it (the
        stages still to come, what is left of the current one); for another host's job, its
        status's `eta_seconds` counted down since written, and at least the stages after its
        current one, else its plan's run less the time it has run."""
        clock = next((w.job.clock for w in self.daemon.workers if w.job and w.job.job_id == doc.get("id")), None)
        if clock is not None:
            return clock.eta()
        eta = doc.get("eta_seconds")
        if isinstance(eta, (int, float)):
            written = epoch(doc.get("updated_at"))
            left = eta - (max(0.0, time.time() - written) if written else 0.0)
            later = plan.remaining(doc.get("stage"), 0.0, 0.0, elapsed) if plan else MIN_REMAINING
            return round(max(MIN_REMAINING, left, later), 3)
        return plan.remaining(None, None, 0.0, elapsed) if plan else None

    def _wait_ahead(self, job_id: str | None) -> float | None:
        """How long the jobs ahead of a queued one (and the running ones) will keep the
        workers busy, spread over the workers; None if one of them has no history."""
        busy = 0.0
        for w in self.daemon.workers:
            job = w.describe().get("job")
            doc = self.daemon.statuses.live(job) if job else None
            if doc is not None:
                left = self.estimate(doc)["estimated_remaining_seconds"]
                if left is None:
                    return None
                busy += left
        loaded: set[str] = set()
        for qn in self.daemon.queued():
            if qn.job_id == job_id:
                break
            plan = self._plan(self._queued_doc(qn.job_id), loaded)
            if plan is None:
                return None
            busy += plan.total
        return round(busy / max(1, len(self.daemon.workers)), 3)

    def _queued_doc(self, job_id: str) -> dict | None:
        """What a queued job's plan needs (kind, model, sizes), from the index's memory; a
        status file is read only for one not indexed yet."""
        job = self.index.get(job_id)
        if job is None:
            return self.daemon.statuses.current(job_id)
        return {"job": {"kind": job.kind, "model": job.model, "params": dict(job.params or ())}}

    def load_estimate(self, model: str) -> float | None:
        """Seconds a load of `model` takes on this host: the median of its past loads that
        jobs waited for (result.model.load_seconds); None if none did."""
        return self.history.load_estimate(model, self.spool.host)

    async def statistics(self) -> dict:
        """Requests, outcomes, generation times, queue waits, storage and per-model figures,
        computed from the outbox (daemon/outbox/history.py), off the loop."""
        return await self.off_loop(self.history.statistics, self.queued_count())

    def model_stats(self, name: str) -> dict:
        return self.history.model_stats(name)

    # -- submitting and canceling -----------------------------------------------------------
    def validate_job(self, doc: dict, staging: Path) -> dict:
        """The job as the daemon's intake will take it (daemon/jobs/jobfile.py); JobError
        says why it would fail."""
        return self.daemon.validate_job(doc, staging)

    def on_webhook_attempt(self, listener: Callable[[str], None]) -> None:
        """listener(result) for every webhook delivery attempt (from the sender's threads)."""
        self.daemon.webhooks.on_attempt(listener)

    def retention_totals(self) -> tuple[int, int]:
        """Ended jobs' outbox folders removed past [outbox] keep_days, and the bytes freed."""
        return self.daemon.retention.removed, self.daemon.retention.freed_bytes

    def new_submission(self) -> tuple[str, Path]:
        """A staging folder under a dot-name in the inbox, and its token."""
        token = secrets.token_hex(6)
        staging = self.spool.api_staging(token)
        staging.mkdir()
        return token, staging

    def submit(self, token: str, staging: Path, doc: dict) -> str:
        """Reserves the job's id, writes job.json and renames the staging folder into the
        inbox, where the daemon accepts it like any drop. Returns the id; QueueFull (nothing
        reserved) while [api] max_queued_jobs wait. The check and the reservation are one
        step on the loop, so parallel requests cannot pass the limit together."""
        waiting = self.queue_full()
        if waiting is not None:
            raise QueueFull(waiting)
        wanted = doc["id"] if isinstance(doc.get("id"), str) and is_valid_job_id(doc["id"]) else f"api-{token}"
        drop_name = f"{sanitize_job_id(wanted)[:40]}.api-{token}"
        job_id = self.spool.reserve_for_drop(wanted, drop_name)
        atomic_write_bytes(staging / "job.json", json.dumps({**doc, "id": job_id}).encode())
        os.rename(staging, self.spool.inbox / drop_name)
        labels = doc.get("labels")
        self._accepting[job_id] = labels if isinstance(labels, dict) else {}
        self.daemon.dropped(self.spool.inbox / drop_name)
        return job_id

    def _accepted(self, doc: dict) -> None:
        self._accepting.pop(doc.get("id"), None)

    def queue_full(self) -> int | None:
        """How many jobs wait (queued, and submitted here but not accepted yet), when that
        is [api] max_queued_jobs or more."""
        limit = self.settings.api.max_queued_jobs
        if len(self.daemon.queued()) + len(self._accepting) >= limit:
            # Accepted by another daemon on the spool (no status event here): no longer waiting.
            self._accepting = {i: labels for i, labels in self._accepting.items() if self._signature(i) is None}
        waiting = len(self.daemon.queued()) + len(self._accepting)
        return waiting if waiting >= limit else None

    def cancel(self, job_id: str, source: str = "api") -> str:
        """'canceled', 'canceling', 'final' (it has ended) or 'not_found'."""
        return self.daemon.cancel(job_id, source) if is_valid_job_id(job_id) else "not_found"

    # -- the daemon --------------------------------------------------------------------------
    def queue_position(self, job_id: str) -> int | None:
        for i, qn in enumerate(self.daemon.queued()):
            if qn.job_id == job_id:
                return i + 1
        return None

    def paused(self) -> dict | None:
        """The pause this daemon obeys (SPEC §10.4), or None."""
        current = self.daemon.pausing.current
        return current.describe() if current else None

    def pause(self, host: str | None, now: bool, free_memory: bool, by: str, reason: str | None) -> dict:
        return self.daemon.pause(host, now=now, free_memory=free_memory, by=by, reason=reason).describe()

    def resume(self, host: str | None) -> list[str]:
        return self.daemon.resume(host)

    def queue(self) -> dict:
        return {"paused": self.paused(), "devices": self.devices(),
                "queued": [{"id": q.job_id, "priority": q.priority, "position": i + 1}
                           for i, q in enumerate(self.daemon.queued())]}

    def queued_count(self) -> int:
        return len(self.daemon.queued())

    def devices(self) -> list[dict]:
        return [w.describe() for w in self.daemon.workers]

    def problems(self) -> list[str]:
        """Why the daemon is not healthy (empty: it is)."""
        return self.daemon.problems()

    def corrupt(self) -> int | None:
        return corrupt_count(self.spool)

    def info(self, auth: bool) -> dict:
        s = self.settings
        return {
            "version": __version__,
            "host": self.spool.host,
            "spool": self.paths.path(self.spool.root),
            "devices": [w.device for w in self.daemon.workers],
            "kinds": sorted(self.kinds),
            "kind_inputs": {name: [i.name for i in k.inputs] for name, k in sorted(self.kinds.items())},
            "models": sorted(s.models),
            "presets": {n: {"kind": p.kind, "accept": p.accept} for n, p in s.presets.items()},
            "limits": s.limits.model_dump(),
            "auth": auth,
        }

    # -- models and voices ---------------------------------------------------------------------
    def models(self) -> list[dict]:
        """The registry with absolute folders (for the fronts' own use; answers show shown_models())."""
        return model_entries(self.settings, self.daemon.workers, self._downloads.all())

    def shown_models(self) -> list[dict]:
        """models() as an answer shows them: folders relative to the registry or hub cache."""
        return [shown_entry(m, self.paths) for m in self.models()]

    async def download_model(self, repo: str, revision: str = "main", *, bearer: str | None = None,
                             authorized: bool = False) -> dict:
        """Starts downloading a hub repo into the hub cache in the background (registered
        as a model when complete; daemon/view/downloads.py), or answers the download of it that
        runs. `bearer`: what the caller presented; `authorized`: the front checked a token
        of the submit scope. Returns its description; DownloadRefused says why not."""
        return await self._downloads.start(repo, revision, bearer=bearer, authorized=authorized)

    def downloads(self) -> list[dict]:
        """The hub downloads this daemon ran: repo, revision, name, state (downloading,
        downloaded, failed), bytes_done, bytes_total, error, folder, started_at, finished_at."""
        return self._downloads.all()

    def has_model(self, name: str) -> bool:
        return name in self.settings.models

    def load_model(self, name: str) -> str:
        """The device that loads it. KeyError: not in the registry; RuntimeError: no worker."""
        return self.daemon.load_model(name)

    def unload_model(self, name: str) -> list[str]:
        return self.daemon.unload_model(name)

    def resident_models(self) -> list[dict]:
        """The models the workers hold, as each last reported them: {name, class, bytes,
        load_seconds, device}, most recently used first per worker."""
        return [{**m, "device": w.device} for w in self.daemon.workers for m in w.model_state.get("models", [])]

    def voices(self, language: str | None = None) -> list[dict]:
        return catalog(self.settings.voice_book(), language, self._espeak)

    def languages(self) -> list[dict]:
        return language_counts(self.settings.voice_book(), self._espeak)
