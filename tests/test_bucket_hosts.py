"""Several hosts on one bucket spool, as real processes on a real SeaweedFS: every job runs
to its end exactly once among them, with no coordinator, also when one host is SIGKILLed
while it works and the others take its jobs over (docs/bucket-spool.md)."""

from __future__ import annotations

import signal
import time

from daemon.bucket import keys
from daemon.bucket.status_io import read_status
from tests.s3servers import S3Bucket
from tests.test_bucket_crash_walk import (StatusWatch, check_job_runs, drop_checksum_job, expected_digest, read_runs,
                                          spool_leftovers, start_runner, stop_runners)

JOBS = [f"j{n:02d}" for n in range(12)]


def test_three_hosts_run_every_job_once_and_take_over_a_killed_one(seaweedfs, tmp_path):
    bucket = S3Bucket(seaweedfs, seaweedfs.new_bucket())
    store = bucket.store()
    for job_id in JOBS:
        drop_checksum_job(store, job_id, job_id.encode() * 100, 0.2)
    watch = StatusWatch(bucket.store(), JOBS)
    runs_log = tmp_path / "runs.jsonl"
    logs = {h: open(tmp_path / f"{h}.log", "w+") for h in ("h1", "h2", "h3")}
    children = {h: start_runner(bucket, h, runs_log, logs[h], max_seconds=120) for h in logs}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(r["host"] == "h2" for rs in read_runs(runs_log).values()
                                                       for r in rs):
            time.sleep(0.02)
        children["h2"].send_signal(signal.SIGKILL)  # while it runs a job
        assert {h: children[h].wait(150) for h in ("h1", "h3")} == {"h1": 0, "h3": 0}, \
            {h: (tmp_path / f"{h}.log").read_text()[-2000:] for h in logs}
    finally:
        faults = watch.stop()
        stop_runners(children, logs)
    assert faults == []

    statuses = {j: read_status(store, j).status for j in JOBS}
    assert {j: s["state"] for j, s in statuses.items()} == {j: "completed" for j in JOBS}
    runs = read_runs(runs_log)
    assert set(runs) == set(JOBS)
    for job_id in JOBS:
        check_job_runs(runs[job_id], statuses[job_id])
        assert store.get(keys.result_key(job_id, "digest.txt"))[0] == expected_digest(job_id, job_id.encode() * 100)
    cut = [j for j in JOBS if len(runs[j]) == 2]
    assert len(cut) == 1 and runs[cut[0]][0]["host"] == "h2" and statuses[cut[0]]["attempt"] == 2
    assert {s["host"] for s in statuses.values()} <= {"h1", "h3"}  # h2 died in its first job
    assert spool_leftovers(store) == []


def h1_running_fox(bucket: S3Bucket, tmp_path, media: bytes, seconds: float):
    """fox dropped, runner h1 started and into its run of fox: (runs log, the logs of h1 and
    h2, the children so far)."""
    drop_checksum_job(bucket.store(), "fox", media, seconds)
    runs_log = tmp_path / "runs.jsonl"
    logs = {h: open(tmp_path / f"{h}.log", "w+") for h in ("h1", "h2")}
    children = {"h1": start_runner(bucket, "h1", runs_log, logs["h1"])}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not read_runs(runs_log):
        time.sleep(0.02)
    return runs_log, logs, children


def test_a_host_frozen_mid_job_is_taken_over_and_fenced_when_it_wakes(seaweedfs, tmp_path):
    """h1 stops (SIGSTOP: alive, but its heartbeat stands still) while it runs a job; h2
    takes the job over and completes it; h1 wakes, finishes its run and is fenced: it writes
    nothing more for the job and removes only its own attempt's results."""
    bucket = S3Bucket(seaweedfs, seaweedfs.new_bucket())
    store = bucket.store()
    runs_log, logs, children = h1_running_fox(bucket, tmp_path, b"fox" * 100, 2)
    try:
        children["h1"].send_signal(signal.SIGSTOP)
        children["h2"] = start_runner(bucket, "h2", runs_log, logs["h2"])
        assert children["h2"].wait(60) == 0, (tmp_path / "h2.log").read_text()[-2000:]
        done = read_status(store, "fox")
        assert (done.status["state"], done.status["host"], done.status["attempt"]) == ("completed", "h2", 2)
        children["h1"].send_signal(signal.SIGCONT)
        assert children["h1"].wait(60) == 0, (tmp_path / "h1.log").read_text()[-2000:]
    finally:
        stop_runners(children, logs)
    assert '"job.lease_lost"' in (tmp_path / "h1.log").read_text()
    after = read_status(store, "fox")
    assert after.etag == done.etag  # h1 wrote nothing after it woke
    runs = read_runs(runs_log)["fox"]
    # h1's run was fenced at its write after waking: it never reached its end.
    assert [(r["host"], "end" in r) for r in runs] == [("h1", False), ("h2", True)]
    assert store.get(keys.result_key("fox", "digest.txt"))[0] == expected_digest("fox", b"fox" * 100)
    assert spool_leftovers(store) == []


def test_a_cancel_dropped_while_another_host_runs_the_job_stops_it_there(seaweedfs, tmp_path):
    """h1 runs a job; its ID.cancel is dropped and h2 (idle) acts on it: h1's next status
    write reads the cancel and the job ends canceled, with no result."""
    bucket = S3Bucket(seaweedfs, seaweedfs.new_bucket())
    store = bucket.store()
    runs_log, logs, children = h1_running_fox(bucket, tmp_path, b"fox", 6)
    try:
        store.put("inbox/fox.cancel", b"")
        children["h2"] = start_runner(bucket, "h2", runs_log, logs["h2"])
        assert {h: c.wait(60) for h, c in children.items()} == {"h1": 0, "h2": 0}, \
            {h: (tmp_path / f"{h}.log").read_text()[-2000:] for h in logs}
    finally:
        stop_runners(children, logs)
    status = read_status(store, "fox").status
    assert (status["state"], status["host"], status["result"]) == ("canceled", "h1", None), status
    assert status["error"]["code"] == "canceled"
    assert '"done": "asked"' in (tmp_path / "h2.log").read_text()
    assert [("end" in r) for r in read_runs(runs_log)["fox"]] == [False]  # stopped at its write after the wait
    assert store.get(keys.result_key("fox", "digest.txt")) is None and spool_leftovers(store) == []
