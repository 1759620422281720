"""How long a job will take, from past runs on this host (daemon/outbox/history.py keeps them).

A video job's run is split into stages, each measured in past runs of its model
(status.json's `result.seconds`, `seconds_per_step`, `model.load_seconds`) and scaled by the
job's own work: denoising by pixels × frames × steps, decoding and encoding by pixels ×
frames, loading only when no worker holds the model. What no stage accounts for (the
worker's start, delivering the results) is added as measured. The runs it scales from are
those nearest the job's size, so a model run at several sizes is estimated from the closest.
Kinds without such sizes (speech, slides, talking heads) take the median of their recent runs.

A running job's remaining time (`RunPlan.remaining`) is what is left of its current stage
(the worker's measured step rate where it has one, else the stage's estimate less the time
spent in it) plus every stage still to come, and never under MIN_REMAINING while it runs.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

# What sizes a video job: the params the pipeline call takes (contract: pipeline/diffusion.py).
SIZE_KEYS = ("width", "height", "num_frames", "num_inference_steps")
NEAREST = 5  # past runs, of the sizes closest to the job's, that an estimate scales from
SIZE_SPREAD = math.log(2)  # ... each at most twice as far off in size as the closest one
MIN_REMAINING = 1.0  # seconds: a job still running is never "0 s left"


@dataclass(frozen=True)
class Measured:
    """One completed video run: its work and its seconds per stage."""

    pixels: int  # width × height × frames
    steps: int
    denoising: float
    decoding: float
    encoding: float
    other: float  # the run's seconds no stage accounts for

    @classmethod
    def of(cls, result: dict, run_seconds: float) -> Measured | None:
        """From a completed status's `result` (None for a run without sizes and stage times)."""
        used, seconds = (v if isinstance(v, dict) else {} for v in (result.get("params"), result.get("seconds")))
        sizes = [used.get(k) for k in SIZE_KEYS]
        both = seconds.get("denoise_and_decode")
        if not all(isinstance(v, int) and v > 0 for v in sizes) or not isinstance(both, (int, float)):
            return None
        width, height, frames, steps = sizes
        decoding = seconds.get("decode")
        if not isinstance(decoding, (int, float)):  # a run from before `decode` was timed on its own
            per_step = result.get("seconds_per_step")
            decoding = both - per_step * steps if isinstance(per_step, (int, float)) else 0.0
        decoding = min(max(0.0, decoding), both)
        load, encoding = _number(seconds.get("load_model")), _number(seconds.get("encode"))
        return cls(width * height * frames, steps, both - decoding, decoding, encoding,
                   max(0.0, run_seconds - load - both - encoding))


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and value > 0 else 0.0


@dataclass(frozen=True)
class RunPlan:
    """A job's estimated seconds per stage, in order; `other` is counted before its first stage."""

    stages: tuple[tuple[str, float], ...]
    other: float
    basis: int  # how many past runs it rests on

    @property
    def total(self) -> float:
        return round(self.other + sum(seconds for _, seconds in self.stages), 3)

    def remaining(self, stage: str | None, stage_eta: float | None, in_stage: float, running: float) -> float:
        """Seconds left of a job `running` seconds into its run and `in_stage` into `stage`,
        whose worker measured `stage_eta` seconds left of that stage (None: it cannot yet)."""
        names = [name for name, _ in self.stages]
        if stage not in names:  # before its first stage, or a kind measured as a whole run
            left = max(self.total - running, stage_eta or 0.0)
        else:
            index = names.index(stage)
            current = stage_eta if stage_eta is not None else self.stages[index][1] - in_stage
            left = max(0.0, current) + sum(seconds for _, seconds in self.stages[index + 1:])
        return round(max(MIN_REMAINING, left), 3)


def plan_run(params: dict, runs: Sequence, load: float | None) -> RunPlan | None:
    """The plan of a job with `params` from the past runs of its kind and model (history.Past,
    most recent last), loading its model first when `load` is not None (its estimate)."""
    measured = [p for p in runs if p.measured is not None]
    size = job_size(params, runs)
    if measured and size is not None:
        pixels, steps = size

        def distance(p) -> float:
            return abs(math.log(pixels / p.measured.pixels)) + abs(math.log(steps / p.measured.steps))

        # The closest sizes first, the most recent among equals; none much farther than the closest.
        ordered = sorted(reversed(measured), key=distance)
        nearest = [p for p in ordered if distance(p) <= distance(ordered[0]) + SIZE_SPREAD][:NEAREST]

        def scaled(stage: str, by_steps: bool) -> float:
            """The stage's median seconds per pixel (and step) in those runs, times the job's."""
            def work(p_pixels: int, p_steps: int) -> int:
                return p_pixels * (p_steps if by_steps else 1)

            rate = statistics.median(getattr(p.measured, stage) / work(p.measured.pixels, p.measured.steps) for p in nearest)
            return round(rate * work(pixels, steps), 3)

        stages = (("loading_model", round(load or 0.0, 3)), ("denoising", scaled("denoising", True)),
                  ("decoding", scaled("decoding", False)), ("encoding", scaled("encoding", False)))
        return RunPlan(stages, round(statistics.median(p.measured.other for p in nearest), 3), len(nearest))
    whole = [p.run_seconds for p in runs if p.run_seconds is not None]
    if not whole:
        return None
    return RunPlan((("run", round(statistics.median(whole) + (load or 0.0), 3)),), 0.0, len(whole))


def job_size(params: dict, runs: Sequence) -> tuple[int, int] | None:
    """(pixels × frames, steps) of a job; a size it leaves to the model is the one the model's
    past runs used when their jobs left it too (else the latest run's)."""
    values = []
    for key in SIZE_KEYS:
        value = params.get(key)
        if not isinstance(value, int):
            value = next((p.sizes[key] for p in reversed(runs) if key in p.defaulted and key in p.sizes), None) \
                or next((p.sizes[key] for p in reversed(runs) if key in p.sizes), None)
        if not isinstance(value, int) or value <= 0:
            return None
        values.append(value)
    width, height, frames, steps = values
    return width * height * frames, steps


class StageClock:
    """A running job's plan, its current stage and when that began, and the worker's last
    measure of what is left of it: the job's remaining time at any moment (the daemon
    running it puts it in the status's `eta_seconds` at each progress report)."""

    def __init__(self, plan: RunPlan | None):
        self.plan = plan
        self.started = self.stage_started = self.reported = time.monotonic()
        self.stage: str | None = None
        self.stage_eta: float | None = None  # the worker's, for its current stage, when reported

    def report(self, stage: str | None, stage_eta: float | None) -> float | None:
        """A progress report of the worker; returns the job's remaining seconds."""
        now = time.monotonic()
        if stage != self.stage:
            self.stage, self.stage_started = stage, now
        self.stage_eta, self.reported = stage_eta, now
        return self.eta(now)

    def eta(self, now: float | None = None) -> float | None:
        """The job's remaining seconds now (None: no past run, and the worker cannot tell)."""
        now = time.monotonic() if now is None else now
        stage_left = None if self.stage_eta is None else max(0.0, self.stage_eta - (now - self.reported))
        if self.plan is None:  # no past run: what the worker measured of its stage, if anything
            return None if stage_left is None else round(max(MIN_REMAINING, stage_left), 3)
        return self.plan.remaining(self.stage, stage_left, now - self.stage_started, now - self.started)
