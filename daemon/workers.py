"""Worker processes: spawn, talk, reap, restart (the arbiter's side of the channel; its
messages are contract/messages.py's)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from contract.messages import ToWorker
from daemon.devices import worker_env
from daemon.outbox.estimates import StageClock

log = structlog.get_logger()
_spawn = multiprocessing.get_context("spawn")


@dataclass
class RunningJob:
    job_id: str
    job: dict
    job_dir: object
    attempt: int
    started: float = field(default_factory=time.monotonic)
    cancel_sent: bool = False
    cancel_sent_at: float = 0.0
    stop_reason: str = "cancel"  # why a stop was sent: "cancel", or "pause" (requeue, attempt not counted)
    lost: bool = False
    clock: StageClock | None = None  # its estimated stages, for the status's eta_seconds


class WorkerHandle:
    """One worker process on one device, and the job it runs."""

    def __init__(self, index: int, device: str, model_memory_gb: float | str = "auto",
                 compile_cache_dir: Path | None = None):
        self.index = index
        self.device = device
        self.model_memory_gb = model_memory_gb
        self.compile_cache_dir = compile_cache_dir
        # What the worker last reported holding (pipeline/models/resident.py describe()).
        self.model_state: dict = {}
        self.loading: set[str] = set()  # load requests sent and not yet answered
        self.warm_imports = False  # import torch and diffusers at start (there are models to serve)
        self.process = None
        self.conn = None
        self.ready = False
        self.job: RunningJob | None = None
        self.restarts = 0
        self.crash_streak = 0  # exits in a row without a healthy minute between
        self.started_at = 0.0
        self.pid: int | None = None
        self.kill_reason: str | None = None  # why we killed it (timeout, shutdown)
        self.next_start = 0.0
        self.jobs_done = 0
        self.last_heard = 0.0  # monotonic time of the last message (liveness: [workers] stall_seconds)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    @property
    def idle(self) -> bool:
        return self.ready and self.job is None and self.alive

    def start(self) -> None:
        from pipeline import worker

        parent, child = _spawn.Pipe(duplex=True)
        env = worker_env(self.device)
        if self.compile_cache_dir is not None:
            env["VIDSPOOL_COMPILE_CACHE"] = str(self.compile_cache_dir.resolve())
        self.process = _spawn.Process(
            target=worker.main, args=(child, self.device, env, self.model_memory_gb, self.warm_imports),
            name=f"vidspool-worker-{self.device}", daemon=True,
        )
        self.process.start()
        self.started_at = time.monotonic()
        child.close()
        self.conn = parent
        self.pid = self.process.pid
        self.ready = False
        self.kill_reason = None
        log.info("worker.started", device=self.device, pid=self.pid)

    def heard(self) -> None:
        self.last_heard = time.monotonic()

    def send(self, msg: ToWorker) -> bool:
        try:
            self.conn.send(msg)
            return True
        except (BrokenPipeError, OSError):
            return False

    def kill(self, reason: str) -> None:
        self.kill_reason = reason
        if self.process is not None and self.process.pid:
            try:
                os.kill(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def reap(self) -> int | None:
        """Joins a dead process; returns its exit code (negative: the signal)."""
        if self.process is None:
            return None
        self.process.join(timeout=1)
        code = self.process.exitcode
        try:
            self.conn.close()
        except OSError:
            pass
        self.process.close()
        self.process = None
        self.conn = None
        self.ready = False
        self.model_state = {}
        self.loading = set()
        return code

    @property
    def models(self) -> list[str]:
        return [m["name"] for m in self.model_state.get("models", [])]

    def holds(self, model: str | None) -> bool:
        return model is not None and model in self.models

    def describe(self) -> dict:
        return {
            "device": self.device,
            "pid": self.pid if self.alive else None,
            "alive": self.alive,
            "ready": self.ready,
            "busy": self.job is not None,
            "job": self.job.job_id if self.job else None,
            "restarts": self.restarts,
            "jobs_done": self.jobs_done,
            "models": self.models,
            "model_loads": self.model_state.get("model_loads", 0),
            "loading": sorted(self.loading),
            "memory": self.model_state.get("memory"),
            "models_bytes": self.model_state.get("models_bytes", 0),
            "model_budget_bytes": self.model_state.get("budget_bytes"),
        }
