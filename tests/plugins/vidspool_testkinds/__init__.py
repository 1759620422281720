"""A third-party kind for the tests, registered through the `vidspool.kinds` entry point
(see the dist-info folder beside this package): it records every execution on disk, so
tests can count how often each job really ran, when, and which run's result was published
(tests/support.py: probe_runs, assert_exactly_once)."""

from __future__ import annotations

import builtins
import json
import os
import time

from pydantic import BaseModel, ConfigDict

from pipeline.kinds.base import InputSpec, KindSpec


class ProbeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = 0.0  # how long the job runs, in steps of `step_seconds`
    step_seconds: float = 0.05
    marker_dir: str | None = None  # where executions are recorded (and journaled, in runs.jsonl)
    crash: bool = False  # the worker process dies hard mid-job
    crash_once: str | None = None  # a file: the first attempt creates it and dies hard mid-job
    fail: str | None = None  # an ErrorCode to fail with
    journal: str | None = None  # a file that gets a JSON line at start, every step and end (default: marker_dir's runs.jsonl)
    check_raises: str | None = None  # a builtin exception the kind's check raises (a buggy plugin)


def run(ctx, params: ProbeParams) -> None:
    from pipeline.errors import JobError

    run_id = f"{os.getpid()}-{time.time_ns()}"  # this execution (a paused attempt reruns in the same worker)
    if params.marker_dir:
        start = os.path.join(params.marker_dir, f"{ctx.job_id}.start.{os.getpid()}.{time.time_ns()}")
        open(start, "w").close()
    steps = max(1, int(params.seconds / params.step_seconds)) if params.seconds else 1
    _journal(params, ctx, run_id, "start")
    for i in range(steps):
        if params.seconds:
            time.sleep(params.step_seconds)
        if params.crash and i == steps // 2:
            os._exit(17)
        if params.crash_once and i == steps // 2 and _first_time(params.crash_once):
            os._exit(17)
        _journal(params, ctx, run_id, "step")
        ctx.progress(100 * (i + 1) / steps, stage="probing", step=i + 1, total_steps=steps)
    if params.fail:
        raise JobError(params.fail, f"asked to fail with {params.fail}")
    data = ctx.input("data")
    with open(ctx.output_path("probe.txt"), "w") as f:
        f.write(f"{ctx.job_id} ran on {ctx.device} pid {os.getpid()} run {run_id}\n")
        if data is not None:
            f.write(f"data: {data.stat().st_size} bytes\n")
    ctx.publish("probe.txt")
    _journal(params, ctx, run_id, "end")
    if params.marker_dir:
        # One line per finished execution; O_APPEND keeps concurrent writers' lines whole.
        fd = os.open(os.path.join(params.marker_dir, "executions.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{ctx.job_id}\n".encode())
        os.close(fd)


def check(params: ProbeParams, inputs) -> None:
    if params.check_raises:
        raise getattr(builtins, params.check_raises)("probe: check_raises asked for it")


def _first_time(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def _journal(params: ProbeParams, ctx, run_id: str, event: str) -> None:
    journal = params.journal or (os.path.join(params.marker_dir, "runs.jsonl") if params.marker_dir else None)
    if journal:
        line = json.dumps({"job": ctx.job_id, "run": run_id, "event": event, "host": ctx.host,
                           "attempt": ctx.attempt, "pid": os.getpid(), "t": time.time()})
        fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (line + "\n").encode())
        os.close(fd)


KIND = KindSpec(
    name="probe",
    params=ProbeParams,
    run=run,
    check=check,
    inputs=(InputSpec("data", many=False), InputSpec("extra", many=True)),
    main_result="probe.txt",
    description="test kind: sleeps, crashes or fails on request and records executions",
)
