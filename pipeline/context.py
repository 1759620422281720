"""JobContext: what a running kind sees of the world (inputs, outputs, progress, cancel)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from threading import Event

from contract.errors import ErrorCode, JobCanceled, JobError
from contract.messages import Log, Progress
from contract.voices import VoiceBook
from pipeline.preview import PreviewWriter


def check_frame_budget(frames: int, width: int, height: int, limit: int | None) -> None:
    if limit is not None and frames * width * height > limit:
        raise JobError(
            ErrorCode.INVALID_JOB,
            f"{frames} frames of {width}x{height} is {frames * width * height} frame pixels, "
            f"over the limit of {limit} ([limits] max_frame_pixels)",
        )


PROGRESS_INTERVAL_SECONDS = 0.25  # the most often a counted loop reports its progress


class StepReporter:
    """Progress of a counted loop (frames, sentences): sent on the first call, then at most
    every PROGRESS_INTERVAL_SECONDS and always for the last step; in between, only the
    cancel check. Make one per loop."""

    def __init__(self, ctx: JobContext):
        self.ctx = ctx
        self._last = None

    def __call__(self, percent: float, done: int, total: int, stage: str, message: str) -> None:
        now = time.monotonic()
        if self._last is None or now - self._last >= PROGRESS_INTERVAL_SECONDS or done == total:
            self._last = now
            self.ctx.progress(percent, stage=stage, message=message, step=done, total_steps=total)
        else:
            self.ctx.check_canceled()


class StageSeconds(dict):
    """Seconds per stage of a job, for `result.seconds`: `lap(stage)` books the time since
    the previous lap (or since made) to `stage`."""

    def __init__(self):
        super().__init__()
        self._clock = time.monotonic()

    def lap(self, stage: str) -> None:
        now = time.monotonic()
        self[stage] = round(now - self._clock, 3)
        self._clock = now


class JobContext:
    """Passed to `KindSpec.run`. Progress goes to the daemon; outputs go to `results_dir`.

    Write each output with `output_path(name)` and finish it with `publish(name)`:
    the file is written under a temporary name and renamed, so a reader never sees it
    half-written.
    """

    def __init__(
        self,
        job_id: str,
        job: dict,
        inputs: dict[str, list[Path]],
        results_dir: Path,
        device: str,
        send: Callable[[object], None],
        cancel_event: Event,
        limits: dict | None = None,
        host: str | None = None,
        attempt: int = 1,
        models=None,
        model_name: str | None = None,
        model_config: dict | None = None,
        voices: VoiceBook | None = None,
        preview: dict | None = None,
    ):
        self.job_id = job_id
        self.job = job
        self.inputs = inputs
        self.results_dir = results_dir
        self.device = device
        self._send = send
        self._cancel = cancel_event
        self.limits = limits or {}
        self.host = host
        self.attempt = attempt
        # The worker's ModelStore (warm pipelines) and the job's registry entry, if any.
        self.models = models
        self.model_name = model_name
        self.model_config = model_config or {}
        # The host's voices ([voices.*], [registry] dir), from this job's run message.
        self.voices = voices or VoiceBook()
        # outbox/<id>/preview.jpg while the job runs (off unless the run message asks for it).
        self.preview = PreviewWriter(**(preview or {}), log=self.log)
        self._progress = 0.0
        self._stage: str | None = None
        self._stage_started = time.monotonic()
        self._stage_step = 0  # the step at which the current stage was first reported
        self.outputs: list[str] = []
        self.meta: dict = {}

    # -- inputs -------------------------------------------------------------
    def input(self, name: str) -> Path | None:
        paths = self.inputs.get(name) or []
        return paths[0] if paths else None

    def input_list(self, name: str) -> list[Path]:
        return list(self.inputs.get(name) or [])

    # -- progress and cancel ---------------------------------------------------
    @property
    def canceled(self) -> bool:
        return self._cancel.is_set()

    def check_canceled(self) -> None:
        if self._cancel.is_set():
            raise JobCanceled()

    def progress(
        self,
        percent: float,
        stage: str | None = None,
        message: str | None = None,
        step: int | None = None,
        total_steps: int | None = None,
        eta_seconds: float | None = None,
    ) -> None:
        """Report progress (0–100, never decreasing) and check for cancel."""
        self._progress = max(self._progress, min(100.0, float(percent)))
        if stage and stage != self._stage:
            # A stage first reported at step N (its first steps already done) is timed from
            # here: its rate is known from the next step on.
            self._stage, self._stage_started, self._stage_step = stage, time.monotonic(), step or 0
        if eta_seconds is None and step and total_steps and step < total_steps and step > self._stage_step:
            per_step = (time.monotonic() - self._stage_started) / (step - self._stage_step)
            eta_seconds = round(per_step * (total_steps - step), 2)
        self._send(Progress(self.job_id, round(self._progress, 1), self._stage, message, step, total_steps, eta_seconds,
                            self.preview.take_step()))
        self.check_canceled()

    def check_frame_budget(self, frames: int, width: int, height: int) -> None:
        """Refuses a video larger than [limits] max_frame_pixels before rendering it."""
        check_frame_budget(frames, width, height, self.limits.get("max_frame_pixels"))

    def log(self, event: str, **fields) -> None:
        level = fields.pop("level", "info")
        self._send(Log(event, level, self.job_id, fields))

    # -- outputs -------------------------------------------------------------
    def output_path(self, name: str) -> Path:
        """A temporary path to write result `name` to; call publish(name) when done."""
        return self.results_dir / f".{name}.tmp"

    def publish(self, name: str) -> Path:
        tmp = self.output_path(name)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        final = self.results_dir / name
        os.replace(tmp, final)
        if name not in self.outputs:
            self.outputs.append(name)
        return final
