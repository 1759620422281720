#!/usr/bin/env python
"""vidspool shared-spool benchmark: real daemons sharing one spool over real sshfs mounts.

`.venv/bin/python bench/shared.py` starts an sshd on loopback (tests/netfs.py `SshExport`),
sshfs mounts of its export folder (`dir_cache=no`, the fixture default), and real
`python -m daemon run` processes (tests/support.py `Daemon`, one CPU worker each). A daemon
"on the local path" uses the export folder directly (it runs on the file server); the others
reach the same spool only through an sshfs mount. Jobs are dropped on the local path, as a
user on the file server would.

  pickup     an sshfs-only daemon, one job at a time: drop (rename) -> status `started_at`;
             with rescan_seconds 2 (the default) and 0.5, and once with all of the
             config.toml spool defaults (rescan 2, stable 3);
  throughput N instant jobs renamed into inbox/ at once, with 1, 2 and 3 daemons
             (local + sshfs, and all through sshfs); again with 0.2 s jobs;
  takeover   daemon B (sshfs) runs a 30 s job, daemon A (local path) is idle; SIGKILL B;
             kill -> the job "running" on A (attempt 2). Lease 4 / heartbeat 0.5 /
             rescan 0.5 (the tests' settings), and once the defaults 30 / 3 / 2.

Every daemon, mount and sshd it starts is stopped when it ends, also on failure.
Prints a table and writes bench/out/shared.json. See BENCHMARKS.md, "Shared spool over sshfs".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sys
import subprocess
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
sys.path.insert(0, str(REPO))

from bench.run import cpu_seconds, fs_probe, iso_ts, kernel_threads_cpu, machine, read_json, summary, system_cpu  # noqa: E402
from tests.netfs import SshExport, _descendants, _kill_exact, _proc_stat, _wait_gone, is_mounted  # noqa: E402
from tests.support import FINAL, Daemon, status  # noqa: E402

# The shared-spool settings of tests/test_shared_spool.py (the other Daemon defaults apply:
# stable_seconds 1, workers restart backoff 0.1 s, drain 5 s, API on a free port, JSON log).
SHARED = {
    "VIDSPOOL_SPOOL__LEASE_SECONDS": "4",
    "VIDSPOOL_SPOOL__HEARTBEAT_SECONDS": "0.5",
    "VIDSPOOL_SPOOL__RESCAN_SECONDS": "0.5",
}
# config.toml's values for the same three.
DEFAULTS = {
    "VIDSPOOL_SPOOL__LEASE_SECONDS": "30",
    "VIDSPOOL_SPOOL__HEARTBEAT_SECONDS": "3",
    "VIDSPOOL_SPOOL__RESCAN_SECONDS": "2",
}
PROBE = {"kind": "probe"}  # finishes at once, writes one small result file
SLOW = {"kind": "probe", "params": {"seconds": 0.2}}  # sleeps 0.2 s (4 steps, progress each)
LONG = {"kind": "probe", "params": {"seconds": 30}}


def ms(seconds: float) -> float:
    return seconds * 1e3


# -- our processes: daemons (and what they leave behind), CPU accounting -------------------
class Fleet:
    """Every daemon this bench starts; stopped (and their workers swept) even on failure."""

    def __init__(self):
        self.daemons: list[Daemon] = []
        self.known: dict[int, list[tuple[int, int]]] = {}  # daemon pid -> its (pid, starttime) descendants

    def add(self, d: Daemon) -> Daemon:
        self.daemons.append(d)
        return d

    def start_all(self, daemons: list[Daemon], timeout: float = 60) -> None:
        """Starts the first (it creates the spool), then the rest at once; waits until all are ready."""
        first, rest = daemons[0], daemons[1:]
        self.add(first).start(wait=False)
        first.wait_ready(timeout)
        for d in rest:
            self.add(d).start(wait=False)
        for d in rest:
            d.wait_ready(timeout)
        for d in daemons:
            self.remember(d)

    def remember(self, d: Daemon) -> None:
        if d.proc is not None and d.proc.poll() is None:
            seen = set(self.known.setdefault(d.proc.pid, []))
            self.known[d.proc.pid] += [x for x in _descendants(d.proc.pid) if x not in seen]

    def _sweep(self, d: Daemon) -> None:
        """Workers die with their daemon (PR_SET_PDEATHSIG) and multiprocessing's resource
        tracker on EOF; anything of it still there after 2 s is killed by pid."""
        left = self.known.pop(d.proc.pid, [])
        if left and not _wait_gone(left, 2):
            _kill_exact(left, signal.SIGKILL)
            _wait_gone(left, 3)

    def kill(self, d: Daemon) -> None:
        self.remember(d)
        d.kill()
        self._sweep(d)

    def stop(self, d: Daemon) -> None:
        if d.proc is None:
            return
        self.remember(d)
        if d.proc.poll() is None:
            try:
                d.stop(timeout=15)
            except AssertionError:
                pass  # Daemon.stop killed it
        self._sweep(d)

    def stop_all(self) -> None:
        for d in self.daemons:
            try:
                self.stop(d)
            except Exception as exc:  # noqa: BLE001 - stop the rest
                print(f"could not stop {d.host}: {exc!r}", file=sys.stderr)


def _tree_pids() -> list[int]:
    """Our live descendants by parent, plus every process in a session one of them leads
    (sshfs runs its ssh double-forked, with init as its parent)."""
    parent: dict[int, int] = {}
    session: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(d)], session[int(d)] = int(f[1]), int(f[3])
    me = os.getpid()
    tree, todo = set(), [me]
    kids: dict[int, list[int]] = {}
    for p, pp in parent.items():
        kids.setdefault(pp, []).append(p)
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in tree:
                tree.add(c)
                todo.append(c)
    tree |= {p for p, s in session.items() if s in tree and p != me}
    return sorted(tree)


def _proc_cpu(pid: int, with_children: bool = True) -> tuple[str, float]:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "", 0.0
    comm = raw[raw.index("(") + 1: raw.rindex(")")]
    f = raw.rsplit(")", 1)[1].split()
    ticks = int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if with_children else 0)
    return comm, ticks / os.sysconf("SC_CLK_TCK")


def snapshot() -> dict:
    """CPU seconds so far: the machine, kernel threads, and ours (this process, what it
    reaped, and every live process of our tree with what those reaped)."""
    t = os.times()
    ours = t.user + t.system + t.children_user + t.children_system
    by: Counter = Counter()
    for pid in _tree_pids():
        comm, own = _proc_cpu(pid, with_children=False)
        _, total = _proc_cpu(pid)
        ours += total
        by[{"sshfs": "sshfs", "ssh": "sshfs", "sshd": "sshd"}.get(comm, "daemons")] += own
    return {"machine": system_cpu(), "kthreads": kernel_threads_cpu(), "ours": ours, "live_by_kind": dict(by),
            "wall": time.perf_counter()}


def disturbance(a: dict, b: dict) -> dict:
    """CPU of a part: ours (bench, daemons, workers, sshd, sshfs) and other processes' (which
    skews the figures). sshfs/sshd are live throughout, so their deltas are theirs alone."""
    busy = b["machine"]["busy"] - a["machine"]["busy"]
    kth = b["kthreads"] - a["kthreads"]
    ours = b["ours"] - a["ours"]
    return {"wall_s": b["wall"] - a["wall"], "machine_busy_s": busy, "ours_s": ours, "kernel_threads_s": kth,
            "other_s": max(0.0, busy - ours - kth), "steal_s": b["machine"]["steal"] - a["machine"]["steal"],
            "sshfs_s": b["live_by_kind"].get("sshfs", 0) - a["live_by_kind"].get("sshfs", 0),
            "sshd_s": b["live_by_kind"].get("sshd", 0) - a["live_by_kind"].get("sshd", 0)}


def drop(inbox: Path, job_id: str, doc: dict) -> float:
    """Writes .ID.json.part, renames it to ID.json; returns the wall time just before the rename."""
    part = inbox / f".{job_id}.json.part"
    part.write_text(json.dumps(doc))
    t = time.time()
    os.rename(part, inbox / f"{job_id}.json")
    return t


def log_events(path: Path) -> list[dict]:
    out = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


class BeatWatch(threading.Thread):
    """Reads every daemon's hosts/<host>.json (on the local path) every 50 ms and records the
    longest time its counter stood still: how close a busy daemon comes to losing its lease."""

    def __init__(self, root: Path, hosts: list[str], interval: float = 0.05):
        super().__init__(daemon=True)
        self.root, self.hosts, self.interval = root, hosts, interval
        self.stop_flag = threading.Event()
        self.longest: dict[str, float] = {h: 0.0 for h in hosts}

    def run(self) -> None:
        last: dict[str, tuple] = {}
        since: dict[str, float] = {}
        while not self.stop_flag.is_set():
            now = time.monotonic()
            for h in self.hosts:
                doc = read_json(self.root / "hosts" / f"{h}.json") or {}
                c = (doc.get("pid"), doc.get("counter"))
                if c != last.get(h):
                    last[h], since[h] = c, now
                self.longest[h] = max(self.longest[h], now - since[h])
            time.sleep(self.interval)

    def stop(self) -> dict[str, float]:
        self.stop_flag.set()
        self.join(5)
        return dict(self.longest)


# -- 1. pickup latency over sshfs ---------------------------------------------------------
class Pipeline:
    """One sshfs-only daemon on its own spool, fed one job at a time from the local path."""

    def __init__(self, name: str, local: Path, daemon: Daemon, jobs: int, rescan: float, rng: random.Random):
        self.name, self.local, self.daemon, self.jobs, self.rescan, self.rng = name, local, daemon, jobs, rescan, rng
        self.sent = 0
        self.current: tuple[str, float, float] | None = None  # id, wall time of the rename, monotonic
        self.next_drop = time.monotonic() + rng.uniform(0, rescan)
        self.rows: list[dict] = []

    @property
    def done(self) -> bool:
        return self.sent >= self.jobs and self.current is None

    def step(self, now: float) -> None:
        if self.current is None:
            if self.sent < self.jobs and now >= self.next_drop:
                jid = f"{self.name}-{self.sent:03d}"
                self.current = (jid, drop(self.local / "inbox", jid, PROBE), time.monotonic())
                self.sent += 1
            return
        jid, t_wall, t_mono = self.current
        doc = status(self.local, jid)
        if doc and doc.get("state") != "queued":
            self.rows.append({"id": jid, "t_wall": t_wall, "seen_ms": ms(time.monotonic() - t_mono)})
            self.current = None
            # A random pause of up to one rescan period: the next drop lands at a random
            # phase of the daemon's rescan (right after a pickup it would always land just
            # after one).
            self.next_drop = time.monotonic() + self.rng.uniform(0, self.rescan)
        elif time.monotonic() - t_mono > 60:
            raise RuntimeError(f"{jid}: not running 60 s after the drop (status {doc}):\n{self.daemon.log()}")


def bench_pickup(ex: SshExport, mounts, fleet: Fleet, logs: Path, configs: list[dict], seed: int) -> dict:
    rng = random.Random(seed)
    pipes: list[Pipeline] = []
    k = 0
    for cfg in configs:
        per = -(-cfg["jobs"] // cfg["pipelines"])
        left = cfg["jobs"]
        for p in range(cfg["pipelines"]):
            sub = f"pickup-{cfg['name']}-{p}"
            d = Daemon(mounts[k].path / sub / "spool", host=f"{cfg['name']}-{p}", workers=["cpu"], log_dir=logs,
                       **cfg["settings"])
            pipes.append(Pipeline(f"{cfg['name']}-{p}", ex.path / sub / "spool", d, min(per, left),
                                  float(cfg["settings"]["VIDSPOOL_SPOOL__RESCAN_SECONDS"]), rng))
            left -= min(per, left)
            k += 1
    # every daemon creates its own spool (nothing else is shared): start them all at once
    for p in pipes:
        fleet.add(p.daemon).start(wait=False)
    for p in pipes:
        p.daemon.wait_ready()
        fleet.remember(p.daemon)
    t0 = time.perf_counter()
    now = time.monotonic()
    for p in pipes:
        p.next_drop = now + rng.uniform(0, p.rescan)
    while not all(p.done for p in pipes):
        now = time.monotonic()
        for p in pipes:
            p.step(now)
        time.sleep(0.01)
    run_s = time.perf_counter() - t0
    # the final status keeps started_at and created_at (both written by the daemon, 1 ms)
    for p in pipes:
        for r in p.rows:
            deadline = time.monotonic() + 30
            while True:
                doc = status(p.local, r["id"]) or {}
                if doc.get("state") in FINAL:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{r['id']}: not final: {doc}")
                time.sleep(0.02)
            r["state"] = doc["state"]
            r["started_ms"] = ms(iso_ts(doc["started_at"]) - r["t_wall"])
            r["accepted_ms"] = ms(iso_ts(doc["created_at"]) - r["t_wall"])
            r["finished_ms"] = ms(iso_ts(doc["finished_at"]) - r["t_wall"])
    for p in pipes:
        fleet.stop(p.daemon)
    out = {"run_s": run_s, "configs": {}}
    for cfg in configs:
        rows = [r for p in pipes if p.name.startswith(cfg["name"] + "-") for r in p.rows]
        out["configs"][cfg["name"]] = {
            "settings": cfg["settings"], "pipelines": cfg["pipelines"], "jobs": len(rows),
            "not_completed": sum(1 for r in rows if r["state"] != "completed"),
            "started_ms": summary([r["started_ms"] for r in rows]),
            "started_min_ms": min(r["started_ms"] for r in rows),
            "accepted_ms": summary([r["accepted_ms"] for r in rows]),
            "accept_to_start_ms": summary([r["started_ms"] - r["accepted_ms"] for r in rows]),
            "finished_ms": summary([r["finished_ms"] for r in rows]),
            "seen_running_ms": summary([r["seen_ms"] for r in rows]),
            "rows": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
        }
    return out


# -- 2. throughput ------------------------------------------------------------------------
def bench_throughput(ex: SshExport, mounts, fleet: Fleet, logs: Path, tag: str, local: bool, n_ssh: int,
                     n_jobs: int, doc: dict) -> dict:
    sub = f"tp-{tag}"
    root = ex.path / sub / "spool"
    roots = ([("local", root)] if local else []) + [(f"sshfs{i + 1}", mounts[i].path / sub / "spool") for i in range(n_ssh)]
    daemons = [Daemon(r, host=f"{tag}-{name}", workers=["cpu"], log_dir=logs, **SHARED) for name, r in roots]
    fleet.start_all(daemons)
    stage = ex.path / sub / "stage"
    stage.mkdir()
    ids = [f"tp-{i:04d}" for i in range(n_jobs)]
    body = json.dumps(doc)
    for jid in ids:
        (stage / f"{jid}.json").write_text(body)
    inbox = root / "inbox"
    pids = [d.proc.pid for d in daemons]
    time.sleep(0.6)  # one rescan period: every daemon idle again after its start
    cpu0 = [cpu_seconds(p) for p in pids]
    beats = BeatWatch(root, [d.host for d in daemons])
    beats.start()
    try:
        t_wall = time.time()
        t0 = time.perf_counter()
        for jid in ids:
            os.rename(stage / f"{jid}.json", inbox / f"{jid}.json")
        drop_s = time.perf_counter() - t0
        docs: dict[str, dict] = {}
        pending = list(ids)
        deadline = time.monotonic() + 300
        while pending:
            still = []
            for jid in pending:
                s = status(root, jid)
                if s and s["state"] in FINAL:
                    docs[jid] = s
                else:
                    still.append(jid)
            pending = still
            if pending:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{tag}: {len(pending)} jobs not final in 300 s, e.g. {pending[:3]}")
                time.sleep(0.1)
        cpu1 = [cpu_seconds(p) for p in pids]
    finally:
        silence = beats.stop()
        for d in daemons:
            fleet.stop(d)
    last = max(iso_ts(s["updated_at"]) for s in docs.values())
    elapsed = last - t_wall
    # a live daemon declared dead by another (its heartbeat stood still for the lease)
    takeovers = [{"by": d.host, "dead_host": e.get("dead_host"), "entries": e.get("jobs"), "at_s": iso_ts(e["timestamp"]) - t_wall}
                 for d in daemons for e in log_events(d.log_path) if e.get("event") == "host.dead"]
    lost = sum(1 for d in daemons for e in log_events(d.log_path) if e.get("event") in ("job.lost", "job.publish_failed"))
    by_host = Counter(s["host"] for s in docs.values())
    first_by_host = {}
    for s in docs.values():
        h, t = s["host"], iso_ts(s["started_at"]) - t_wall
        first_by_host[h] = min(first_by_host.get(h, t), t)
    return {
        "daemons": [d.host for d in daemons], "local": local, "sshfs": n_ssh, "jobs": n_jobs, "job": doc,
        "states": dict(Counter(s["state"] for s in docs.values())),
        "retried": sum(1 for s in docs.values() if (s.get("attempt") or 1) > 1),
        "drop_s": drop_s, "elapsed_s": elapsed, "jobs_per_s": n_jobs / elapsed,
        "first_started_s": min(first_by_host.values()),
        # the rate once the first job runs (leaves out the pickup delay of sshfs-only daemons)
        "run_jobs_per_s": n_jobs / (elapsed - min(first_by_host.values())),
        "last_accepted_s": max(iso_ts(s["created_at"]) for s in docs.values()) - t_wall,
        "jobs_by_host": dict(by_host), "first_started_by_host_s": first_by_host,
        "cpu_s_by_daemon": {d.host: b - a for d, a, b in zip(daemons, cpu0, cpu1)},
        # longest time (50 ms sampling) a daemon's heartbeat counter did not move during the
        # burst; other daemons take its running jobs once this reaches lease_seconds (4 here)
        "longest_heartbeat_silence_s": silence,
        "host_dead_events": takeovers, "job_lost_or_publish_failed_events": lost,
    }


# -- 3. takeover after SIGKILL --------------------------------------------------------------
def bench_takeover(ex: SshExport, mount, fleet: Fleet, logs: Path, tag: str, settings: dict, rng: random.Random) -> dict:
    sub = f"takeover-{tag}"
    root = ex.path / sub / "spool"
    run_logs = logs / sub
    run_logs.mkdir(parents=True)
    lease = float(settings["VIDSPOOL_SPOOL__LEASE_SECONDS"])
    hb = float(settings["VIDSPOOL_SPOOL__HEARTBEAT_SECONDS"])
    rescan = float(settings["VIDSPOOL_SPOOL__RESCAN_SECONDS"])
    b = Daemon(mount.path / sub / "spool", host="host-b", workers=["cpu"], log_dir=run_logs, **settings)
    a = Daemon(root, host="host-a", workers=["cpu"], log_dir=run_logs, **settings)
    fleet.start_all([b])  # B alone first, so that B (not A) claims the job
    jid = "long"
    drop(root / "inbox", jid, LONG)
    deadline = time.monotonic() + 60
    while True:
        s = status(root, jid) or {}
        if s.get("state") == "running" and s.get("host") == "host-b":
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"B did not start the job: {s}\n{b.log()}")
        time.sleep(0.02)
    fleet.start_all([a])
    # A has beaten (and read B's counter) at its start; kill B at a random phase of its beat.
    time.sleep(0.5 + rng.uniform(0, hb))
    b_beat = b.heartbeat
    b_workers = [w["pid"] for w in b_beat.get("workers", []) if w.get("pid")]
    fleet.remember(b)
    t_kill = time.time()
    fleet.kill(b)
    t_kill_mono = time.monotonic()
    seen = {}
    deadline = t_kill_mono + lease + 4 * hb + 2 * rescan + 30
    while True:
        s = status(root, jid) or {}
        now = time.time()
        if s.get("state") == "queued" and "queued" not in seen:
            seen["queued"] = now
        if s.get("state") == "running" and s.get("host") == "host-a":
            seen["running_a"] = now
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"no takeover {deadline - t_kill_mono:.0f} s after the kill: {s}\n{a.log()}")
        time.sleep(0.01)
    workers_gone = not any(_proc_stat(p) for p in b_workers)
    time.sleep(0.05)
    ev = {}
    for e in log_events(a.log_path):
        name = e.get("event")
        if name in ("host.dead", "job.requeued", "job.started") and name not in ev:
            if name == "host.dead" or e.get("job_id") == jid:
                ev[name] = iso_ts(e["timestamp"]) - t_kill
    fleet.kill(a)  # it runs the 30 s job now; the spool is not used again
    took = iso_ts(s["started_at"]) - t_kill
    return {
        "settings": settings, "lease_s": lease, "heartbeat_s": hb, "rescan_s": rescan,
        "target_s": lease + rescan,
        "takeover_s": took, "met": took <= lease + rescan,
        "seen_running_on_a_s": seen["running_a"] - t_kill,
        "seen_queued_s": seen["queued"] - t_kill if "queued" in seen else None,
        "attempt": s.get("attempt"), "host": s.get("host"),
        "since_b_last_beat_s": t_kill - iso_ts(b_beat.get("updated_at")) if b_beat.get("updated_at") else None,
        "log_host_dead_s": ev.get("host.dead"), "log_requeued_s": ev.get("job.requeued"),
        "log_started_s": ev.get("job.started"),
        "b_workers_gone": workers_gone,
    }


def takeovers_at_once(ex: SshExport, mounts, fleet: Fleet, logs: Path, n: int, settings: dict, seed: int) -> list[dict]:
    """N takeovers in threads, each with its own spool, mount and pair of daemons (they share
    only the CPU; each one mostly waits out the lease)."""
    results: list = [None] * n

    def one(i: int) -> None:
        try:
            results[i] = bench_takeover(ex, mounts[i % len(mounts)], fleet, logs, f"defaults-{i + 1}", settings,
                                        random.Random(seed + i + 1))
        except BaseException as exc:  # noqa: BLE001 - raised below
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


# -- 4. (optional) syscall census of sshfs daemons in a burst -------------------------------
def _area(path: str) -> str:
    """Which spool folder a path is in: inbox, queue, active/intake|job|publish, outbox, hosts."""
    parts = path.split("/spool/", 1)[-1].split("/")
    if parts[0] == "active":
        name = parts[2] if len(parts) > 2 else ""
        return "active/" + ("intake" if name.startswith(".intake.") else "publish" if name.startswith(".publish-") else
                            "job" if len(parts) == 3 else "job-file")
    return parts[0]


def bench_census(ex: SshExport, mounts, fleet: Fleet, logs: Path, n_daemons: int, n_jobs: int) -> dict:
    """N all-sshfs daemons take a burst while strace watches each daemon (not its workers):
    which renames they win and lose, and what file syscalls cost over sshfs. strace slows
    every syscall, so the rates here are not throughput figures."""
    if not shutil.which("strace"):
        return {"error": "strace is not installed"}
    sub = "census"
    root = ex.path / sub / "spool"
    daemons = [Daemon(mounts[i].path / sub / "spool", host=f"census-{i + 1}", workers=["cpu"], log_dir=logs, **SHARED)
               for i in range(n_daemons)]
    fleet.start_all(daemons)
    stage = ex.path / sub / "stage"
    stage.mkdir()
    ids = [f"c-{i:04d}" for i in range(n_jobs)]
    for jid in ids:
        (stage / f"{jid}.json").write_text(json.dumps(PROBE))
    traces = []
    try:
        for d in daemons:
            out = logs / f"strace-{d.host}.txt"
            traces.append((subprocess.Popen(
                ["strace", "-tt", "-T", "-o", str(out), "-p", str(d.proc.pid), "-e",
                 "trace=rename,renameat,renameat2,mkdir,mkdirat,openat,unlink,unlinkat,rmdir,fsync,newfstatat,statx,getdents64"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out))
        time.sleep(1.0)
        for jid in ids:
            os.rename(stage / f"{jid}.json", root / "inbox" / f"{jid}.json")
        deadline = time.monotonic() + 300
        while not all((status(root, j) or {}).get("state") in FINAL for j in ids):
            if time.monotonic() > deadline:
                raise RuntimeError("census: jobs not final in 300 s")
            time.sleep(0.2)
        time.sleep(0.3)
    finally:
        for p, _ in traces:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for d in daemons:
            fleet.stop(d)
    by_host = Counter((status(root, j) or {}).get("host") for j in ids)
    out = {"daemons": n_daemons, "jobs": n_jobs, "per_daemon": {}}
    pat = re.compile(r"^(\d+):(\d+):([\d.]+) (\w+)\((.*)\) += (-?\d+) ?(\w+)?.*<([\d.]+)>$")
    for d, (_, path) in zip(daemons, traces):
        calls, secs, renames, beats = Counter(), Counter(), Counter(), []
        for line in path.read_text().splitlines():
            m = pat.match(line)
            if not m:
                continue
            hh, mm, ss, call, args, rc, err, dur = m.groups()
            calls[call] += 1
            secs[call] += float(dur)
            if call.startswith("rename"):
                src, dst = (x.strip().strip('"') for x in args.split(", ")[:2])
                renames[f"{_area(src)} -> {_area(dst)}: {'ok' if rc == '0' else err}"] += 1
                if f"/hosts/.{d.host}.json" in src and rc == "0":
                    beats.append(int(hh) * 3600 + int(mm) * 60 + float(ss))
        ran = by_host.get(d.host, 0)
        out["per_daemon"][d.host] = {
            "jobs_run": ran, "renames": dict(sorted(renames.items())),
            "file_syscalls": sum(calls.values()), "file_syscalls_per_job_run": sum(calls.values()) / max(1, ran),
            "seconds_in_file_syscalls": sum(secs.values()),
            "calls": dict(calls.most_common()), "seconds_by_call": {k: round(v, 3) for k, v in secs.most_common()},
            "longest_gap_between_heartbeats_s": max((b - a for a, b in zip(beats, beats[1:])), default=None),
        }
    return out


# -- report -------------------------------------------------------------------------------
def print_report(R: dict) -> None:
    m = R["machine"]
    print()
    print(f"vidspool shared-spool bench  {R['started']}  git {m['git_head']}{' (modified tree)' if m['git_modified'] else ''}")
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['mem_total_kb'] // 1024} MiB, {m['tmp']} on {m['tmp_fs']}, "
          f"kernel {m['kernel']}, Python {m['python']}; sshfs dir_cache=no over ssh on 127.0.0.1")
    rows = []
    P = R.get("pickup")
    if P:
        for name, c in P["configs"].items():
            st = c["settings"]
            rows.append((f"pickup via sshfs, {name} (rescan {st['VIDSPOOL_SPOOL__RESCAN_SECONDS']} s, "
                         f"stable {st.get('VIDSPOOL_SPOOL__STABLE_SECONDS', '1')} s), {c['jobs']} jobs",
                         f"p50 {c['started_ms']['p50']:.0f} / p99 {c['started_ms']['p99']:.0f} / "
                         f"min {c['started_min_ms']:.0f} / max {c['started_ms']['max']:.0f} ms"))
            rows.append(("  ... drop -> accepted (created_at) p50 / accepted -> started p50",
                         f"{c['accepted_ms']['p50']:.0f} / {c['accept_to_start_ms']['p50']:.0f} ms"))
    T = R.get("throughput")
    if T:
        for series, runs in T.items():
            base = None
            for r in runs:
                base = base or r["jobs_per_s"]
                label = f"+{r['sshfs']} sshfs" if r["local"] else f"{r['sshfs']} sshfs"
                n = len(r["daemons"])
                rows.append((f"throughput {series}: {n} daemon{'s' if n > 1 else ''} (local{label})" if r["local"]
                             else f"throughput {series}: {n} daemon{'s' if n > 1 else ''} ({label})",
                             f"{r['jobs_per_s']:.1f} jobs/s ({r['jobs']} in {r['elapsed_s']:.1f} s), x{r['jobs_per_s'] / base:.2f}; "
                             f"from 1st start {r['run_jobs_per_s']:.1f}/s; "
                             f"by host {'/'.join(str(v) for v in r['jobs_by_host'].values())}"
                             + f"; longest heartbeat silence {max(r['longest_heartbeat_silence_s'].values()):.1f} s"
                             + (f"; {len(r['host_dead_events'])} live host(s) declared dead" if r["host_dead_events"] else "")
                             + (f"; {r['retried']} retried" if r["retried"] else "")))
    C = R.get("census")
    if C and "per_daemon" in C:
        for h, c in C["per_daemon"].items():
            lost = {k: v for k, v in c["renames"].items() if not k.endswith(": ok") and not k.startswith("hosts")}
            won = {k: v for k, v in c["renames"].items() if k.startswith(("inbox", "queue")) and k.endswith(": ok")}
            rows.append((f"census {h} (strace, {C['jobs']} jobs, {C['daemons']} sshfs daemons): ran {c['jobs_run']}",
                         f"won {won}, lost {lost}; {c['file_syscalls_per_job_run']:.0f} file syscalls per job run, "
                         f"{c['seconds_in_file_syscalls']:.1f} s in them; heartbeat gap max {c['longest_gap_between_heartbeats_s'] or 0:.1f} s"))
    K = R.get("takeover")
    if K:
        for tag, reps in K.items():
            for i, r in enumerate(reps):
                rows.append((f"takeover {tag} #{i + 1} (lease {r['lease_s']:g}, heartbeat {r['heartbeat_s']:g}, "
                             f"rescan {r['rescan_s']:g})",
                             f"{r['takeover_s']:.2f} s (target <= {r['target_s']:g} s: {'met' if r['met'] else 'MISSED'}); "
                             f"host.dead at {r['log_host_dead_s']:.2f} s, B beat {r['since_b_last_beat_s']:.2f} s "
                             f"before the kill; attempt {r['attempt']}"))
    w = max(len(a) for a, _ in rows) if rows else 10
    print()
    for a, b in rows:
        print(f"{a:<{w}}  {b}")
    D = R.get("disturbance") or {}
    if D:
        print()
        print("CPU of other processes during each part (not this bench, its daemons, sshd or sshfs; "
              "0 = quiet machine): " + ", ".join(f"{k} {v['other_s']:.1f} s of {v['wall_s']:.0f} s" for k, v in D.items()))
    print(f"total bench time {R['bench_seconds']:.0f} s; results in {R['args']['out']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pickup-jobs", type=int, default=102, help="per rescan setting (2 s and 0.5 s)")
    ap.add_argument("--pickup-defaults-jobs", type=int, default=30, help="with all spool defaults (stable 3 s); 0 skips")
    ap.add_argument("--throughput-jobs", type=int, default=300)
    ap.add_argument("--all-sshfs-jobs", type=int, default=300, help="instant jobs for the all-sshfs series")
    ap.add_argument("--slow-jobs", type=int, default=60, help="jobs of 0.2 s each")
    ap.add_argument("--all-sshfs-slow-jobs", type=int, default=30, help="jobs of 0.2 s each for the all-sshfs series")
    ap.add_argument("--takeover-reps", type=int, default=3)
    ap.add_argument("--default-takeover-reps", type=int, default=3,
                    help="takeovers with the defaults (lease 30 s); they run at the same time, each on its own "
                         "spool and mount (about 40 s in all); 0 skips")
    ap.add_argument("--no-all-sshfs", action="store_true", help="skip the all-sshfs throughput series")
    ap.add_argument("--only", nargs="*", choices=["pickup", "throughput", "takeover", "census"],
                    help="parts to run (default: pickup throughput takeover; census runs only when named)")
    ap.add_argument("--census-jobs", type=int, default=150)
    ap.add_argument("--seed", type=int, default=None, help="for the random pauses and kill times (default: random, recorded)")
    ap.add_argument("--keep", action="store_true", help="keep the export folder and logs (path printed)")
    ap.add_argument("--out", type=Path, default=OUT / "shared.json")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    want = set(args.only or ["pickup", "throughput", "takeover"])

    t_start = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="vidspool-shared-"))
    logs = base / "logs"
    logs.mkdir()
    rng = random.Random(args.seed)
    R: dict = {"started": datetime.now().isoformat(timespec="seconds"), "machine": machine(),
               "settings": {k: v for k, v in Daemon(base / "x").settings.items()
                            if k not in ("VIDSPOOL_SPOOL__ROOT", "VIDSPOOL_SPOOL__HOST")} | SHARED,
               "config_file": "config.toml of the repo (defaults for anything not set)",
               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "loadavg": {"start": os.getloadavg()}, "disturbance": {}, "fs_probe_us": {}}
    fleet = Fleet()
    pickup_cfgs = [
        {"name": "rescan2", "settings": {**SHARED, "VIDSPOOL_SPOOL__RESCAN_SECONDS": "2"}, "jobs": args.pickup_jobs, "pipelines": 6},
        {"name": "rescan0.5", "settings": dict(SHARED), "jobs": args.pickup_jobs, "pipelines": 3},
    ]
    if args.pickup_defaults_jobs:
        pickup_cfgs.append({"name": "defaults", "settings": {**DEFAULTS, "VIDSPOOL_SPOOL__STABLE_SECONDS": "3"},
                            "jobs": args.pickup_defaults_jobs, "pipelines": 3})
    n_mounts = max(3, sum(c["pipelines"] for c in pickup_cfgs) if "pickup" in want else 0)

    def part(name: str, title: str, fn):
        print(title, flush=True)
        R["fs_probe_us"][name] = fs_probe(base)
        a = snapshot()
        result = fn()
        R["disturbance"][name] = disturbance(a, snapshot())
        return result

    failed = None
    try:
        with SshExport(base / "ssh") as ex:
            try:
                t = time.perf_counter()
                mounts = [ex.mount(f"h{i + 1}") for i in range(n_mounts)]
                R["setup_s"] = time.perf_counter() - t
                if "pickup" in want:
                    R["pickup"] = part("pickup", f"pickup: {' / '.join(str(c['jobs']) for c in pickup_cfgs)} jobs one at a "
                                       f"time per setting, {sum(c['pipelines'] for c in pickup_cfgs)} sshfs-only daemons ...",
                                       lambda: bench_pickup(ex, mounts, fleet, logs, pickup_cfgs, args.seed))
                if "throughput" in want:
                    T = R["throughput"] = {}
                    series = [("instant, local+sshfs", True, PROBE, args.throughput_jobs)]
                    if not args.no_all_sshfs:
                        series.append(("instant, all sshfs", False, PROBE, args.all_sshfs_jobs))
                    series.append(("0.2 s jobs, local+sshfs", True, SLOW, args.slow_jobs))
                    if not args.no_all_sshfs:
                        series.append(("0.2 s jobs, all sshfs", False, SLOW, args.all_sshfs_slow_jobs))
                    for si, (sname, local, doc, n) in enumerate(series):
                        T[sname] = []
                        for nd in (1, 2, 3):
                            n_ssh = nd - 1 if local else nd
                            tag = f"s{si}-{nd}"
                            T[sname].append(part(f"throughput {sname} x{nd}", f"throughput {sname}: {n} jobs, {nd} daemon(s) ...",
                                                 lambda: bench_throughput(ex, mounts, fleet, logs, tag, local, n_ssh, n, doc)))
                if "census" in want:
                    R["census"] = part("census", f"census: strace of 3 sshfs daemons taking {args.census_jobs} jobs ...",
                                       lambda: bench_census(ex, mounts, fleet, logs, 3, args.census_jobs))
                if "takeover" in want:
                    K = R["takeover"] = {"tests' settings": []}
                    for i in range(args.takeover_reps):
                        K["tests' settings"].append(part(f"takeover {i + 1}", f"takeover #{i + 1}, lease 4 s ...",
                                                         lambda: bench_takeover(ex, mounts[0], fleet, logs, f"t{i + 1}", SHARED, rng)))
                    if args.default_takeover_reps:
                        K["defaults"] = part("takeover defaults", f"takeover with the defaults, lease 30 s, "
                                             f"{args.default_takeover_reps} at the same time ...",
                                             lambda: takeovers_at_once(ex, mounts, fleet, logs, args.default_takeover_reps,
                                                                       DEFAULTS, args.seed))
            finally:
                fleet.stop_all()
    except BaseException as exc:
        failed = exc
        R["error"] = repr(exc)
    finally:
        fleet.stop_all()
        R["loadavg"]["end"] = os.getloadavg()
        R["bench_seconds"] = time.perf_counter() - t_start
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(R, indent=1, default=str) + "\n")
        still = [p for p in base.glob("ssh/mnt-*") if is_mounted(p)]
        if args.keep or still:
            print(f"files kept in {base}" + (f" (still mounted: {still})" if still else ""))
        else:
            shutil.rmtree(base, ignore_errors=True)
    if failed is not None:
        raise failed
    print_report(R)
    return 0


if __name__ == "__main__":
    sys.exit(main())
