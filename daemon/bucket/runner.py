"""A small bucket-spool host for tests and benches: `python -m daemon.bucket.runner`.

It loops the protocol's steps as the daemon will (accept → claim → run → commit →
publish, cancels, takeover of dead hosts, its own recovery at start) with one tiny real job
kind in place of a model: `checksum` reads its inputs, waits `params.seconds`, and writes
`digest.txt` (each input's SHA-256 and `params.text`). Every attempt it starts and ends is
appended to `--runs-log` (one JSON line each), so a test can count runs and check that two
never overlapped. VIDSPOOL_TEST_CRASH_AT arms a crash point, as in the daemon.

The daemon's integration behind the spool seam (workers, the API, webhooks) comes later.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from contract.errors import JobError
from contract.status import utc_now

from daemon.bucket import keys, lease
from daemon.bucket.accept import accept_drop, find_drops
from daemon.bucket.claim import claim_next
from daemon.bucket.credentials import StaticCredentials
from daemon.bucket.errors import BucketError, NotFound
from daemon.bucket.finish import (CancelAsked, LeaseLost, cancel_job, canceled_final, clear_attempt, commit, publish,
                                  result_file, write_progress)
from daemon.bucket.location import BucketLocation
from daemon.bucket.recover import HostWatch, clear_old_attempts, recover_own, take_over
from daemon.bucket.status_io import Held, read_status
from daemon.bucket.store import BucketStore
from daemon.config import S3Config
from daemon.spool.crashpoints import CrashPoints

KIND = "checksum"
RESULT = "digest.txt"
# How often a host settles its own hints while it runs (writes of its own that landed late).
SWEEP_SECONDS = 30.0


def say(event: str, **fields) -> None:
    sys.stderr.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stderr.flush()


def check_job(doc: dict) -> dict:
    """The runner's job check: kind `checksum`, inputs a mapping of names."""
    if doc.get("kind") != KIND:
        raise JobError("invalid_job", f"kind must be {KIND!r}, not {doc.get('kind')!r}")
    if not isinstance(doc.get("inputs", {}), dict) or not isinstance(doc.get("params", {}), dict):
        raise JobError("invalid_job", "inputs and params must be objects")
    return {**doc, "_meta": {"created_at": utc_now()}}


def input_names(status: dict) -> list[str]:
    names = []
    for value in status["job"].get("inputs", {}).values():
        names += value if isinstance(value, list) else [value]
    return names


class Runner:
    """One host of a bucket spool, one job at a time: its turns, its jobs, its own hints."""

    def __init__(self, store, host: str, runs_log: Path | None, lease_seconds: float, crash: CrashPoints,
                 sweep_seconds: float = SWEEP_SECONDS):
        self.store, self.host, self.runs_log, self.crash = store, host, runs_log, crash
        self.watch = HostWatch(host, lease_seconds)
        # Set when a request failed mid-job: the next turn settles my own hints first.
        self.recover = True
        self.sweep_seconds = sweep_seconds
        self.swept_at = time.monotonic()

    def log_run(self, held: Held, event: str) -> None:
        if self.runs_log is None:
            return
        line = json.dumps({"job": held.job_id, "epoch": held.lease["epoch"], "host": self.host, "pid": os.getpid(),
                           "event": event, "t": time.time()})
        with open(self.runs_log, "a") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())

    # one turn ---------------------------------------------------------------
    def turn(self) -> bool:
        """One pass over drops, cancels, dead hosts and the queue: whether anything was done."""
        if self.recover or time.monotonic() - self.swept_at >= self.sweep_seconds:
            recover_own(self.store, self.host, check_job, self.crash)
            clear_old_attempts(self.store, timedelta(seconds=2 * self.sweep_seconds))
            self.recover, self.swept_at = False, time.monotonic()
        drops, cancels = find_drops(self.store)
        for drop in drops:
            job_id = accept_drop(self.store, drop, self.host, check_job, self.crash)
            say("job.accepted", job_id=job_id, drop=drop.job_key)
        for key, etag in cancels:
            job_id = key.rsplit("/", 1)[1].removesuffix(".cancel")
            done = cancel_job(self.store, job_id, self.crash) if keys.is_job_id(job_id) else "unknown"
            self.crash.hit("cancel.file_handled")
            self.store.delete_if(key, etag)
            say("job.cancel", job_id=job_id, done=done)
        for dead, etag in self.watch.dead_hosts(self.store).items():
            if take_over(self.store, dead, self.host, check_job, self.crash) == 0:
                self.watch.bury(self.store, dead, etag)
            say("host.taken_over", dead=dead)
        held = claim_next(self.store, self.host, self.crash)
        if held is not None:
            self.run_job(held)
        return bool(drops or cancels or held)

    # one job ----------------------------------------------------------------
    def run_job(self, held: Held) -> None:
        say("job.claimed", job_id=held.job_id, epoch=held.lease["epoch"])
        try:
            try:
                held, final = self.attempt(held)
            except CancelAsked as asked:  # what it uploaded is not the job's: removed first
                clear_attempt(self.store, held.job_id, held.lease["epoch"], set())
                held, final = asked.now, canceled_final()
            held = commit(self.store, held, self.host, final, self.crash)
        except LeaseLost as lost:
            # Fenced: the job is another host's now. Only this attempt's own results go.
            say("job.lease_lost", job_id=lost.job_id)
            clear_attempt(self.store, held.job_id, held.lease["epoch"], set())
            return
        end = publish(self.store, held, self.crash, finisher=self.host)
        say("job.ended", job_id=held.job_id, state=end.status["state"] if end else None)

    def attempt(self, held: Held) -> tuple[Held, dict]:
        """The `checksum` job: the status last written and the final state to commit."""
        self.log_run(held, "start")
        job = held.status["job"]
        with tempfile.TemporaryDirectory(prefix="vidspool-runner-") as scratch:
            lines = []
            for i, name in enumerate(input_names(held.status)):
                local = Path(scratch) / f"input-{i}"
                try:
                    self.store.download_file(keys.input_key(held.job_id, name), local)
                except NotFound:
                    self.log_run(held, "end")
                    return held, lease.final_state("failed", error={"code": "missing_input", "retryable": False,
                                                                    "message": f"input {name!r} is not in the bucket"})
                lines.append(f"{hashlib.sha256(local.read_bytes()).hexdigest()}  {name}")
            held = write_progress(self.store, held, self.host, progress=10, stage="running")
            time.sleep(float(job.get("params", {}).get("seconds", 0)))
            lines.append(str(job.get("params", {}).get("text", "")))
            out = Path(scratch) / RESULT
            out.write_text("\n".join(lines) + "\n")
            self.store.upload_file(keys.work_key(held.job_id, held.lease["epoch"], RESULT), out, "text/plain")
            held = write_progress(self.store, held, self.host, progress=90, stage="encoding")
            digest = hashlib.sha256(out.read_bytes()).hexdigest()
            size = out.stat().st_size
        self.log_run(held, "end")
        files = [result_file(held.job_id, RESULT, size, digest, "text/plain")]
        return held, lease.final_state("completed", result={"files": files})


def settled(store) -> bool:
    """No drop, marker, queue hint, intent or attempt result left, and every status in an
    end state."""
    busy = (keys.INBOX, keys.INTAKE, keys.QUEUE, keys.ACTIVE, keys.WORK)
    statuses = []
    for entry in store.list():
        if entry.key.split("/", 1)[0] in busy:
            return False
        if entry.key.startswith(f"{keys.OUTBOX}/") and entry.key.endswith(f"/{keys.STATUS_FILE}"):
            statuses.append(entry.key.split("/")[1])
    return all((held := read_status(store, j)) is not None and lease.is_final(held.status) for j in statuses)


def heartbeats(store, watch: HostWatch, every: float) -> None:
    while True:
        try:
            watch.beat(store)
        except BucketError as exc:
            say("heartbeat.failed", error=str(exc))
        time.sleep(every)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m daemon.bucket.runner", description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", default="spool")
    p.add_argument("--host", required=True)
    p.add_argument("--runs-log", type=Path)
    p.add_argument("--poll", type=float, default=0.2)
    p.add_argument("--lease-seconds", type=float, default=3.0)
    p.add_argument("--sweep-seconds", type=float, default=SWEEP_SECONDS)
    p.add_argument("--exit-when-settled", action="store_true", help="exit once nothing is left to do")
    p.add_argument("--max-seconds", type=float, default=120)
    args = p.parse_args(argv)
    credentials = StaticCredentials(os.environ.get("AWS_ACCESS_KEY_ID", "vidspool"),
                                    os.environ.get("AWS_SECRET_ACCESS_KEY", "vidspool"))
    store = BucketStore(BucketLocation(args.bucket, args.prefix),
                        S3Config(endpoint_url=args.endpoint, allow_http=True), credentials)
    runner = Runner(store, args.host, args.runs_log, args.lease_seconds, CrashPoints.from_env(), args.sweep_seconds)
    threading.Thread(target=heartbeats, args=(store, runner.watch, args.poll), daemon=True).start()
    deadline = time.monotonic() + args.max_seconds
    while time.monotonic() < deadline:
        try:
            if not runner.turn():
                if args.exit_when_settled and not runner.recover and settled(store):
                    say("runner.settled", host=args.host)
                    return 0
                time.sleep(args.poll)
        except BucketError as exc:  # no answer: the next turn starts from the bucket's state
            say("turn.failed", error=str(exc))
            runner.recover = True
            time.sleep(args.poll)
    say("runner.timeout", host=args.host)
    return 3


if __name__ == "__main__":
    sys.exit(main())
