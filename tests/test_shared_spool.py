"""Many hosts, one spool, over real sshfs mounts: exactly once under random kills."""

import collections
import json
import os
import random
import signal
import time

from tests.chaos import SHARED, StatusWatcher, _is_worker
from tests.support import Daemon, assert_exactly_once, leftovers, wait_all_final


def test_chaos_three_daemons_two_over_sshfs_500_jobs_exactly_once(ssh_export, tmp_path):
    local_root = ssh_export.path / "spool"
    mounts = [ssh_export.mount("b"), ssh_export.mount("c")]
    roots = {"host-a": local_root, "host-b": mounts[0].path / "spool", "host-c": mounts[1].path / "spool"}
    logs = tmp_path / "logs"
    logs.mkdir()
    daemons = {h: Daemon(r, host=h, workers=["cpu"], log_dir=logs, **SHARED) for h, r in roots.items()}
    for d in daemons.values():
        d.start()
    journal = ssh_export.path / "journal.jsonl"
    ids = [f"j{i:03d}" for i in range(500)]
    inbox = local_root / "inbox"
    for job_id in ids:
        tmp = inbox / f".{job_id}.part"
        tmp.mkdir()
        (tmp / "job.json").write_text(json.dumps({"kind": "probe", "max_attempts": 100, "params": {
            "seconds": 0.4, "step_seconds": 0.05, "journal": str(journal)}}))
        os.rename(tmp, inbox / job_id)
    watcher = StatusWatcher(local_root)
    watcher.start()
    rng = random.Random(20261123)
    kills = collections.Counter()
    try:
        # A minute of kills, and at least 15 of each kind however slowly daemons restart on a loaded machine.
        started = time.monotonic()
        turn = 0
        while time.monotonic() < started + 240 and (
                time.monotonic() < started + 60 or kills["daemon"] < 15 or kills["worker"] < 15):
            time.sleep(rng.uniform(0.2, 1.0))
            turn += 1
            if turn % 2:  # a daemon: SIGKILL, then start it again at once
                d = daemons[rng.choice(sorted(daemons))]
                d.kill()
                d.start()
                kills["daemon"] += 1
                continue
            pids = [w["pid"] for d in daemons.values() for w in d.heartbeat.get("workers", []) if w.get("pid")]
            pids = [p for p in pids if _is_worker(p)]  # never a recycled pid of something else
            if pids:
                try:
                    os.kill(rng.choice(pids), signal.SIGKILL)
                    kills["worker"] += 1
                except ProcessLookupError:
                    pass
        unfinished = sum(1 for j in ids if not (local_root / "outbox" / j / "input").exists())
        docs = wait_all_final(local_root, ids, timeout=300, daemon=daemons["host-a"])
    finally:
        watcher.stop_flag.set()
        watcher.join(5)
        for d in daemons.values():
            d.stop()
    assert kills["daemon"] >= 15 and kills["worker"] >= 15, kills
    assert unfinished > 0, "all jobs ended before the kills stopped: the chaos proved nothing"
    retried = sum(1 for d in docs.values() if d["attempt"] >= 2)
    assert retried >= 20, f"only {retried} jobs were interrupted"
    assert {d["state"] for d in docs.values()} == {"completed"}, collections.Counter(d["state"] for d in docs.values())
    assert not watcher.backwards, watcher.backwards[:5]
    assert leftovers(local_root) == []
    runs = assert_exactly_once(local_root, ids, list(daemons.values()), journal=journal, watcher=watcher)
    assert sum(len(r) for r in runs.values()) > len(ids), "no job was run twice: no run was cut short"
    hosts = collections.Counter(d["host"] for d in docs.values())
    assert set(hosts) == set(daemons), hosts
