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
import secrets
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

from contract.kinds import KindSpec
from contract.status import LIST_FIELDS, STATES
from contract.voices import catalog, language_counts
from daemon import __version__
from daemon.config import Settings
from daemon.events import EventLog
from daemon.fsops import atomic_write_bytes, read_json
from daemon.modelview import model_entries
from daemon.quarantine import corrupt_count
from daemon.spool import STATUS, QueueName, Spool, is_valid_job_id, sanitize_job_id
from daemon.status import StatusWriter


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
        doc = self.daemon.statuses.current(job_id)
        if doc is not None and doc.get("state") == "queued":
            doc = {**doc, "queue_position": self.queue_position(job_id)}
        return doc

    def ended_status_bytes(self, job_id: str) -> bytes | None:
        """status.json's bytes as they are, for a job this daemon does not run and that is
        not queued (no queue_position to add); None otherwise, or if there is none."""
        if not is_valid_job_id(job_id) or self.daemon.statuses.live(job_id) is not None:
            return None
        try:
            raw = (self.spool.job_outbox(job_id) / STATUS).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return None if b'"state": "queued"' in raw else raw

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
            doc = self.daemon.statuses.current(name)
            if doc is not None and (doc.get("labels") or {}).get(key) == value:
                yield doc

    def result_file(self, job_id: str, name: str | None) -> tuple[Path, str] | None:
        """A file the job's status lists as a result (None: its main result), looked up in
        its outbox folder only: no path from a request reaches the filesystem."""
        if not is_valid_job_id(job_id):
            return None
        doc = read_json(self.spool.job_outbox(job_id) / STATUS) or {}
        files = {f["name"]: f for f in ((doc.get("result") or {}).get("files") or []) if isinstance(f, dict)}
        if name is None:
            kind = self.kinds.get(doc.get("kind") or "")
            name = kind.main_result if kind and kind.main_result in files else next(iter(files), None)
        if name not in files:
            return None
        path = self.spool.job_outbox(job_id) / files[name]["name"]
        return (path, files[name].get("media_type") or "application/octet-stream") if path.is_file() else None

    # -- submitting and canceling -----------------------------------------------------------
    def new_submission(self) -> tuple[str, Path]:
        """A staging folder under a dot-name in the inbox, and its token."""
        token = secrets.token_hex(6)
        staging = self.spool.inbox / f".api-{token}.part"
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

    def queue(self) -> dict:
        return {"devices": self.devices(),
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
        return model_entries(self.settings, self.daemon.workers)

    def has_model(self, name: str) -> bool:
        return name in self.settings.models

    def load_model(self, name: str) -> str:
        """The device that loads it. KeyError: not in the registry; RuntimeError: no worker."""
        return self.daemon.load_model(name)

    def unload_model(self, name: str) -> list[str]:
        return self.daemon.unload_model(name)

    def voices(self, language: str | None = None) -> list[dict]:
        return catalog(self.settings.voice_book(), language)

    def languages(self) -> list[dict]:
        return language_counts(self.settings.voice_book())
