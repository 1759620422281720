"""The read model every HTTP front takes instead of the arbiter: jobs, a status by id, the
queue, devices, models, voices, health, events, and the few writes a front may ask for
(submit, cancel, model load and unload).

The files are the truth (status.json in the outbox); the arbiter adds what only it knows
(the live status of the jobs it runs, the queue it holds, its workers). The native API,
/metrics and the page use this; the seed personalities will too.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

from contract.kinds import KindSpec
from contract.status import FINAL_STATES, LIST_FIELDS, STATES, new_status
from contract.voices import catalog, language_counts
from daemon import __version__
from daemon.config import Settings
from daemon.downloads import Downloads
from daemon.events import EventLog
from daemon.fsops import atomic_write_bytes, read_json
from daemon.history import History, epoch
from daemon.modelview import model_entries
from daemon.outbox_files import JobFolder, OpenedFile, plain_name
from daemon.pause import Pause, PauseWatch
from daemon.quarantine import corrupt_count
from daemon.results import delete_results
from daemon.spool import STATUS, QueueName, Spool, is_valid_job_id, sanitize_job_id
from daemon.status import StatusWriter


# Ended status documents kept parsed (the seed personalities translate them per request).
ENDED_CACHE = 4096


class Supervisor(Protocol):
    """What the read model needs of the daemon's main loop (the Arbiter is one)."""

    spool: Spool
    kinds: Mapping[str, KindSpec]
    statuses: StatusWriter
    workers: list
    settings: Settings
    stop_requested: bool

    def queued(self) -> list[QueueName]: ...

    def problems(self) -> list[str]: ...

    def cancel(self, job_id: str, source: str) -> str: ...

    def load_model(self, name: str) -> str: ...

    def unload_model(self, name: str) -> list[str]: ...

    def dropped(self, path: Path) -> None: ...

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

    def matches(self, doc: dict) -> bool:
        if (self.state and doc.get("state") != self.state) or (self.kind and doc.get("kind") != self.kind):
            return False
        return not self.label or (doc.get("labels") or {}).get(self.label_key) == self.label_value


class ReadModel:
    def __init__(self, daemon: Supervisor):
        self.daemon = daemon
        self.spool = daemon.spool
        self.events = EventLog()
        daemon.on_status(self.events.add)
        self._downloads = Downloads(lambda: self.settings)  # hub downloads, this daemon's
        self.history = History(self.spool)
        self._ended: OrderedDict[str, tuple[tuple, dict]] = OrderedDict()
        daemon.on_status(self.history.seen)

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
        deleted). The document is shared: callers must not change it."""
        signature = self._signature(job_id)
        if signature is None:
            return self._being_accepted(job_id)
        cached = self._ended.get(job_id)
        if cached is not None and cached[0] == signature:
            self._ended.move_to_end(job_id)
            return cached[1]
        doc = read_json(self.spool.job_outbox(job_id) / STATUS)
        if doc is not None and doc.get("state") in FINAL_STATES:
            self._ended[job_id] = (signature, doc)
            if len(self._ended) > ENDED_CACHE:
                self._ended.popitem(last=False)
        return doc

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
        its status not written: milliseconds, or until a stalled intake goes on): queued."""
        try:
            names = os.listdir(self.spool.job_outbox(job_id))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not any(n.startswith(Spool.RESERVED_PREFIX) for n in names):
            return None
        return new_status(job_id, {}, "queued", message="submitted; being accepted")

    def ended_status_bytes(self, job_id: str) -> bytes | None:
        """status.json's bytes as they are, for a job this daemon does not run and that is
        not queued (no queue_position to add); None otherwise, or if there is none."""
        if not is_valid_job_id(job_id) or self.daemon.statuses.live(job_id) is not None:
            return None
        folder = JobFolder.open(self.spool, job_id)
        if folder is None:
            return None
        with folder:
            raw = folder.read(STATUS)  # never a link's target (whatever a spool writer put there)
        return None if raw is None or b'"state": "queued"' in raw else raw

    def jobs(self, where: JobFilter, limit: int, cursor: str = "") -> tuple[list[dict], str | None]:
        """A page of job summaries in id order after `cursor`, and the next cursor."""
        names = sorted(n for n in os.listdir(self.spool.outbox) if n > cursor and is_valid_job_id(n))
        jobs = []
        for name in names:
            doc = self.daemon.statuses.current(name)
            if doc is None or not where.matches(doc):
                continue
            jobs.append({k: doc.get(k) for k in LIST_FIELDS})
            if len(jobs) == limit:
                break
        return jobs, (jobs[-1]["id"] if len(jobs) == limit else None)

    def jobs_labelled(self, key: str, value: str) -> Iterator[dict]:
        """Status documents of the jobs whose `labels[key]` is `value`, in id order."""
        for name in sorted(n for n in os.listdir(self.spool.outbox) if is_valid_job_id(n)):
            doc = self.daemon.statuses.live(name) or self._read_status(name)
            if doc is not None and (doc.get("labels") or {}).get(key) == value:
                yield doc

    def result_file(self, job_id: str, name: str | None) -> tuple[OpenedFile, str] | None:
        """A file the job's status lists as a result (None: its main result), opened in its
        outbox folder only (daemon/outbox_files.py): no path from a request or a status
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
        """An ended job's result files removed (daemon/results.py): ("deleted", freed bytes),
        ("already_deleted", 0), ("not_found", 0), ("not_ended", 0) or ("busy", 0)."""
        return delete_results(self.spool, job_id, by=self.spool.host)

    # -- measured history -------------------------------------------------------------------
    def estimate(self, doc: dict) -> dict:
        """Seconds until a job is done, from the measured runs of its kind and model:
        `estimated_time_seconds` (its whole time from now: the wait for the jobs ahead of it
        plus its run; for a running job its run), `estimated_remaining_seconds`, and `basis`
        (how many past runs the estimate rests on). None where there is no history yet."""
        run, basis = self.history.run_estimate(doc.get("kind"), doc.get("model"))
        state = doc.get("state")
        if state in ("completed", "failed", "canceled"):
            return {"estimated_time_seconds": run, "estimated_remaining_seconds": 0.0, "basis": basis}
        if state == "running":
            started = epoch(doc.get("started_at"))
            elapsed = max(0.0, time.time() - started) if started else 0.0
            remaining = doc.get("eta_seconds")
            if remaining is None and run is not None:
                remaining = max(0.0, run - elapsed)
            total = run if remaining is None else round(elapsed + remaining, 3)
            return {"estimated_time_seconds": total, "estimated_remaining_seconds": _round(remaining), "basis": basis}
        wait = self._wait_ahead(doc.get("id"))
        total = None if run is None or wait is None else round(wait + run, 3)
        return {"estimated_time_seconds": total, "estimated_remaining_seconds": total, "basis": basis}

    def _wait_ahead(self, job_id: str | None) -> float | None:
        """How long the jobs ahead of a queued one (and the running ones) will keep the
        workers busy, spread over the workers; None if one of them has no history."""
        runs: dict[tuple, float | None] = {}

        def run_of(doc: dict | None) -> float | None:
            key = (doc or {}).get("kind"), (doc or {}).get("model")
            if key not in runs:
                runs[key] = self.history.run_estimate(*key)[0]
            return runs[key]

        busy = 0.0
        for w in self.daemon.workers:
            job = w.describe().get("job")
            doc = self.daemon.statuses.live(job) if job else None
            if doc is not None:
                left = self.estimate(doc)["estimated_remaining_seconds"]
                if left is None:
                    return None
                busy += left
        for qn in self.daemon.queued():
            if qn.job_id == job_id:
                break
            run = run_of(self.daemon.statuses.current(qn.job_id))
            if run is None:
                return None
            busy += run
        return round(busy / max(1, len(self.daemon.workers)), 3)

    def statistics(self) -> dict:
        """Requests, outcomes, generation times, queue waits, storage and per-model figures,
        computed from the outbox (daemon/history.py)."""
        return self.history.statistics(queued=self.queued_count())

    def model_stats(self, name: str) -> dict:
        return self.history.model_stats(name)

    # -- submitting and canceling -----------------------------------------------------------
    def new_submission(self) -> tuple[str, Path]:
        """A staging folder under a dot-name in the inbox, and its token."""
        token = secrets.token_hex(6)
        staging = self.spool.api_staging(token)
        staging.mkdir()
        return token, staging

    def submit(self, token: str, staging: Path, doc: dict) -> str:
        """Reserves the job's id, writes job.json and renames the staging folder into the
        inbox, where the daemon accepts it like any drop. Returns the id."""
        wanted = doc["id"] if isinstance(doc.get("id"), str) and is_valid_job_id(doc["id"]) else f"api-{token}"
        drop_name = f"{sanitize_job_id(wanted)[:40]}.api-{token}"
        job_id = self.spool.reserve_for_drop(wanted, drop_name)
        atomic_write_bytes(staging / "job.json", json.dumps({**doc, "id": job_id}).encode())
        os.rename(staging, self.spool.inbox / drop_name)
        self.daemon.dropped(self.spool.inbox / drop_name)
        return job_id

    def queue_full(self) -> int | None:
        """How many jobs wait, when that is [api] max_queued_jobs or more."""
        waiting = len(self.daemon.queued())
        return waiting if waiting >= self.settings.api.max_queued_jobs else None

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
            "spool": str(self.spool.root),
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
        return model_entries(self.settings, self.daemon.workers, self._downloads.all())

    def download_model(self, repo: str, revision: str = "main") -> dict:
        """Starts downloading a hub repo into the hub cache in the background (registered
        as a model when complete; daemon/downloads.py), or answers the download of it that
        runs. Returns its description; DownloadRefused (code bad_request, offline, conflict)."""
        return self._downloads.start(repo, revision)

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
        return catalog(self.settings.voice_book(), language)

    def languages(self) -> list[dict]:
        return language_counts(self.settings.voice_book())


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
