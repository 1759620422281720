"""What the daemon cannot read goes to R/corrupt/ with a reason, and a worker that hangs
mid-job is killed after [workers] stall_seconds and its job retried — with real daemons,
real spool folders and a real SIGSTOP."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

from tests.support import Daemon, drop_json, health, wait_for, wait_status


def metric(api: str, name: str) -> float:
    text = urllib.request.urlopen(api + "/metrics", timeout=10).read().decode()
    return float(next(ln.split()[-1] for ln in text.splitlines() if ln.startswith(name + " ")))


def test_unreadable_job_and_odd_queue_names_are_quarantined_at_restart(tmp_path):
    root = tmp_path / "spool"
    d = Daemon(root, log_dir=tmp_path).start()
    d.stop()
    # What a torn disk or a stray copy can leave: a claimed job whose .job.json is garbage,
    # a folder in active/ that is no job at all, and queue names no daemon gives.
    broken = root / "active" / d.host / "broken"
    broken.mkdir()
    (broken / ".job.json").write_text("{ not json")
    (broken / ".attempt-1").touch()
    (broken / "photo.jpg").write_bytes(b"the user's photo")
    (root / "active" / d.host / "stray.txt").write_text("?")
    (root / "queue" / "not-a-queue-name").mkdir()
    (root / "queue" / "050-12-bad id!").mkdir()
    d = Daemon(root, log_dir=tmp_path).start()
    try:
        wait_for(lambda: len([n for n in os.listdir(root / "corrupt") if not n.endswith(".reason.json")]) == 4, 10,
                 "four entries in corrupt/")
        corrupt = sorted(os.listdir(root / "corrupt"))
        assert corrupt == sorted(["broken", "broken.reason.json", "stray.txt", "stray.txt.reason.json",
                                  "not-a-queue-name", "not-a-queue-name.reason.json", "050-12-bad id!",
                                  "050-12-bad id!.reason.json"]), corrupt
        reason = json.loads((root / "corrupt" / "broken.reason.json").read_text())
        assert reason["was"] == f"active/{d.host}/broken" and ".job.json" in reason["reason"] and reason["host"] == d.host
        assert "is not <rank>-<usec>-<job id>" in json.loads((root / "corrupt" / "not-a-queue-name.reason.json").read_text())["reason"]
        assert (root / "corrupt" / "broken" / "photo.jpg").read_bytes() == b"the user's photo"  # never deleted
        status, body = health(d.api)
        assert status == 200 and body == {"status": "ok", "corrupt": 4}
        assert metric(d.api, "vidspool_corrupt_entries") == 4
        assert [e for e in d.log_events() if e.get("event") == "spool.quarantined"]
        drop_json(root / "inbox", "after", {"kind": "probe"})  # and the daemon goes on
        assert wait_status(root, "after", daemon=d)["state"] == "completed"
        wait_for(lambda: not os.listdir(root / "active" / d.host) and not os.listdir(root / "queue"), 5,
                 "nothing left in active/ and queue/ (the publish folder goes just after the status)")
    finally:
        d.stop()


def test_a_job_whose_file_breaks_in_the_queue_is_quarantined_when_claimed(tmp_path):
    root = tmp_path / "spool"
    d = Daemon(root, log_dir=tmp_path).start()
    try:
        drop_json(root / "inbox", "blocker", {"kind": "probe", "params": {"seconds": 2}})
        wait_status(root, "blocker", {"running"}, daemon=d)
        drop_json(root / "inbox", "victim", {"kind": "probe"})
        wait_status(root, "victim", {"queued"}, daemon=d)
        (name,) = [n for n in os.listdir(root / "queue") if n.endswith("-victim")]
        (root / "queue" / name / ".job.json").write_text("[]")
        wait_for(lambda: (root / "corrupt" / "victim").is_dir(), 20, "victim quarantined when claimed")
        assert "cannot be read" in json.loads((root / "corrupt" / "victim.reason.json").read_text())["reason"]
        assert wait_status(root, "blocker", daemon=d)["state"] == "completed"
    finally:
        d.stop()


def test_a_hung_worker_is_killed_after_stall_seconds_and_the_job_retried(tmp_path, markers):
    root = tmp_path / "spool"
    d = Daemon(root, log_dir=tmp_path, VIDSPOOL_WORKERS__STALL_SECONDS="5").start()
    try:
        drop_json(root / "inbox", "hang", {"kind": "probe", "params": {"seconds": 4, "marker_dir": str(markers)}})
        wait_status(root, "hang", {"running"}, daemon=d)
        wait_for(lambda: any(w["job"] == "hang" for w in d.heartbeat.get("workers", [])), 10, "the heartbeat naming the job")
        pid = next(w["pid"] for w in d.heartbeat["workers"] if w["job"] == "hang")
        os.kill(pid, signal.SIGSTOP)  # a driver deadlock, as the daemon sees it: not a word from the worker
        stopped = time.monotonic()
        doc = wait_status(root, "hang", {"completed", "failed"}, timeout=60, daemon=d)
        assert doc["state"] == "completed" and doc["attempt"] == 2, doc
        events = d.log_events()
        stall = next(e for e in events if e.get("event") == "worker.stalled")
        assert stall["job_id"] == "hang" and stall["silent_seconds"] >= 5
        requeued = next(e for e in events if e.get("event") == "job.requeued" and e.get("job_id") == "hang")
        assert "stall_seconds" in requeued["reason"] and time.monotonic() - stopped >= 5
        assert (markers / "executions.log").read_text().split() == ["hang"]
    finally:
        d.stop()


def test_a_long_step_that_still_runs_is_not_a_stall(tmp_path):
    """The probe sleeps 8 s in one step (no progress): the worker's heartbeat thread keeps it alive."""
    root = tmp_path / "spool"
    d = Daemon(root, log_dir=tmp_path, VIDSPOOL_WORKERS__STALL_SECONDS="5").start()
    try:
        drop_json(root / "inbox", "slow", {"kind": "probe", "params": {"seconds": 8, "step_seconds": 8}})
        doc = wait_status(root, "slow", timeout=60, daemon=d)
        assert doc["state"] == "completed" and doc["attempt"] == 1, doc
        assert not [e for e in d.log_events() if e.get("event") == "worker.stalled"]
    finally:
        d.stop()
