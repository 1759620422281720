"""The worker channel: every message the daemon and a worker send each other over their
pipe, as frozen dataclasses (pickled by multiprocessing; both ends import this module).

daemon → worker: RunJob, CancelJob, LoadModel, UnloadModel, Stop.
worker → daemon: Ready, Progress, Heartbeat, Log, Done, Failed, Canceled,
ModelsChanged, LoadFailed. `model_state` (what the worker holds, ModelStore.describe()) rides
on Ready, on every job's end and on ModelsChanged; the arbiter places jobs by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


# -- daemon → worker ------------------------------------------------------------------
@dataclass(frozen=True)
class RunJob:
    job_id: str
    job: dict[str, Any]  # the validated job (status.json's `job`)
    inputs: dict[str, list[str]]  # input name → absolute paths in the job folder
    host: str
    attempt: int
    results_dir: str  # where the worker delivers its results (in the job folder)
    scratch_dir: str  # local folder where it makes them
    limits: dict[str, Any]
    model_config: dict[str, Any] | None = None  # the registry entry of the job's model
    voices: dict[str, dict] = field(default_factory=dict)  # [voices.*] from config
    model_roots: tuple[str, ...] = ()  # folders a job may name a model in by path
    # Live previews ([preview]): {"path": outbox/<id>/preview.jpg, "every_steps", "max_side"}; empty: off.
    preview: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CancelJob:
    job_id: str


@dataclass(frozen=True)
class LoadModel:
    model: str
    config: dict[str, Any]


@dataclass(frozen=True)
class UnloadModel:
    model: str


@dataclass(frozen=True)
class Stop:
    pass


# -- worker → daemon ------------------------------------------------------------------
@dataclass(frozen=True)
class Ready:
    pid: int
    device: str
    kinds: tuple[str, ...]
    model_state: dict[str, Any]


@dataclass(frozen=True)
class Progress:
    job_id: str
    progress: float | None = None
    stage: str | None = None
    message: str | None = None
    step: int | None = None
    total_steps: int | None = None
    eta_seconds: float | None = None  # left of the current stage; the daemon's status counts the stages after it
    preview_step: int | None = None  # a new preview.jpg shows this step (or frame)

    def update(self) -> dict[str, Any]:
        """The status keys this message sets (contract.status.PROGRESS_KEYS, and preview_step,
        which the daemon turns into the status's `preview`)."""
        return {k: v for k, v in vars(self).items() if k != "job_id"}


@dataclass(frozen=True)
class Heartbeat:
    """Sent from a thread of the worker every few seconds while it runs a job, so a long
    step that still runs is told from a hung worker ([workers] stall_seconds)."""

    job_id: str


@dataclass(frozen=True)
class Log:
    event: str
    level: str = "info"
    job_id: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Done:
    job_id: str
    result: dict[str, Any]
    model_state: dict[str, Any]


@dataclass(frozen=True)
class Failed:
    job_id: str
    error: dict[str, Any]  # JobError.to_status()
    model_state: dict[str, Any]


@dataclass(frozen=True)
class Canceled:
    job_id: str
    model_state: dict[str, Any]


@dataclass(frozen=True)
class ModelsChanged:
    model_state: dict[str, Any]


@dataclass(frozen=True)
class LoadFailed:
    model: str
    error: dict[str, Any]


ToWorker = RunJob | CancelJob | LoadModel | UnloadModel | Stop
FromWorker = Ready | Progress | Heartbeat | Log | Done | Failed | Canceled | ModelsChanged | LoadFailed
JobEnd = Done | Failed | Canceled
