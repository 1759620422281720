"""Three bucket-spool hosts through a loopback proxy that cuts every connection over and
over (requests whose answers are lost: the protocol reads back before it decides) and
stalls them longer than the lease (live hosts are taken over, then fenced), while hosts
are SIGKILLed and restarted: every job ends completed, once, with its result, and no
status ever goes back (docs/bucket-spool.md)."""

from __future__ import annotations

import hashlib
import random
import signal
import time

from daemon.bucket import keys
from daemon.bucket.status_io import read_status
from tests.s3servers import FaultProxy, S3Bucket
from tests.test_bucket_crash_walk import (StatusWatch, drop_checksum_job, expected_digest, read_runs, spool_leftovers,
                                          start_runner, stop_runners)

JOBS = [f"f{n:02d}" for n in range(16)]
CHAOS_SECONDS = 12


def test_hosts_cut_off_and_killed_over_and_over_still_run_every_job_once(seaweedfs, tmp_path):
    bucket = S3Bucket(seaweedfs, seaweedfs.new_bucket())
    store = bucket.store()
    for job_id in JOBS:
        drop_checksum_job(store, job_id, job_id.encode() * 50, 0.1)
    watch = StatusWatch(bucket.store(), JOBS)  # straight to the server, not through the proxy
    proxy = FaultProxy(seaweedfs.port)
    runs_log, rng = tmp_path / "runs.jsonl", random.Random(28)
    logs = {h: open(tmp_path / f"{h}.log", "a+") for h in ("h1", "h2", "h3")}
    start = lambda h: start_runner(bucket, h, runs_log, logs[h], max_seconds=60, port=proxy.port)  # noqa: E731
    children = {h: start(h) for h in logs}
    cuts = kills = stalls = 0
    try:
        chaos_until = time.monotonic() + CHAOS_SECONDS
        while time.monotonic() < chaos_until:
            time.sleep(rng.uniform(0.2, 0.6))
            if rng.random() < 0.3:  # longer than the lease: live hosts are taken over, then fenced
                proxy.stall()
                time.sleep(rng.uniform(0.5, 2.5))
                proxy.resume()
                stalls += 1
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
        stop_runners(children, logs)
    print(f"{cuts} cuts of every connection, {stalls} stalls, {kills} hosts SIGKILLed, {proxy.requests_seen} requests")
    assert faults == [] and cuts >= 10 and kills >= 2 and stalls >= 2

    statuses = {e.key.split("/")[1] for e in store.list("outbox") if e.key.endswith("/status.json")}
    assert statuses == set(JOBS)  # no job accepted twice
    for job_id in JOBS:
        status = read_status(store, job_id).status
        assert status["state"] == "completed", status
        digest = store.get(keys.result_key(job_id, "digest.txt"))[0]
        assert digest == expected_digest(job_id, job_id.encode() * 50)
        assert status["result"]["files"][0]["sha256"] == hashlib.sha256(digest).hexdigest()
        assert len(read_runs(runs_log)[job_id]) <= status["attempt"]
    assert spool_leftovers(store) == []
