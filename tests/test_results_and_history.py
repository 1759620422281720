"""Deleting an ended job's results (API, CLI, across two hosts), time estimates from
measured history, and statistics from the outbox that survive a restart."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
import urllib.error
import urllib.request

import pytest

from tests.support import REPO, Daemon, base_env, drop_json, status, wait_all_final, wait_for, wait_status


def call(api: str, method: str, path: str) -> tuple[int, dict]:
    req = urllib.request.Request(api + "/api/v1" + path, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def probe(seconds: float = 0.0, **extra) -> dict:
    return {"kind": "probe", "params": {"seconds": seconds, "step_seconds": 0.05, **extra}}


@pytest.fixture
def pair(tmp_path):
    """Two daemons (hosts a and b) on one spool."""
    root = tmp_path / "spool"
    a = Daemon(root, host="a").start()
    b = Daemon(root, host="b").start()
    yield a, b
    for d in (a, b):
        d.stop()


def test_results_deleted_once_across_hosts_status_and_inputs_kept(pair):
    a, b = pair
    drop_json(a.root / "inbox", "done", probe())
    drop_json(a.root / "inbox", "slow", probe(seconds=30))
    doc = wait_status(a.root, "done")
    assert doc["state"] == "completed"
    folder = a.root / "outbox" / "done"
    size = (folder / "probe.txt").stat().st_size
    wait_for(lambda: (status(a.root, "slow") or {}).get("state") == "running", what="slow runs")

    # A running job's results cannot be deleted; an unknown job is 404.
    assert call(a.api, "DELETE", "/jobs/slow/results")[0] == 409
    assert call(b.api, "DELETE", "/jobs/nope/results")[0] == 404

    # Both hosts delete at once: one deletes, the other finds it deleted (or busy); never an error.
    answers = []
    threads = [threading.Thread(target=lambda d=d: answers.append(call(d.api, "DELETE", "/jobs/done/results")))
               for d in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(code for code, _ in answers)
    states = sorted(body.get("state") or body["error"]["code"] for _, body in answers)
    assert codes in ([200, 200], [200, 409]), answers
    assert "deleted" in states and sum(body.get("freed_bytes", 0) for _, body in answers) == size

    assert not (folder / "probe.txt").exists()
    assert not (folder / ".deleting").exists()
    after = status(a.root, "done")
    assert after["state"] == "completed" and after["result"]["files"] == []
    assert after["result"]["deleted"]["files"] == ["probe.txt"] and after["result"]["deleted"]["freed_bytes"] == size
    assert (folder / "log.jsonl").exists() and (folder / "input").is_dir()
    assert call(a.api, "GET", "/jobs/done/download")[0] == 404
    assert call(b.api, "DELETE", "/jobs/done/results") == (200, {"id": "done", "state": "already_deleted", "freed_bytes": 0})
    call(a.api, "DELETE", "/jobs/slow")


def test_purge_command(daemon):
    drop_json(daemon.root / "inbox", "p1", probe())
    drop_json(daemon.root / "inbox", "p2", probe(seconds=30))
    wait_status(daemon.root, "p1")
    wait_for(lambda: (status(daemon.root, "p2") or {}).get("state") == "running", what="p2 runs")
    env = base_env(**daemon.settings)

    def purge(*ids):
        return subprocess.run([sys.executable, "-m", "daemon", "purge", *ids], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)

    done = purge("p1")
    assert done.returncode == 0 and "p1: results deleted" in done.stdout and "bytes freed" in done.stdout
    assert not (daemon.root / "outbox" / "p1" / "probe.txt").exists()
    again = purge("p1", "p2", "ghost")
    assert again.returncode == 1
    assert "already deleted" in again.stdout
    assert "'p2' has not ended" in again.stderr and "no job 'ghost'" in again.stderr
    assert (status(daemon.root, "p2") or {}).get("state") == "running"
    call(daemon.api, "DELETE", "/jobs/p2")


def test_a_crashed_deleter_is_finished_by_the_next_delete(daemon):
    from daemon.outbox.results import STALE_LOCK_SECONDS

    drop_json(daemon.root / "inbox", "c", probe())
    wait_status(daemon.root, "c")
    folder = daemon.root / "outbox" / "c"
    lock = folder / ".deleting"
    lock.mkdir()  # a deleter that died holding the lock
    assert call(daemon.api, "DELETE", "/jobs/c/results")[0] == 409  # held, and fresh
    old = time.time() - STALE_LOCK_SECONDS - 5
    import os

    os.utime(lock, (old, old))
    code, body = call(daemon.api, "DELETE", "/jobs/c/results")
    assert code == 200 and body["state"] == "deleted" and body["freed_bytes"] > 0
    assert not lock.exists() and not (folder / "probe.txt").exists()


def test_estimates_come_from_measured_runs(tmp_path):
    d = Daemon(tmp_path / "spool", workers=["cpu"]).start()
    try:
        # Nothing measured yet: no estimate (never a made-up constant).
        drop_json(d.root / "inbox", "first", probe(seconds=1.0))
        wait_for(lambda: (status(d.root, "first") or {}).get("state") == "running", what="first runs")
        code, doc = call(d.api, "GET", "/jobs/first")
        assert code == 200 and doc["estimated_time_seconds"] is None
        # Only the worker's measure of its stage, if any, counted down since written.
        eta = doc.get("eta_seconds")
        assert doc["estimated_remaining_seconds"] == (None if eta is None else pytest.approx(eta, abs=1.0))
        wait_status(d.root, "first")
        for i in range(2):
            drop_json(d.root / "inbox", f"m{i}", probe(seconds=1.0))
        wait_all_final(d.root, ["m0", "m1"], daemon=d)
        measured = [status(d.root, n) for n in ("first", "m0", "m1")]
        runs = sorted(_seconds(s["started_at"], s["finished_at"]) for s in measured)

        drop_json(d.root / "inbox", "busy", probe(seconds=3.0))
        # Far enough in for the worker's step-rate ETA to mean something.
        wait_for(lambda: ((status(d.root, "busy") or {}).get("step") or 0) >= 20, what="busy is a third in")
        drop_json(d.root / "inbox", "waiting", probe(seconds=1.0))
        wait_for(lambda: (status(d.root, "waiting") or {}).get("state") == "queued", what="waiting is queued")
        code, running = call(d.api, "GET", "/jobs/busy")
        # The status's eta_seconds (the worker's step rate, over the kind's median run) counted down.
        assert code == 200 and running["estimated_remaining_seconds"] == pytest.approx(running["eta_seconds"], abs=1.0)
        assert 2.0 <= running["estimated_time_seconds"] <= 4.0, running  # elapsed + the worker's ETA: ~3 s
        code, doc = call(d.api, "GET", "/jobs/waiting")
        assert code == 200 and doc["queue_position"] == 1
        # What the running job has left plus its own run: the median of the kind's measured runs.
        expected = running["estimated_remaining_seconds"] + runs[1]
        assert abs(doc["estimated_time_seconds"] - expected) < 1.0, (runs, running, doc)
        assert doc["estimated_remaining_seconds"] == doc["estimated_time_seconds"]
        call(d.api, "DELETE", "/jobs/busy")
        call(d.api, "DELETE", "/jobs/waiting")
    finally:
        d.stop()


def _seconds(a: str, b: str) -> float:
    from contract.status import epoch

    return epoch(b) - epoch(a)


def test_statistics_from_the_outbox_survive_a_restart(tmp_path):
    d = Daemon(tmp_path / "spool", workers=["cpu"]).start()
    try:
        for i in range(3):
            drop_json(d.root / "inbox", f"ok{i}", probe(seconds=0.2))
        drop_json(d.root / "inbox", "bad", probe(fail="internal"))
        wait_all_final(d.root, ["ok0", "ok1", "ok2", "bad"], daemon=d)
        before = datetime.now(timezone.utc).date().isoformat()
        code, stats = call(d.api, "GET", "/stats")
        after = datetime.now(timezone.utc).date().isoformat()
        assert code == 200
        # "today" is since UTC midnight: the jobs created on the day the stats were taken.
        created = [status(d.root, n)["created_at"][:10] for n in ("ok0", "ok1", "ok2", "bad")]
        assert stats["requests"]["total"] == 4
        assert stats["requests"]["today"] in {created.count(before), created.count(after)}
        assert stats["requests"]["completed"] == 3 and stats["requests"]["failed"] == 1
        assert stats["requests"]["success_rate_percent"] == 75.0
        g = stats["generation"]
        assert 0.15 <= g["fastest_seconds"] <= g["median_seconds"] <= g["slowest_seconds"] < 30
        assert stats["storage"]["total_bytes"] == sum(
            (d.root / "outbox" / f"ok{i}" / "probe.txt").stat().st_size for i in range(3))
        assert stats["storage"]["available_bytes"] > 0
        assert stats["queue"]["current_length"] == 0 and stats["queue"]["average_wait_seconds"] >= 0
        assert stats["queue"]["max_length_today"] >= 1
        d.kill()
        d.start()
        code, again = call(d.api, "GET", "/stats")
        assert again["requests"] == stats["requests"] and again["generation"] == stats["generation"]
    finally:
        d.stop()
