#!/usr/bin/env python
"""vidspool benchmarks (`make bench`): a real `python -m daemon run` on a fresh spool.

Measures, on this machine (see BENCHMARKS.md for the method and the figures):
  floor       the raw file work: one atomic status write, and one job's renames and writes;
  throughput  N instant probe jobs renamed into inbox/ at once -> all completed (twice:
              after a rest, then at once again);
  latency     rename of a job file into inbox/ -> status.json "running" / "completed",
              jobs dropped one at a time into an idle daemon with 2 CPU workers;
  outbox      RSS and restart time with 10,000 finished jobs in the outbox;
  syscalls    (when strace works) what the daemon and its workers do per job.

The floor, throughput and latency parts start after a rest (--cooldown): on ext4 without
a journal, as here, creating files is much slower for ~30 s after many deletions.

Prints a table and writes bench/out/results.json.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import re
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
sys.path.insert(0, str(REPO))

from contract.status import new_status  # noqa: E402  (the real status shape)
from tests.support import Daemon  # noqa: E402  (the daemon as the tests run it)

HOST = "bench-host"
TARGETS = {
    "pickup_running_p99_ms": 100.0,
    "throughput_jobs_per_s": 100.0,
    "daemon_rss_mb": 120.0,
    "restart_s": 3.0,
}
PROBE = {"kind": "probe"}  # params {}: finishes at once, writes one small result file


# -- small helpers ---------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """Percentile by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: list[float]) -> dict:
    return {"n": len(values), "p50": pct(values, 50), "p90": pct(values, 90), "p99": pct(values, 99),
            "max": max(values) if values else float("nan"), "mean": sum(values) / len(values) if values else float("nan")}


def iso_ts(s: str | None) -> float | None:
    """Epoch seconds of a daemon UTC ISO time ('...Z')."""
    if not s:
        return None
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def read_json(path: Path) -> dict | None:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in kB from /proc/<pid>/status."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def cpu_seconds(pid: int, which: str = "both") -> float:
    """User+system (or "user" / "sys") CPU seconds of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    user, system = int(fields[11]), int(fields[12])
    ticks = {"both": user + system, "user": user, "sys": system}[which]
    return ticks / os.sysconf("SC_CLK_TCK")


def system_cpu() -> dict[str, float]:
    """Machine-wide CPU seconds so far (busy, idle, iowait, steal) from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = (f + [0] * 8)[:8]
    return {"busy": (user + nice + system + irq + softirq) / hz, "idle": idle / hz, "iowait": iowait / hz, "steal": steal / hz}


def kernel_threads_cpu() -> float:
    """CPU seconds of kernel threads (children of kthreadd, pid 2: jbd2, kworkers, ...)."""
    total = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if f[1] == "2" or d.name == "2":
                total += int(f[11]) + int(f[12])
    return total / os.sysconf("SC_CLK_TCK")


def cpu_delta(a: dict, b: dict) -> dict:
    return {k: b[k] - a[k] for k in a}


def snapshot() -> dict:
    t = os.times()
    return {"machine": system_cpu(), "kthreads": kernel_threads_cpu(), "ours": t.user + t.system + t.children_user + t.children_system,
            "wall": time.perf_counter()}


def disturbance(a: dict, b: dict) -> dict:
    """CPU used during a section by processes that are not the bench, its daemons or the
    kernel's own threads: another workload on the machine, which skews the figures."""
    busy = b["machine"]["busy"] - a["machine"]["busy"]
    kth = b["kthreads"] - a["kthreads"]
    ours = b["ours"] - a["ours"]
    return {"wall_s": b["wall"] - a["wall"], "machine_busy_s": busy, "ours_s": ours, "kernel_threads_s": kth,
            "other_s": max(0.0, busy - ours - kth), "iowait_s": b["machine"]["iowait"] - a["machine"]["iowait"]}


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return sorted(out)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


class LogTail:
    """Reads the daemon's JSON log as it grows."""

    def __init__(self, path: Path):
        self.path = path
        self.pos = path.stat().st_size if path.exists() else 0
        self.buf = b""

    def events(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return []
        self.pos += len(data)
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out


# -- inotify (ctypes; no dependency) ---------------------------------------------------
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_Q_OVERFLOW = 0x4000
IN_ISDIR = 0x40000000
_EVENT = struct.Struct("iIII")


class Inotify:
    def __init__(self):
        self.libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")

    def add(self, path: Path, mask: int) -> int:
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        return wd

    def rm(self, wd: int) -> None:
        self.libc.inotify_rm_watch(self.fd, wd)

    def read(self, timeout: float) -> list[tuple[int, int, str]]:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return []
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        out, i = [], 0
        while i < len(data):
            wd, mask, _cookie, n = _EVENT.unpack_from(data, i)
            name = data[i + _EVENT.size: i + _EVENT.size + n].rstrip(b"\0").decode()
            out.append((wd, mask, name))
            i += _EVENT.size + n
        return out

    def close(self) -> None:
        os.close(self.fd)


# -- daemon control ------------------------------------------------------------------
_STARTED: list[Daemon] = []  # every daemon started, so that none outlives the bench


def new_daemon(root: Path, **settings: str) -> Daemon:
    return Daemon(root, host=HOST, workers=["cpu", "cpu"], **settings)


def stop_leftovers() -> None:
    for d in _STARTED:
        if d.proc is not None and d.proc.poll() is None:
            try:
                d.stop(timeout=15)
            except AssertionError:
                pass  # Daemon.stop killed it


def start_timed(d: Daemon, timeout: float = 60) -> dict:
    """Starts the daemon and polls hosts/<host>.json every 2 ms until it names the new pid
    with api_url and all workers ready. Returns timings (s) from just before the spawn."""
    tail = LogTail(d.log_path)
    t_wall = time.time()
    t0 = time.perf_counter()
    d.start(wait=False)
    _STARTED.append(d)
    hb_path = d.root / "hosts" / f"{HOST}.json"
    deadline = t0 + timeout
    while True:
        if d.proc.poll() is not None:
            raise RuntimeError(f"daemon exited {d.proc.returncode}:\n{d.log()}")
        hb = read_json(hb_path) or {}
        if hb.get("pid") == d.proc.pid and hb.get("api_url") and hb.get("workers") and all(w["ready"] for w in hb["workers"]):
            ready = time.perf_counter() - t0
            break
        if time.perf_counter() > deadline:
            raise RuntimeError(f"daemon not ready in {timeout}s:\n{d.log()}")
        time.sleep(0.002)
    time.sleep(0.05)
    out = {"ready_s": ready, "pid": d.proc.pid, "worker_pids": [w["pid"] for w in hb["workers"]]}
    ev = tail.events()
    for e in ev:
        ts = iso_ts(e.get("timestamp"))
        if e.get("event") == "daemon.ready":
            out["recovery_seconds"] = e.get("recovery_seconds")
            out["log_daemon_ready_s"] = ts - t_wall
        elif e.get("event") == "worker.ready":
            out["log_last_worker_ready_s"] = max(out.get("log_last_worker_ready_s", 0), ts - t_wall)
    return out


def drop_all_and_wait(d: Daemon, ids: list[str], timeout: float = 120) -> None:
    inbox = d.root / "inbox"
    tail = LogTail(d.log_path)
    for jid in ids:
        tmp = inbox / f".{jid}.json.part"
        tmp.write_text(json.dumps(PROBE))
        os.rename(tmp, inbox / f"{jid}.json")
    wait_final_by_log(tail, set(ids), time.monotonic() + timeout, d)


def wait_final_by_log(tail: LogTail, ids: set[str], deadline: float, d: Daemon) -> dict[str, str]:
    """Waits until the log shows every id completed/failed/canceled (polls the log, 10 ms)."""
    done: dict[str, str] = {}
    while len(done) < len(ids):
        for e in tail.events():
            ev = e.get("event", "")
            if ev in ("job.completed", "job.failed", "job.canceled") and e.get("job_id") in ids:
                done[e["job_id"]] = ev[4:]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ids) - len(done)} jobs not final in time:\n{d.log()}")
        if len(done) < len(ids):
            time.sleep(0.01)
    return done


def rss_report(d: Daemon) -> dict:
    pid = d.proc.pid
    kids = children(pid)
    hb = d.heartbeat
    worker_pids = [w["pid"] for w in hb.get("workers", []) if w.get("pid")]
    out = {"daemon": proc_status(pid), "workers": {}, "other_children": {}}
    for k in kids:
        (out["workers"] if k in worker_pids else out["other_children"])[str(k)] = {**proc_status(k), "cmdline": cmdline(k)[:120]}
    return out


# -- 4. the floor ------------------------------------------------------------------------
def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o664)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def sample_status_bytes(state: str = "completed") -> bytes:
    job = {"id": "floor-0001", "kind": "probe", "model": None, "priority": 0,
           "params": {"seconds": 0.0, "step_seconds": 0.05, "marker_dir": None, "crash": False, "fail": None},
           "inputs": {}, "max_attempts": 3, "labels": {}, "preset": None,
           "_meta": {"created_at": "2026-01-01T00:00:00.000Z", "drop": "inbox/floor-0001.json"}}
    doc = new_status("floor-0001", job, state, attempt=1, host=HOST, device="cpu:0", progress=100,
                     started_at="2026-01-01T00:00:00.001Z", finished_at="2026-01-01T00:00:00.002Z",
                     result={"files": [{"name": "probe.txt", "size": 24, "sha256": "0" * 64,
                                        "media_type": "text/plain", "url": "/api/v1/jobs/floor-0001/files/probe.txt"}],
                             "seconds": {"run": 0.001}})
    return json.dumps(doc, indent=1, ensure_ascii=False).encode() + b"\n"


def bench_floor(base: Path, n_writes: int, n_jobs: int) -> dict:
    d = base / "floor"
    d.mkdir()
    data = sample_status_bytes()
    writes = []
    for _ in range(20):  # warm-up
        atomic_write(d / "status.json", data)
    for _ in range(n_writes):
        t = time.perf_counter()
        atomic_write(d / "status.json", data)
        writes.append((time.perf_counter() - t) * 1e3)

    # One job's file work: 3 folder renames (inbox -> queue -> active -> outbox/input),
    # 3 fsynced atomic status writes (queued, running, completed), 1 result file
    # (written to a temp name, fsynced, renamed: what JobContext.publish does).
    for sub in ("inbox", "queue", "active", "outbox"):
        (d / sub).mkdir()
    jobs = []
    result = b"floor ran on cpu:0 pid 1\n"
    for i in range(n_jobs + 10):
        jid = f"j{i:05d}"
        src = d / "inbox" / jid
        src.mkdir()
        (src / f"{jid}.json").write_bytes(b'{"kind": "probe"}')
        out = d / "outbox" / jid
        out.mkdir()
        t = time.perf_counter()
        os.rename(src, d / "queue" / jid)
        atomic_write(out / "status.json", data)
        os.rename(d / "queue" / jid, d / "active" / jid)
        atomic_write(out / "status.json", data)
        atomic_write(out / "probe.txt", result)
        os.rename(d / "active" / jid, out / "input")
        atomic_write(out / "status.json", data)
        if i >= 10:
            jobs.append((time.perf_counter() - t) * 1e3)
    return {"status_bytes": len(data), "atomic_write_ms": summary(writes), "job_file_work_ms": summary(jobs)}


# -- 1. pickup latency ---------------------------------------------------------------------
def bench_latency(base: Path, n_jobs: int, warmup: int, gap: float) -> dict:
    root = base / "latency" / "spool"
    d = new_daemon(root)
    start = start_timed(d)
    inbox, outbox = root / "inbox", root / "outbox"
    ino = Inotify()
    out_wd = ino.add(outbox, IN_CREATE)
    tail = LogTail(d.log_path)
    rows = []
    missed_running = 0
    try:
        for i in range(warmup + n_jobs):
            jid = f"lat-{i:05d}"
            part = inbox / f".{jid}.json.part"
            part.write_text(json.dumps(PROBE))
            job_dir = outbox / jid
            seen: dict[str, float] = {}
            job_wd = None

            def look(now: float) -> None:
                doc = read_json(job_dir / "status.json")
                if doc and doc.get("state") not in seen:
                    seen[doc["state"]] = now

            t_wall = time.time()
            t0 = time.perf_counter()
            os.rename(part, inbox / f"{jid}.json")
            deadline = t0 + 30
            while "completed" not in seen:
                events = ino.read(0.5)
                now = time.perf_counter()
                for wd, mask, name in events:
                    if mask & IN_Q_OVERFLOW:
                        raise RuntimeError("inotify queue overflow")
                    if wd == out_wd and name == jid and job_wd is None:
                        job_wd = ino.add(job_dir, IN_MOVED_TO)
                        look(now)
                    elif wd == job_wd and name == "status.json":
                        look(now)
                if now > deadline:
                    raise RuntimeError(f"{jid}: not completed in 30 s (seen {seen}):\n{d.log()}")
            if job_wd is not None:
                ino.rm(job_wd)
            doc = read_json(job_dir / "status.json")
            if doc.get("state") != "completed":
                raise RuntimeError(f"{jid}: {doc}")
            if "running" not in seen:
                missed_running += 1
            if i >= warmup:
                rows.append({
                    "id": jid,
                    "running_seen_ms": (seen["running"] - t0) * 1e3 if "running" in seen else None,
                    "completed_seen_ms": (seen["completed"] - t0) * 1e3,
                    "queued_seen_ms": (seen["queued"] - t0) * 1e3 if "queued" in seen else None,
                    "created_at_ms": (iso_ts(doc["created_at"]) - t_wall) * 1e3,
                    "started_at_ms": (iso_ts(doc["started_at"]) - t_wall) * 1e3,
                    "finished_at_ms": (iso_ts(doc["finished_at"]) - t_wall) * 1e3,
                    "updated_at_ms": (iso_ts(doc["updated_at"]) - t_wall) * 1e3,
                    "t_wall": t_wall,
                })
            time.sleep(gap)
        # µs-resolution breakdown from the daemon's own log events
        logged: dict[str, dict[str, float]] = {}
        for e in tail.events():
            if e.get("event") in ("job.queued", "job.started", "job.completed") and e.get("job_id"):
                logged.setdefault(e["job_id"], {})[e["event"]] = iso_ts(e["timestamp"])
        for r in rows:
            ev = logged.get(r["id"], {})
            for name in ("job.queued", "job.started", "job.completed"):
                if name in ev:
                    r[f"log_{name[4:]}_ms"] = (ev[name] - r["t_wall"]) * 1e3
        daemon_rss = proc_status(d.proc.pid)
    finally:
        ino.close()
        d.stop()

    def col(key: str) -> list[float]:
        return [r[key] for r in rows if r.get(key) is not None]

    return {
        "jobs": len(rows), "warmup_jobs": warmup, "gap_s": gap, "start": start,
        "missed_running": missed_running,
        "running_seen_ms": summary(col("running_seen_ms")),
        "completed_seen_ms": summary(col("completed_seen_ms")),
        "queued_seen_ms": summary(col("queued_seen_ms")),
        "started_at_ms": summary(col("started_at_ms")),
        "finished_at_ms": summary(col("finished_at_ms")),
        "log_queued_ms": summary(col("log_queued_ms")),
        "log_started_ms": summary(col("log_started_ms")),
        "log_completed_ms": summary(col("log_completed_ms")),
        "daemon_rss_kb_after": daemon_rss,
        "slowest": sorted(rows, key=lambda r: -(r["running_seen_ms"] or r["completed_seen_ms"]))[:5],
    }


# -- 2. throughput -----------------------------------------------------------------------
def bench_throughput(base: Path, n_jobs: int, tag: str = "throughput") -> dict:
    root = base / tag / "spool"
    d = new_daemon(root)
    start_timed(d)
    stage = base / tag / "stage"
    stage.mkdir()
    ids = [f"tp-{i:05d}" for i in range(n_jobs)]
    body = json.dumps(PROBE)
    for jid in ids:
        (stage / f"{jid}.json").write_text(body)
    inbox = root / "inbox"
    tail = LogTail(d.log_path)
    pids = [d.proc.pid] + [w["pid"] for w in d.heartbeat["workers"]]
    time.sleep(0.6)  # let the daemon go idle again after start (one rescan period)
    cpu0 = [cpu_seconds(p) for p in pids]
    dsys0 = cpu_seconds(d.proc.pid, "sys")
    sys0, self0, k0 = system_cpu(), os.times(), kernel_threads_cpu()
    try:
        t_wall = time.time()
        t0 = time.perf_counter()
        for jid in ids:
            os.rename(stage / f"{jid}.json", inbox / f"{jid}.json")
        t_dropped = time.perf_counter() - t0
        done = wait_final_by_log(tail, set(ids), time.monotonic() + 300, d)
        t_seen = time.perf_counter() - t0
        cpu1 = [cpu_seconds(p) for p in pids]
        dsys1 = cpu_seconds(d.proc.pid, "sys")
        sys1, self1, k1 = system_cpu(), os.times(), kernel_threads_cpu()
        rss = rss_report(d)
    finally:
        d.stop()
    docs = [read_json(root / "outbox" / jid / "status.json") or {} for jid in ids]
    states: dict[str, int] = {}
    for doc in docs:
        states[doc.get("state", "missing")] = states.get(doc.get("state", "missing"), 0) + 1
    last_final = max(iso_ts(doc["updated_at"]) for doc in docs if doc.get("updated_at"))
    first_start = min(iso_ts(doc["started_at"]) for doc in docs if doc.get("started_at"))
    last_created = max(iso_ts(doc["created_at"]) for doc in docs if doc.get("created_at"))
    started_while_accepting = sum(1 for doc in docs if doc.get("started_at") and iso_ts(doc["started_at"]) < last_created)
    elapsed = last_final - t_wall
    # completions per second, in 1 s buckets from the first drop
    finals = sorted(iso_ts(doc["updated_at"]) - t_wall for doc in docs if doc.get("updated_at"))
    per_second = [0] * (int(finals[-1]) + 1)
    for f in finals:
        per_second[int(f)] += 1
    cpu = {"daemon": cpu1[0] - cpu0[0], "daemon_sys": dsys1 - dsys0, "workers": [b - a for a, b in zip(cpu0[1:], cpu1[1:])],
           "bench": (self1.user + self1.system) - (self0.user + self0.system), "machine": cpu_delta(sys0, sys1)}
    # CPU used on the machine by anything else during the run (other jobs disturb the figure)
    cpu["kernel_threads"] = k1 - k0
    cpu["other"] = max(0.0, cpu["machine"]["busy"] - cpu["daemon"] - sum(cpu["workers"]) - cpu["bench"] - cpu["kernel_threads"])
    return {
        "jobs": n_jobs, "states": states, "not_completed": sum(1 for v in done.values() if v != "completed"),
        "drop_s": t_dropped,
        "elapsed_s": elapsed,
        "jobs_per_s": n_jobs / elapsed,
        "seen_done_s": t_seen,
        "first_started_s": first_start - t_wall,
        "last_accepted_s": last_created - t_wall,
        "started_while_accepting": started_while_accepting,
        "run_phase_jobs_per_s": (n_jobs - started_while_accepting) / max(1e-9, last_final - last_created),
        "completed_per_second": per_second,
        "ms_per_job": elapsed / n_jobs * 1e3,
        "cpu_s": cpu,
        "rss_after": rss,
    }


# -- 3. RSS and restart with a full outbox --------------------------------------------------
def fill_outbox(root: Path, n: int) -> float:
    """Writes n finished probe jobs into outbox/ in the shape finish_publish leaves:
    status.json (completed), probe.txt, input/<id>.json, log.jsonl. No fsync (setup only)."""
    t0 = time.perf_counter()
    outbox = root / "outbox"
    outbox.mkdir(parents=True)
    base_ts = time.time() - 86400
    result_line = b"ran on cpu:0 pid 1\n"
    for i in range(n):
        jid = f"old-{i:06d}"
        out = outbox / jid
        (out / "input").mkdir(parents=True)
        created = datetime.fromtimestamp(base_ts + i * 0.01, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        job = {"id": jid, "kind": "probe", "model": None, "priority": 0,
               "params": {"seconds": 0.0, "step_seconds": 0.05, "marker_dir": None, "crash": False, "fail": None},
               "inputs": {}, "max_attempts": 3, "labels": {}, "preset": None,
               "_meta": {"created_at": created, "drop": f"inbox/{jid}.json", "accepted_by": HOST}}
        doc = new_status(jid, job, "completed", attempt=1, host=HOST, device=f"cpu:{i % 2}", stage="probing",
                         progress=100, started_at=created, finished_at=created, updated_at=created,
                         result={"files": [{"name": "probe.txt", "size": len(result_line), "sha256": "0" * 64,
                                            "media_type": "text/plain", "url": f"/api/v1/jobs/{jid}/files/probe.txt"}],
                                 "seconds": {"run": 0.001}})
        (out / "status.json").write_bytes(json.dumps(doc, indent=1).encode() + b"\n")
        (out / "probe.txt").write_bytes(result_line)
        (out / "input" / f"{jid}.json").write_text(json.dumps(PROBE))
        (out / "log.jsonl").write_text("".join(
            json.dumps({"level": "info", "job_id": jid, "event": ev, "timestamp": created}) + "\n"
            for ev in ("job.queued", "job.started", "job.completed")))
    return time.perf_counter() - t0


def bench_outbox(base: Path, n_outbox: int, restarts: int) -> dict:
    res: dict = {}
    # baseline: empty spool
    root0 = base / "empty" / "spool"
    d0 = new_daemon(root0)
    res["empty_start"] = start_timed(d0)
    try:
        drop_all_and_wait(d0, [f"warm-{i}" for i in range(10)])
        time.sleep(0.5)
        res["empty_rss"] = rss_report(d0)
    finally:
        d0.stop()

    root = base / "full" / "spool"
    res["outbox_jobs"] = n_outbox
    res["fill_s"] = fill_outbox(root, n_outbox)
    d = new_daemon(root)
    res["first_start"] = start_timed(d)
    try:
        drop_all_and_wait(d, [f"warm-{i}" for i in range(10)])
        time.sleep(0.5)
        res["rss"] = rss_report(d)
    finally:
        t = time.perf_counter()
        d.stop()
        res["stop_s"] = time.perf_counter() - t
    res["restarts"] = []
    for r in range(restarts):
        d = new_daemon(root)
        res["restarts"].append(start_timed(d))
        try:
            if r == restarts - 1:
                drop_all_and_wait(d, [f"again-{i}" for i in range(10)])
                time.sleep(0.5)
                res["rss_after_restart"] = rss_report(d)
        finally:
            d.stop()
    # the same restart with the default heartbeat period (3 s): readiness is only
    # visible in hosts/<host>.json at the next beat
    res["restarts_default_heartbeat"] = []
    for _ in range(restarts):
        d = new_daemon(root, VIDSPOOL_SPOOL__HEARTBEAT_SECONDS="3")
        try:
            res["restarts_default_heartbeat"].append(start_timed(d))
        finally:
            d.stop()
    return res


# -- syscall census (optional: needs strace and ptrace permission) -----------------------
def bench_syscalls(base: Path, n_jobs: int) -> dict | None:
    strace = shutil.which("strace")
    if not strace:
        return None
    root = base / "strace" / "spool"
    d = new_daemon(root)
    start_timed(d)
    pids = [d.proc.pid] + [w["pid"] for w in d.heartbeat["workers"]]
    summary_file = base / "strace" / "summary.txt"
    time.sleep(0.6)
    args = [strace, "-f", "-c", "-S", "calls", "-o", str(summary_file),
            "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,mkdir,mkdirat,openat,unlink,unlinkat,rmdir,getdents64,write,read,newfstatat,statx"]
    for p in pids:
        args += ["-p", str(p)]
    tracer = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    try:
        if tracer.poll() is not None:
            return {"error": tracer.stderr.read().decode()[-500:]}
        # one at a time, like the latency run
        ids = [f"st-{i:04d}" for i in range(n_jobs)]
        inbox = root / "inbox"
        for jid in ids:
            tail = LogTail(d.log_path)
            tmp = inbox / f".{jid}.json.part"
            tmp.write_text(json.dumps(PROBE))
            os.rename(tmp, inbox / f"{jid}.json")
            wait_final_by_log(tail, {jid}, time.monotonic() + 30, d)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(10)
        d.stop()
    calls: dict[str, int] = {}
    for line in summary_file.read_text().splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if m:
            calls[m.group(2)] = int(m.group(1))
    return {"jobs": n_jobs, "note": "whole process group (daemon + 2 workers), including idle loop turns while traced",
            "calls": calls, "per_job": {k: round(v / n_jobs, 1) for k, v in calls.items()}}


# -- report ----------------------------------------------------------------------------
def machine() -> dict:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    fs = subprocess.run(["df", "-T", tempfile.gettempdir()], capture_output=True, text=True).stdout.splitlines()[-1].split()
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--short", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout.split("\n")
    return {"nproc": os.cpu_count(), "cpu": cpu, "tmp": tempfile.gettempdir(), "tmp_fs": fs[1] if len(fs) > 1 else "?",
            "tmp_device": fs[0], "mem_total_kb": int(mem), "kernel": platform.release(), "python": platform.python_version(),
            "git_head": git, "git_modified": [x.strip() for x in dirty if x.strip()]}


def verdict(value: float, target: float, higher_is_better: bool = False) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "MISS"


def print_report(R: dict) -> None:
    m = R["machine"]
    print()
    print(f"vidspool bench  {R['started']}  git {m['git_head']}{' (modified tree)' if m['git_modified'] else ''}")
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['mem_total_kb'] // 1024} MiB, {m['tmp']} on {m['tmp_fs']}, "
          f"kernel {m['kernel']}, Python {m['python']}")
    print()
    rows = []
    L = R.get("latency")
    if L:
        rows += [
            (f"pickup: drop -> 'running' seen, p50/p99 ({L['jobs']} jobs)", f"{L['running_seen_ms']['p50']:.1f} / {L['running_seen_ms']['p99']:.1f} ms",
             "p99 <= 100 ms", verdict(L["running_seen_ms"]["p99"], TARGETS["pickup_running_p99_ms"])),
            ("pickup: drop -> started_at (no polling), p50/p99", f"{L['started_at_ms']['p50']:.1f} / {L['started_at_ms']['p99']:.1f} ms",
             "p99 <= 100 ms", verdict(L["started_at_ms"]["p99"], TARGETS["pickup_running_p99_ms"])),
            ("pickup: drop -> 'completed' seen, p50/p99", f"{L['completed_seen_ms']['p50']:.1f} / {L['completed_seen_ms']['p99']:.1f} ms", "-", ""),
            ("pickup: max (running / completed)", f"{L['running_seen_ms']['max']:.1f} / {L['completed_seen_ms']['max']:.1f} ms", "-", ""),
        ]
    T = R.get("throughput")
    if T:
        rows += [
            (f"throughput: {T['jobs']} jobs at once, 2 workers", f"{T['jobs_per_s']:.0f} jobs/s ({T['elapsed_s']:.2f} s)",
             ">= 100 jobs/s", verdict(T["jobs_per_s"], TARGETS["throughput_jobs_per_s"], True)),
            ("throughput: per job (elapsed / jobs)", f"{T['ms_per_job']:.2f} ms", "-", ""),
            ("throughput: accept phase (last created_at)", f"{T['last_accepted_s']:.2f} s, {T['started_while_accepting']} jobs started meanwhile", "-", ""),
            ("throughput: run phase after last accept", f"{T['run_phase_jobs_per_s']:.0f} jobs/s", "-", ""),
            ("throughput: daemon RSS after the burst", f"{T['rss_after']['daemon']['VmRSS'] / 1024:.1f} MiB (peak {T['rss_after']['daemon']['VmHWM'] / 1024:.1f})", "-", ""),
            ("throughput: CPU s daemon / workers / other procs", f"{T['cpu_s']['daemon']:.2f} / " + " + ".join(f"{c:.2f}" for c in T["cpu_s"]["workers"])
             + f" / {T['cpu_s']['other']:.2f} s (kernel threads {T['cpu_s']['kernel_threads']:.2f}, iowait {T['cpu_s']['machine']['iowait']:.2f})", "-", ""),
        ]
    T2 = R.get("throughput_hot")
    if T2:
        rows += [("throughput: same again at once after (hot fs)", f"{T2['jobs_per_s']:.0f} jobs/s ({T2['elapsed_s']:.2f} s)",
                  ">= 100 jobs/s", verdict(T2["jobs_per_s"], TARGETS["throughput_jobs_per_s"], True))]
    if R.get("queue_listing_ms_1000"):
        rows += [("diag: Spool.queued_names() over 1000 queued", f"{R['queue_listing_ms_1000']:.2f} ms per call", "-", "")]
    O = R.get("outbox")
    if O:
        rss_mb = O["rss"]["daemon"]["VmRSS"] / 1024
        wk = [w["VmRSS"] / 1024 for w in O["rss"]["workers"].values()]
        restarts = [r["ready_s"] for r in O["restarts"]]
        worst = max(restarts)
        rows += [
            (f"RSS daemon, {O['outbox_jobs']} jobs in outbox", f"{rss_mb:.1f} MiB (peak {O['rss']['daemon']['VmHWM'] / 1024:.1f})",
             "<= 120 MB", verdict(rss_mb, TARGETS["daemon_rss_mb"])),
            ("RSS daemon, empty spool", f"{O['empty_rss']['daemon']['VmRSS'] / 1024:.1f} MiB", "-", ""),
            ("RSS each worker", " / ".join(f"{x:.1f}" for x in wk) + " MiB", "-", ""),
            ("RSS other children (multiprocessing resource_tracker)",
             " / ".join(f"{v['VmRSS'] / 1024:.1f}" for v in O["rss"]["other_children"].values()) + " MiB", "-", ""),
            (f"restart -> ready, {len(restarts)} restarts (worst)", " / ".join(f"{x:.2f}" for x in restarts) + " s",
             "<= 3 s", verdict(worst, TARGETS["restart_s"])),
            ("  recovery_seconds (daemon.ready)", " / ".join(f"{r.get('recovery_seconds', float('nan')):.3f}" for r in O["restarts"]) + " s", "-", ""),
            ("  daemon.ready / last worker.ready in log", " / ".join(f"{r.get('log_daemon_ready_s', float('nan')):.2f}|{r.get('log_last_worker_ready_s', float('nan')):.2f}" for r in O["restarts"]) + " s", "-", ""),
            ("first start (10k outbox) / empty spool", f"{O['first_start']['ready_s']:.2f} / {O['empty_start']['ready_s']:.2f} s", "-", ""),
            ("restarts with heartbeat_seconds=3 (default)", " / ".join(f"{r['ready_s']:.2f}" for r in O["restarts_default_heartbeat"]) + " s",
             "(<= 3 s)", verdict(max(r["ready_s"] for r in O["restarts_default_heartbeat"]), TARGETS["restart_s"])),
        ]
    F = R.get("floor")
    if F:
        rows += [
            ("floor: atomic status write (tmp+fsync+rename) p50/p99/max",
             f"{F['atomic_write_ms']['p50']:.2f} / {F['atomic_write_ms']['p99']:.2f} / {F['atomic_write_ms']['max']:.1f} ms", "-", ""),
            ("floor: one job's file work p50/p99/max",
             f"{F['job_file_work_ms']['p50']:.2f} / {F['job_file_work_ms']['p99']:.2f} / {F['job_file_work_ms']['max']:.1f} ms", "-", ""),
        ]
    RA = R.get("ratios")
    if RA:
        rows += [(f"ratio: {k}", f"{v:.1f}x", "-", "") for k, v in RA.items()]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    print(f"{'measure':<{w0}}  {'value':<{w1}}  {'target':<{w2}}  ")
    print("-" * (w0 + w1 + w2 + 12))
    for a, b, c, d in rows:
        print(f"{a:<{w0}}  {b:<{w1}}  {c:<{w2}}  {d}")
    S = R.get("syscalls")
    if S and "per_job" in S:
        keys = ("fsync", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "openat", "unlink", "unlinkat", "rmdir", "getdents64")
        print()
        print(f"syscalls per job (strace, {S['jobs']} jobs one at a time, daemon + workers): "
              + ", ".join(f"{k} {S['per_job'][k]}" for k in keys if k in S["per_job"]))
    print()
    P = R.get("fs_probe_us") or {}
    if P:
        print("fs probe, µs to create a file at the start of each part (about 20 on a rested fs): "
              + ", ".join(f"{k} {v:.0f}" for k, v in P.items()))
    D = R.get("disturbance") or {}
    if D:
        print("CPU used by other processes during each part (0 = quiet machine): "
              + ", ".join(f"{k} {v['other_s']:.2f} s of {v['wall_s']:.0f} s" for k, v in D.items()))
    la = R.get("loadavg", {})
    if la:
        print(f"load average at start {la['start'][0]:.2f}, at end {la.get('end', [float('nan')])[0]:.2f} "
              "(the bench itself adds about 1; much more means something else was running)")
    print(f"total bench time {R['bench_seconds']:.0f} s; results in {R['args']['out']}")


def fs_probe(base: Path, n: int = 300) -> float:
    """µs to create one empty file in a fresh folder: shows the state of the filesystem
    (on ext4 without a journal, inode allocation slows for ~30 s after many deletions)."""
    d = base / f"fsprobe-{secrets.token_hex(4)}"
    d.mkdir()
    t = time.perf_counter()
    for i in range(n):
        os.close(os.open(d / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
    return (time.perf_counter() - t) / n * 1e6


def queue_listing_ms(base: Path, n: int = 1000) -> float:
    """ms for one Spool.queued_names() over n queued jobs (what refresh_queue costs)."""
    from daemon.spool.layout import QueueName, Spool

    sp = Spool(base / "queue-listing", HOST)
    sp.create()
    for i in range(n):
        os.mkdir(sp.queue / str(QueueName.new(f"q-{i:05d}", 0)))
    t = time.perf_counter()
    for _ in range(20):
        sp.queued_names()
    return (time.perf_counter() - t) / 20 * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency-jobs", type=int, default=500)
    ap.add_argument("--throughput-jobs", type=int, default=1000)
    ap.add_argument("--outbox-jobs", type=int, default=10_000)
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--strace-jobs", type=int, default=50, help="0 skips the syscall census")
    ap.add_argument("--cooldown", type=float, default=35.0,
                    help="seconds of rest before the floor, throughput and latency parts, so that earlier file "
                         "deletions (ext4 avoids reusing inodes freed in the last 30 s) do not slow them; 0 skips")
    ap.add_argument("--only", nargs="*", choices=["floor", "throughput", "latency", "outbox", "syscalls"])
    ap.add_argument("--keep", action="store_true", help="keep the temp spools (path printed)")
    ap.add_argument("--out", type=Path, default=OUT / "results.json")
    args = ap.parse_args()
    want = set(args.only or ["floor", "throughput", "latency", "outbox", "syscalls"])

    t_start = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="vidspool-bench-"))
    probe = Daemon(base / "x")
    R: dict = {"started": datetime.now().isoformat(timespec="seconds"), "machine": machine(),
               "settings": {k: v for k, v in probe.settings.items() if k not in ("VIDSPOOL_SPOOL__ROOT", "VIDSPOOL_SPOOL__HOST")}
               | {"VIDSPOOL_SPOOL__HOST": HOST, "VIDSPOOL_WORKERS__DEVICES": '["cpu", "cpu"]'},
               "config_file": "config.toml of the repo (defaults for anything not set above)",
               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "loadavg": {"start": os.getloadavg()}, "disturbance": {}, "fs_probe_us": {}}

    def part(name: str, title: str, fn, cooldown: bool = False):
        if cooldown and args.cooldown > 0:
            print(f"  (resting {args.cooldown:.0f} s first)", flush=True)
            time.sleep(args.cooldown)
        print(title, flush=True)
        R["fs_probe_us"][name] = fs_probe(base)
        a = snapshot()
        R[name] = fn()
        R["disturbance"][name] = disturbance(a, snapshot())

    try:
        if "floor" in want:
            part("floor", "floor: atomic writes and one job's file work ...", lambda: bench_floor(base, 500, 300), cooldown=True)
        if "throughput" in want:
            part("throughput", f"throughput: {args.throughput_jobs} jobs at once ...",
                 lambda: bench_throughput(base, args.throughput_jobs), cooldown=True)
            part("throughput_hot", f"throughput: {args.throughput_jobs} jobs at once again, right after ...",
                 lambda: bench_throughput(base, args.throughput_jobs, "throughput_hot"))
            R["queue_listing_ms_1000"] = queue_listing_ms(base)
        if "latency" in want:
            part("latency", f"latency: {args.latency_jobs} jobs one at a time ...",
                 lambda: bench_latency(base, args.latency_jobs, warmup=5, gap=0.02), cooldown=True)
        if "outbox" in want:
            part("outbox", f"outbox: {args.outbox_jobs} finished jobs, RSS and restarts ...",
                 lambda: bench_outbox(base, args.outbox_jobs, args.restarts))
        if "syscalls" in want and args.strace_jobs:
            print(f"syscalls: strace over {args.strace_jobs} jobs ...", flush=True)
            try:
                R["syscalls"] = bench_syscalls(base, args.strace_jobs)
            except Exception as exc:  # noqa: BLE001 - optional
                R["syscalls"] = {"error": repr(exc)}
        R["loadavg"]["end"] = os.getloadavg()
        F, L, T = R.get("floor"), R.get("latency"), R.get("throughput")
        if F:
            floor = F["job_file_work_ms"]["p50"]
            R["ratios"] = {}
            if T:
                R["ratios"]["throughput per-job cost / floor job"] = T["ms_per_job"] / floor
            S = R.get("syscalls") or {}
            if "per_job" in S:
                R["ratios"]["fsyncs per job, daemon+worker / floor (4)"] = S["per_job"].get("fsync", 0) / 4
            if L:
                R["ratios"]["latency drop->completed p50 / floor job"] = L["completed_seen_ms"]["p50"] / floor
                R["ratios"]["latency drop->running p50 / floor job"] = L["running_seen_ms"]["p50"] / floor
    finally:
        stop_leftovers()
        R["bench_seconds"] = time.perf_counter() - t_start
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(R, indent=1, default=str) + "\n")
        if args.keep:
            print(f"spools kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print_report(R)
    return 0


if __name__ == "__main__":
    sys.exit(main())
