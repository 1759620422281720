"""What the chaos test (tests/test_shared_spool.py) and the soak bench (bench/soak.py) share:
the shared-spool settings, a watcher of every status.json, the journal reading (for the
bench; the test asserts with tests/support.py's assert_exactly_once), and the check that a
pid is really one of our workers before it is SIGKILLed."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from tests.support import FINAL, probe_runs

SHARED = {  # leases well above sshfs's 1 s mtime resolution and its ~12 ms visibility lag
    "VIDSPOOL_SPOOL__LEASE_SECONDS": "4",
    "VIDSPOOL_SPOOL__HEARTBEAT_SECONDS": "0.5",
    "VIDSPOOL_SPOOL__RESCAN_SECONDS": "0.5",
}


def _status_order(doc):
    """A key that never goes down over a job's life: the attempt a status is about (a queued
    job waits for attempt+1), then queued < running, then progress; final states on top."""
    if doc["state"] in FINAL:
        return (float("inf"), 0, 0)
    if doc["state"] == "queued":
        return (doc["attempt"] + 1, 0, 0)
    return (doc["attempt"], 1, doc["progress"] or 0)


def _brief(doc):
    return (doc["state"], doc["attempt"], doc["progress"], doc["host"])


class StatusWatcher(threading.Thread):
    """Reads every status.json over and over; records any that went backwards
    (`backwards`), and any job that was once seen `completed` and later said anything else
    (`left_completed`: completed → failed keeps the order key, so it is watched for itself).

    final_interval=None reads every status on every pass (every `interval` s). With a
    number, a job last seen in a final state is only stat()ed, every final_interval s, and
    read again when its file changed (a status is replaced by a rename: a new inode): for
    thousands of finished jobs on a machine with few cores."""

    def __init__(self, root, interval: float = 0.05, final_interval: float | None = None):
        super().__init__(daemon=True)
        self.root, self.last, self.backwards, self.stop_flag = root, {}, [], threading.Event()
        self.interval, self.final_interval = interval, final_interval
        self.seen_completed: set[str] = set()
        self.final_ids: set[str] = set()  # jobs seen in a final state (safe to len() from other threads)
        self.left_completed: list[tuple[str, tuple, tuple]] = []
        self.passes = self.reads = 0
        self._final_stat: dict[str, tuple] = {}
        self._next_final = 0.0

    def final_count(self) -> int:
        return len(self.final_ids)

    def run(self):
        outbox = Path(self.root) / "outbox"
        while not self.stop_flag.is_set():
            self.scan(outbox)
            time.sleep(self.interval)

    def scan(self, outbox: Path) -> None:
        try:
            names = os.listdir(outbox)
        except OSError:  # not there yet, or a fault: try again on the next pass
            return
        check_final = self.final_interval is None or time.monotonic() >= self._next_final
        if self.final_interval is not None and check_final:
            self._next_final = time.monotonic() + self.final_interval
        self.passes += 1
        for job_id in names:
            path = outbox / job_id / "status.json"
            if self.final_interval is not None and job_id in self._final_stat:
                if not check_final:
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    st = None
                if st is not None and (st.st_ino, st.st_mtime_ns, st.st_size) == self._final_stat[job_id]:
                    continue
            try:
                st = os.stat(path) if self.final_interval is not None else None
                doc = json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError, NotADirectoryError):
                continue
            self.reads += 1
            self.see(job_id, doc)
            if self.final_interval is not None:
                if doc["state"] in FINAL and st is not None:
                    self._final_stat[job_id] = (st.st_ino, st.st_mtime_ns, st.st_size)
                else:
                    self._final_stat.pop(job_id, None)

    def see(self, job_id: str, doc: dict) -> None:
        key = _status_order(doc)
        prev = self.last.get(job_id)
        if prev is not None and key < prev[0]:
            self.backwards.append((job_id, prev[1], _brief(doc)))
        if prev is None or key >= prev[0]:
            self.last[job_id] = (key, _brief(doc))
        if doc["state"] in FINAL:
            self.final_ids.add(job_id)
        if job_id in self.seen_completed and doc["state"] != "completed":
            self.left_completed.append((job_id, ("completed",), _brief(doc)))
            self.seen_completed.discard(job_id)  # recorded once per time it leaves
        elif doc["state"] == "completed":
            self.seen_completed.add(job_id)


def _is_worker(pid: int, parent: int | None = None) -> bool:
    """PID is a multiprocessing child (and, given PARENT, that process's child): never a
    recycled pid of something else."""
    try:
        if b"multiprocessing" not in open(f"/proc/{pid}/cmdline", "rb").read():
            return False
        if parent is not None:
            stat = open(f"/proc/{pid}/stat", "rb").read()
            return int(stat[stat.rindex(b")") + 2:].split()[1]) == parent
        return True
    except (OSError, ValueError):
        return False


def _attempt_spans(journal):
    """job → {(host, attempt, pid): (first record, last record, ended)} per execution (the
    soak bench's view of tests/support.py's probe_runs)."""
    return {job: {(r.host, r.attempt, r.pid): (r.first, r.last, r.ended) for r in runs}
            for job, runs in probe_runs(journal).items()}
