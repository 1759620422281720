"""Nothing lost, exactly once: many jobs, killed daemons, killed workers, two hosts."""

import collections
import os
import signal
import time

from tests.chaos import StatusWatcher
from tests.support import Daemon, assert_exactly_once, drop_json, leftovers, status, wait_all_final, wait_status


def _drop_many(inbox, n, prefix, params):
    ids = [f"{prefix}{i:04d}" for i in range(n)]
    for job_id in ids:
        drop_json(inbox, job_id, {"kind": "probe", "params": params})
    return ids


def test_200_jobs_on_2_workers_each_run_once(daemon, spool_root, markers):
    ids = _drop_many(spool_root / "inbox", 200, "many", {"marker_dir": str(markers)})
    docs = wait_all_final(spool_root, ids, timeout=120, daemon=daemon)
    runs = assert_exactly_once(spool_root, ids, [daemon], journal=markers / "runs.jsonl")
    assert {job_id: len(r) for job_id, r in runs.items()} == {job_id: 1 for job_id in ids}  # nothing crashed: one run each
    assert {d["device"] for d in docs.values()} == {"cpu:0", "cpu:1"}
    assert leftovers(spool_root) == []


def test_sigkill_daemon_mid_run_then_restart_completes_every_job_once(spool_root, markers):
    d = Daemon(spool_root, workers=["cpu", "cpu"]).start()
    watcher = StatusWatcher(spool_root)  # from the start: a status must not leave completed across the kill either
    watcher.start()
    # One long job among short ones, so that one is surely mid-run at the kill (on a loaded
    # machine the short ones may all be between runs at that instant).
    drop_json(spool_root / "inbox", "k-long", {"kind": "probe", "params": {"seconds": 6, "marker_dir": str(markers)}})
    ids = ["k-long"] + _drop_many(spool_root / "inbox", 30, "k", {"seconds": 0.3, "marker_dir": str(markers)})
    deadline = time.monotonic() + 60

    def states() -> list[str]:
        return [(status(spool_root, i) or {}).get("state") for i in ids]

    while states().count("completed") < 4 or states()[0] != "running":
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.05)
    d.kill()  # SIGKILL: no drain, workers die with it
    running = [i for i, state in zip(ids, states()) if state == "running"]
    assert "k-long" in running
    d2 = Daemon(spool_root, workers=["cpu", "cpu"]).start()
    try:
        docs = wait_all_final(spool_root, ids, timeout=120, daemon=d2)
        for job_id in running:
            assert docs[job_id]["attempt"] == 2, docs[job_id]
        runs = assert_exactly_once(spool_root, ids, [d, d2], journal=markers / "runs.jsonl", watcher=watcher)
        assert len(runs["k-long"]) == 2 and not runs["k-long"][0].ended, runs["k-long"]  # cut short, then run again
        assert leftovers(spool_root) == []
    finally:
        watcher.stop_flag.set()
        d2.stop()


def _worker_pid(markers, job_id, seen, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in os.listdir(markers):
            if name.startswith(f"{job_id}.start.") and name not in seen:
                seen.add(name)
                return int(name.split(".")[2])
        time.sleep(0.02)
    raise AssertionError(f"{job_id} never started")


def test_sigkill_of_a_worker_retries_then_fails_worker_crashed(spool_root, markers):
    d = Daemon(spool_root, workers=["cpu"]).start()
    try:
        seen: set = set()
        drop_json(spool_root / "inbox", "victim", {"kind": "probe", "max_attempts": 2, "params": {"seconds": 6, "marker_dir": str(markers)}})
        os.kill(_worker_pid(markers, "victim", seen), signal.SIGKILL)
        doc = wait_status(spool_root, "victim", {"running"}, daemon=d)
        deadline = time.monotonic() + 20
        while doc["attempt"] != 2:
            assert time.monotonic() < deadline, doc
            doc = wait_status(spool_root, "victim", {"running"}, daemon=d)
        os.kill(_worker_pid(markers, "victim", seen), signal.SIGKILL)
        doc = wait_status(spool_root, "victim", daemon=d)
        assert doc["state"] == "failed" and doc["error"]["code"] == "worker_crashed" and doc["attempt"] == 2, doc
        assert "signal 9" in doc["error"]["message"]
        # the worker was restarted and serves the next job
        drop_json(spool_root / "inbox", "next", {"kind": "probe"})
        assert wait_status(spool_root, "next", daemon=d)["state"] == "completed"
    finally:
        d.stop()


def test_a_crash_inside_a_job_is_retried(spool_root):
    d = Daemon(spool_root, workers=["cpu"]).start()
    try:
        drop_json(spool_root / "inbox", "crasher", {"kind": "probe", "params": {"crash": True, "seconds": 0.2}})
        doc = wait_status(spool_root, "crasher", daemon=d)
        assert doc["state"] == "failed" and doc["error"]["code"] == "worker_crashed" and doc["attempt"] == 3
        assert "exit code 17" in doc["error"]["message"]
    finally:
        d.stop()


def test_two_daemons_share_a_spool_each_job_completes_once_and_a_dead_host_is_taken_over(spool_root, markers):
    a = Daemon(spool_root, host="host-a", workers=["cpu"]).start()
    b = Daemon(spool_root, host="host-b", workers=["cpu"]).start()
    try:
        ids = _drop_many(spool_root / "inbox", 200, "two", {"marker_dir": str(markers)})
        docs = wait_all_final(spool_root, ids, timeout=180, daemon=a)
        runs = assert_exactly_once(spool_root, ids, [a, b], journal=markers / "runs.jsonl")
        assert {job_id: len(r) for job_id, r in runs.items() if job_id in ids} == {job_id: 1 for job_id in ids}
        hosts = collections.Counter(d["host"] for d in docs.values())
        assert set(hosts) == {"host-a", "host-b"}, hosts

        # Host b dies while running a long job; a takes it over after the lease (4 s).
        slow = _drop_many(spool_root / "inbox", 4, "slow", {"seconds": 3, "marker_dir": str(markers)})
        deadline = time.monotonic() + 30

        def on_b() -> list[str]:  # a job not accepted yet has no status
            return [i for i in slow if ((status(spool_root, i) or {}).get("host"), (status(spool_root, i) or {}).get("state")) == ("host-b", "running")]

        while not on_b():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        b.kill()
        killed_at = time.monotonic()
        taken = on_b()
        docs = wait_all_final(spool_root, slow, timeout=60, daemon=a)
        runs = assert_exactly_once(spool_root, slow, [a, b], journal=markers / "runs.jsonl")
        for job_id in taken:
            assert docs[job_id]["host"] == "host-a" and docs[job_id]["attempt"] == 2
            assert [r.host for r in runs[job_id]] in (["host-b", "host-a"], ["host-a"]), runs[job_id]
        assert time.monotonic() - killed_at >= 4  # not before the lease ran out
        assert leftovers(spool_root) == []
    finally:
        a.stop()
        b.stop()


def test_a_draining_host_keeps_its_lease_while_its_job_finishes(spool_root):
    # drain (8 s) longer than the lease (4 s): the other host must not take the job over.
    a = Daemon(spool_root, host="host-a", workers=["cpu"], VIDSPOOL_WORKERS__DRAIN_SECONDS="8").start()
    b = Daemon(spool_root, host="host-b", workers=["cpu"], VIDSPOOL_WORKERS__DRAIN_SECONDS="8").start()
    try:
        drop_json(spool_root / "inbox", "finishing", {"kind": "probe", "params": {"seconds": 6}})
        doc = wait_status(spool_root, "finishing", {"running"}, daemon=a)
        if doc["host"] != "host-a":  # b got it: swap roles
            a, b = b, a
        assert a.stop(timeout=30) == 0
        doc = status(spool_root, "finishing")
        assert doc["state"] == "completed" and doc["host"] == a.host and doc["attempt"] == 1, doc
    finally:
        a.stop()
        b.stop()
