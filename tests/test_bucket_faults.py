"""Three bucket-spool hosts through a loopback proxy that cuts every connection over and
over (requests whose answers are lost: the protocol reads back before it decides), while
hosts are SIGKILLed and restarted: every job ends completed, once, with its result, and no
status ever goes back (docs/bucket-spool.md)."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import time

from daemon.bucket import keys
from daemon.bucket.status_io import read_status
from tests.s3servers import FaultProxy, S3Bucket
from tests.test_bucket_crash_walk import StatusWatch, read_runs, start_runner

JOBS = [f"f{n:02d}" for n in range(16)]
CHAOS_SECONDS = 12


def test_hosts_cut_off_and_killed_over_and_over_still_run_every_job_once(seaweedfs, tmp_path):
    bucket = S3Bucket(seaweedfs, seaweedfs.new_bucket())
    store = bucket.store()
    for job_id in JOBS:
        store.put(f"inbox/{job_id}.bin", job_id.encode() * 50)
        store.put(f"inbox/{job_id}.json", json.dumps({"kind": "checksum", "inputs": {"clip": f"{job_id}.bin"},
                                                      "params": {"seconds": 0.1, "text": job_id}}).encode())
    watch = StatusWatch(bucket.store(), JOBS)  # straight to the server, not through the proxy
    proxy = FaultProxy(seaweedfs.port)
    runs_log, rng = tmp_path / "runs.jsonl", random.Random(28)
    logs = {h: open(tmp_path / f"{h}.log", "a+") for h in ("h1", "h2", "h3")}
    start = lambda h: start_runner(bucket, h, runs_log, logs[h], max_seconds=60, port=proxy.port)  # noqa: E731
    children = {h: start(h) for h in logs}
    cuts = kills = 0
    try:
        chaos_until = time.monotonic() + CHAOS_SECONDS
        while time.monotonic() < chaos_until:
            time.sleep(rng.uniform(0.2, 0.6))
            proxy.cut()
            cuts += 1
            if rng.random() < 0.25:
                host = rng.choice(list(children))
                children[host].send_signal(signal.SIGKILL)
                children[host].wait()
                children[host] = start(host)
                kills += 1
        codes = {h: c.wait(90) for h, c in children.items()}
        assert codes == {h: 0 for h in logs}, ([e.key for e in store.list() if not e.key.startswith("outbox/")],
                                               {e.key: read_status(store, e.key.split("/")[1]).status["state"]
                                                for e in store.list("outbox") if e.key.endswith("/status.json")},
                                               {h: (tmp_path / f"{h}.log").read_text()[-3000:] for h in logs})
    finally:
        faults = watch.stop()
        proxy.close()
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait()
        for log in logs.values():
            log.close()
    print(f"{cuts} cuts of every connection, {kills} hosts SIGKILLed, {proxy.requests_seen} requests")
    assert faults == [] and cuts >= 15 and kills >= 2

    statuses = {e.key.split("/")[1] for e in store.list("outbox") if e.key.endswith("/status.json")}
    assert statuses == set(JOBS)  # no job accepted twice
    for job_id in JOBS:
        status = read_status(store, job_id).status
        assert status["state"] == "completed", status
        media = hashlib.sha256(job_id.encode() * 50).hexdigest()
        digest = store.get(keys.result_key(job_id, "digest.txt"))[0]
        assert digest == f"{media}  {job_id}.bin\n{job_id}\n".encode()
        assert status["result"]["files"][0]["sha256"] == hashlib.sha256(digest).hexdigest()
        assert len(read_runs(runs_log)[job_id]) <= status["attempt"]
    left = [e.key for e in store.list() if e.key.split("/")[0] in ("inbox", "intake", "queue", "active", "work")]
    assert left == []
