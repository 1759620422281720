"""Every crash point on the bucket spool's path, walked with real processes on a real
SeaweedFS: a runner (`python -m daemon.bucket.runner`) armed with VIDSPOOL_TEST_CRASH_AT
SIGKILLs itself right after that step is durable; the next runner (the same host
restarting, or another host once the dead one's heartbeat lapsed) finishes. Then: one
status per job in its one right end state, never a status going back while they ran,
the results there, no hint, marker, intent or attempt result left, the job run to its end
at least once and no two runs of it overlapping (docs/bucket-spool.md)."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from contract.status import FINAL_STATES

from daemon.bucket import keys
from daemon.bucket.status_io import read_status
from daemon.spool.crashpoints import ENV, POINTS
from tests.s3servers import CREDENTIALS, S3Bucket
from tests.support import REPO, base_env

MEDIA = {name: f"the {name} clip".encode() for name in ("bad", "fox", "stop")}
EXPECTED = {"bad": "failed", "fox": "completed", "stop": "canceled"}
LEASE_SECONDS = 1.5
KILL_MID_RUN = "kill mid-run"

# Runners in turn: (host, the crash point it is armed with); the last is never armed.
WALKS: dict[str, list[tuple[str, str | None]]] = {
    **{spec: [("h1", spec), ("h1", None)] for spec in (
        "stage.intake_made", "stage.intake_made:2", "accept.invalid_final", "accept.id_reserved",
        "accept.id_reserved:2", "stage.media_moved", "stage.media_moved:2", "accept.queued", "accept.queued:2",
        "stage.claimed", "stage.claimed:2", "cancel.marked", "cancel.file_handled", "claim.moved",
        "attempt.running", "commit.final_written", "publish.results_moved", "publish.status_written",
        "publish.removing")},
    **{spec: [("h1", "claim.moved"), ("h1", spec), ("h1", None)] for spec in ("requeue.moved", "requeue.cleared")},
    "takeover.moved": [("h1", "claim.moved"), ("h2", "takeover.moved"), ("h2", None)],
    "takeover of a running job": [("h1", "attempt.running"), ("h2", None)],
    "takeover of a committed job": [("h1", "commit.final_written"), ("h2", None)],
    "takeover of a half-accepted drop": [("h1", "stage.media_moved:2"), ("h2", None)],
    # Killed by the test while the job runs (after its first progress write), not at a point.
    "restart after a kill mid-run": [("h1", KILL_MID_RUN), ("h1", None)],
    "takeover after a kill mid-run": [("h1", KILL_MID_RUN), ("h2", None)],
}
# Folder-spool points that are one step with another on a bucket (the design's table).
SAME_STEP_AS = {
    "accept.job_written": "accept.id_reserved", "accept.status_queued": "accept.id_reserved",
    "accept.invalid_published": "accept.invalid_final", "attempt.marked": "claim.moved",
    "commit.renamed": "commit.final_written", "publish.inputs_moved": "stage.media_moved",
    "publish.retired": "publish.status_written", "cancel.claimed": "cancel.marked",
}
# No drain on the runner yet: the daemon's drain comes with its integration.
NOT_YET = {"drain.killed"}


def test_the_walk_covers_every_crash_point():
    walked = {spec.split(":")[0] for runs in WALKS.values() for _, spec in runs if spec and spec != KILL_MID_RUN}
    assert walked | set(SAME_STEP_AS) | NOT_YET == set(POINTS)
    assert set(SAME_STEP_AS.values()) <= walked


def drop_checksum_job(store, name: str, media: bytes, seconds: float, kind: str = "checksum") -> None:
    """A user's drop of a `checksum` job (the runner's): its input first, the job file last."""
    store.put(f"inbox/{name}.bin", media)
    job = {"kind": kind, "inputs": {"clip": f"{name}.bin"}, "params": {"seconds": seconds, "text": name}}
    store.put(f"inbox/{name}.json", json.dumps(job).encode())


def expected_digest(name: str, media: bytes) -> bytes:
    """The result a `checksum` job dropped by drop_checksum_job makes."""
    return f"{hashlib.sha256(media).hexdigest()}  {name}.bin\n{name}\n".encode()


def spool_leftovers(store) -> list[str]:
    """Hints, markers, intents, drops and attempt results still in the spool."""
    return [e.key for e in store.list() if e.key.split("/")[0] in ("inbox", "intake", "queue", "active", "work")]


def drop_jobs(store) -> None:
    """bad (an invalid kind), fox (runs), stop (canceled by an ID.cancel dropped with it)."""
    for name in MEDIA:
        drop_checksum_job(store, name, MEDIA[name], 0.3, kind="nope" if name == "bad" else "checksum")
    store.put("inbox/stop.cancel", b"")


class StatusWatch:
    """Reads every status over and over while the runners run: a status must never go back
    (its seq never falls; an end state never changes)."""

    def __init__(self, store, job_ids):
        self.store, self.job_ids, self.seen, self.faults = store, list(job_ids), {}, []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self) -> None:
        while not self.stopping.wait(0.05):
            for job_id in self.job_ids:
                try:
                    held = read_status(self.store, job_id)
                except Exception:  # noqa: BLE001 - a read in flight at the end; the next one counts
                    continue
                if held is not None:
                    self.check(job_id, held.status)

    def check(self, job_id: str, status: dict) -> None:
        now = (status["lease"]["seq"], status["state"])
        before = self.seen.get(job_id)
        if before is not None and (now[0] < before[0] or (before[1] in FINAL_STATES and now[1] != before[1])):
            self.faults.append(f"{job_id}: {before} → {now}")
        self.seen[job_id] = now

    def stop(self) -> list[str]:
        self.stopping.set()
        self.thread.join(10)
        return self.faults


def start_runner(bucket: S3Bucket, host: str, runs_log: Path, err, crash_at: str | None = None,
                 max_seconds: float = 60, port: int | None = None) -> subprocess.Popen:
    """`python -m daemon.bucket.runner` as `host` on the bucket (through `port`, e.g. a
    proxy's, else the server's own), its stderr into `err`."""
    endpoint = bucket.config(port).endpoint_url
    env = base_env(AWS_ACCESS_KEY_ID=CREDENTIALS.access_key_id, AWS_SECRET_ACCESS_KEY=CREDENTIALS.secret_access_key)
    if crash_at:
        env[ENV] = crash_at
    command = [sys.executable, "-m", "daemon.bucket.runner", "--endpoint", endpoint,
               "--bucket", bucket.name, "--prefix", bucket.prefix, "--host", host, "--runs-log", str(runs_log),
               "--poll", "0.1", "--lease-seconds", str(LEASE_SECONDS), "--sweep-seconds", "1", "--exit-when-settled",
               "--max-seconds", str(max_seconds)]
    return subprocess.Popen(command, env=env, cwd=REPO, stderr=err, stdout=subprocess.DEVNULL)


def stop_runners(children: dict[str, subprocess.Popen], logs: dict) -> None:
    """Kills every runner still running (a stopped one too) and closes their logs."""
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGCONT)
            child.kill()
            child.wait()
    for log in logs.values():
        log.close()


def run(bucket: S3Bucket, host: str, spec: str | None, runs_log: Path) -> tuple[int, str]:
    """One runner to its end (or its kill): its exit status and its stderr."""
    with tempfile.TemporaryFile("w+") as err:
        child = start_runner(bucket, host, runs_log, err, None if spec == KILL_MID_RUN else spec)
        try:
            if spec == KILL_MID_RUN:
                deadline = time.monotonic() + 30
                while not (runs_log.exists() and '"start"' in runs_log.read_text()) and time.monotonic() < deadline:
                    time.sleep(0.02)
                child.send_signal(signal.SIGKILL)
            rc = child.wait(90)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        err.seek(0)
        return rc, err.read()


def check_runs(runs_log: Path, statuses: dict[str, dict]) -> list[dict]:
    """fox ran to its end at least once, never two runs at a time, no more runs than
    attempts; no other job ran. The runs, in the order they started."""
    runs = read_runs(runs_log)
    assert set(runs) == {"fox"}, runs
    check_job_runs(runs["fox"], statuses["fox"])
    return runs["fox"]


def read_runs(runs_log: Path) -> dict[str, list[dict]]:
    """job id → its runs ({host, start, end?} each), in the order they started."""
    runs: dict[tuple[str, int], dict] = {}
    for line in runs_log.read_text().splitlines() if runs_log.exists() else []:
        event = json.loads(line)
        runs.setdefault((event["job"], event["epoch"]), {"host": event["host"]})[event["event"]] = event["t"]
    by_job: dict[str, list[dict]] = {}
    for (job_id, _), one in sorted(runs.items(), key=lambda item: item[1]["start"]):
        by_job.setdefault(job_id, []).append(one)
    return by_job


def check_job_runs(runs: list[dict], status: dict) -> None:
    """The last run ended; each earlier one ended (or was killed) before the next started;
    no more runs than the status counts attempts."""
    assert "end" in runs[-1], runs
    for earlier, later in zip(runs, runs[1:]):
        assert earlier.get("end", later["start"]) <= later["start"], runs
    assert len(runs) <= status["attempt"], (runs, status["attempt"])


@pytest.mark.parametrize("walk", list(WALKS))
def test_a_kill_at_each_step_is_finished_by_the_next_runner(walk, seaweedfs, tmp_path):
    bucket = S3Bucket(seaweedfs, seaweedfs.new_bucket())
    store = bucket.store()
    drop_jobs(store)
    watch = StatusWatch(bucket.store(), EXPECTED)
    runs_log = tmp_path / "runs.jsonl"
    try:
        for host, spec in WALKS[walk]:
            rc, stderr = run(bucket, host, spec, runs_log)
            expected = -signal.SIGKILL if spec else 0  # an armed runner must have reached its point
            assert rc == expected, f"{host} armed {spec}: rc {rc}\n{stderr[-3000:]}"
    finally:
        faults = watch.stop()
    assert faults == [] and set(watch.seen) == set(EXPECTED)

    statuses = {j: read_status(store, j).status for j in EXPECTED}
    assert {j: s["state"] for j, s in statuses.items()} == EXPECTED
    assert statuses["bad"]["error"]["code"] == "invalid_job"
    assert spool_leftovers(store) == []
    assert sorted(e.key.split("/")[1] for e in store.list("outbox") if e.key.endswith("/status.json")) == sorted(EXPECTED)
    for name in EXPECTED:
        assert store.get(keys.input_key(name, f"{name}.bin"))[0] == MEDIA[name]
    digest = store.get(keys.result_key("fox", "digest.txt"))[0]
    assert digest == expected_digest("fox", MEDIA["fox"])
    assert statuses["fox"]["result"]["files"][0]["sha256"] == hashlib.sha256(digest).hexdigest()
    fox_runs = check_runs(runs_log, statuses)
    if any(spec == KILL_MID_RUN for _, spec in WALKS[walk]):
        assert len(fox_runs) == 2 and "end" not in fox_runs[0] and statuses["fox"]["attempt"] == 2
