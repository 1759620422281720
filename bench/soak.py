#!/usr/bin/env python
"""vidspool soak bench: crash points and faults, for real, over thousands of jobs.

`.venv/bin/python bench/soak.py` (in `make bench`, not in `make test`) starts an sshd on
loopback (tests/netfs.py `SshExport`) whose export folder is a small tmpfs mounted here,
two sshfs mounts of it, and three real daemons (tests/support.py `Daemon`, one CPU worker
each, the chaos test's lease settings): host-a on the export folder itself, host-b and
host-c each through its own sshfs mount. Jobs of the test `probe` kind (0.2–0.4 s,
max_attempts 100, every execution journalled to a file outside the spool) are dropped in
batches on the local path while, every 0.2–1 s, a daemon (then started again) or a worker
is SIGKILLed, mixed with faults:

  disk   the tmpfs is filled with a filler file for 1.5–6 s, then the filler is removed;
  mount  one sshfs process is SIGKILLed (a dead mount: ENOTCONN), remounted after 2–8 s
         (past the 4 s lease, the other hosts take that host's jobs over).

Kills and drops are paced together so that kills land on running work throughout and stop
only once every job has been dropped (and at least --kills were made); then every job must
end. Last, all three daemons are SIGKILLed and started once more on the quiet spool, so
recovery runs over the finished outbox, and stopped.

Every invariant is checked and printed PASS/FAIL with counts: one completion per job (every
job completed, its result from an execution that ran to its end, no two executions of a job
overlapping in time per the journal, at most one `job.completed` per job log, no extra
jobs), statuses never backwards (tests/chaos.py `StatusWatcher`), nothing left in queue/ or
active/, and no job once seen `completed` ever reported otherwise. Exit status: 0 when all
pass, 1 when an invariant fails, 2 when all pass but the --seconds cap cut the run short of
--jobs or --kills. Writes bench/out/soak.json. See BENCHMARKS.md, "Soak".
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
sys.path.insert(0, str(REPO))

from bench.run import machine  # noqa: E402
from tests.chaos import SHARED, StatusWatcher, _attempt_spans, _is_worker  # noqa: E402
from tests.netfs import SshExport, _kill_exact, _proc_stat, _wait_gone, is_mounted  # noqa: E402
from tests.support import FINAL, Daemon, leftovers, status  # noqa: E402
from tests.test_faults import fill  # noqa: E402

# Daemon log events worth counting (besides every warning and error).
EVENTS = ("daemon.ready", "host.dead", "job.requeued", "job.lost", "spool.unavailable", "spool.recovered",
          "publish.final_kept", "recovery.failed", "daemon.tick_failed", "worker.started")


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _children(pid: int) -> list[tuple[int, int]]:
    """(pid, starttime) of PID's children (its workers, multiprocessing's resource tracker)."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            kids = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for k in kids:
            st = _proc_stat(int(k))
            if st:
                out.append((int(k), st[1]))
    return out


class Host:
    def __init__(self, name: str, root: Path, mount, logs: Path):
        self.name, self.root, self.mount = name, root, mount
        self.daemon = Daemon(root, host=name, workers=["cpu"], log_dir=logs, **SHARED)
        self.started = 0.0
        self.mount_dead = False

    def ready(self) -> bool:
        d = self.daemon
        if d.proc is None or d.proc.poll() is not None:
            return False
        hb = d.heartbeat
        return hb.get("pid") == d.proc.pid and bool(hb.get("workers")) and all(w["ready"] for w in hb["workers"])

    def alive(self) -> bool:
        return self.daemon.proc is not None and self.daemon.proc.poll() is None


class Soak:
    def __init__(self, args, base: Path):
        self.args, self.base = args, base
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()  # kills, restarts and mount faults never interleave
        self.stop = threading.Event()  # the chaos phase is over
        self.disk_full = threading.Event()
        self.kills = collections.Counter()
        self.faults = collections.Counter()
        self.fault_seconds = collections.Counter()
        self.fault_log: list[dict] = []
        self.unexpected_exits: list[dict] = []
        self.dropped = 0
        self.drop_errors = 0
        self.feeder_done = threading.Event()
        self.errors: list[str] = []  # the bench's own trouble (not invariants)
        self.ids = [f"s{i:05d}" for i in range(args.jobs)]
        self.journal = base / "journal.jsonl"
        self.load: list[float] = []

    # -- set-up ----------------------------------------------------------------
    def setup(self) -> None:
        export = self.base / "ssh" / "export"
        export.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.args.tmpfs_mb}m", "tmpfs", str(export)], check=True)
        self.tmpfs = export
        self.ex = SshExport(self.base / "ssh").start()
        logs = self.base / "logs"
        logs.mkdir()
        self.logs = logs
        self.root = export / "spool"
        mb, mc = self.ex.mount("b"), self.ex.mount("c")
        self.hosts = [Host("host-a", self.root, None, logs), Host("host-b", mb.path / "spool", mb, logs),
                      Host("host-c", mc.path / "spool", mc, logs)]
        self.hosts[0].daemon.start()  # lays the spool out
        for h in self.hosts[1:]:
            h.daemon.start(wait=False)
        for h in self.hosts:
            h.daemon.wait_ready(90)
            h.started = time.monotonic()
        self.watcher = StatusWatcher(self.root, interval=0.05, final_interval=0.5)
        self.watcher.start()

    # -- kills -----------------------------------------------------------------
    def restart(self, h: Host) -> None:
        h.daemon.start(wait=False)
        h.started = time.monotonic()

    def kill_daemon(self, h: Host, during_start: bool, final: bool = False) -> None:
        d = h.daemon
        hb = d.heartbeat
        busy = any(w.get("busy") for w in hb.get("workers", [])) if hb.get("pid") == d.proc.pid else False
        kids = _children(d.proc.pid)
        d.kill()
        if kids and not _wait_gone(kids, 2):  # workers die with it (PR_SET_PDEATHSIG)
            self.errors.append(f"{h.name}: children of a killed daemon still there after 2 s: {kids}")
            _kill_exact(kids, signal.SIGKILL)
            _wait_gone(kids, 3)
        if final:
            self.kills["final_restart"] += 1
        else:
            self.kills["daemon"] += 1
            self.kills["daemon_with_job_running"] += busy
            self.kills["daemon_during_start"] += during_start
        self.restart(h)

    def kill_worker(self, candidates: list[tuple[Host, dict]]) -> bool:
        busy = [c for c in candidates if c[1].get("busy")]
        h, w = self.rng.choice(busy or candidates)
        try:
            os.kill(w["pid"], signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.kills["worker"] += 1
        self.kills["worker_on_running_job"] += bool(w.get("busy"))
        return True

    def kill_total(self) -> int:
        return self.kills["daemon"] + self.kills["worker"]

    def supervise(self) -> None:
        """A daemon that exited without being killed is recorded and started again."""
        for h in self.hosts:
            if h.daemon.proc is not None and h.daemon.proc.poll() is not None and not h.mount_dead:
                rc = h.daemon.proc.returncode
                self.unexpected_exits.append({"host": h.name, "rc": rc, "t": round(time.monotonic() - self.t0, 1),
                                              "log_tail": h.daemon.log()[-1500:]})
                log(f"UNEXPECTED: {h.name} exited with {rc}; starting it again")
                self.restart(h)

    def chaos(self) -> None:
        a = self.args
        lead_kills = max(5, a.kills // 50)
        last_report = time.monotonic()
        while True:
            if time.monotonic() - self.t0 > a.seconds:
                log(f"--seconds {a.seconds} reached: stopping kills and drops")
                self.capped = True
                break
            if self.kill_total() >= a.kills and self.feeder_done.is_set():
                break
            time.sleep(self.rng.uniform(0.2, 1.0))
            if time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                self.report_progress()
            with self.lock:
                self.supervise()
                # paced with the drops: kills never run far ahead of the jobs
                if not self.feeder_done.is_set() and self.kill_total() >= a.kills * self.dropped / a.jobs + lead_kills:
                    continue
                usable = [h for h in self.hosts if not h.mount_dead and h.alive()]
                if self.rng.random() < 0.5:
                    ready = [h for h in usable if h.ready()]
                    starting = [h for h in usable if not h.ready() and time.monotonic() - h.started > 0.5]
                    if starting and self.rng.random() < 0.25:
                        self.kill_daemon(self.rng.choice(starting), during_start=True)
                    elif ready:
                        self.kill_daemon(self.rng.choice(ready), during_start=False)
                else:
                    candidates = []
                    for h in usable:
                        hb = h.daemon.heartbeat
                        if hb.get("pid") != h.daemon.proc.pid:
                            continue
                        for w in hb.get("workers", []):
                            if w.get("pid") and _is_worker(w["pid"], parent=h.daemon.proc.pid):
                                candidates.append((h, w))
                    if candidates:
                        self.kill_worker(candidates)

    def report_progress(self) -> None:
        self.load.append(os.getloadavg()[0])
        log(f"{time.monotonic() - self.t0:6.0f}s  dropped {self.dropped}/{self.args.jobs}  final "
            f"{self.watcher.final_count()}  kills {self.kills['daemon']}+{self.kills['worker']}  faults "
            f"disk {self.faults['disk']} mount {self.faults['mount']}  load {os.getloadavg()[0]:.1f}")

    # -- jobs --------------------------------------------------------------------
    def drop(self, job_id: str, doc: dict) -> bool:
        inbox = self.root / "inbox"
        tmp = inbox / f".{job_id}.part"
        try:
            tmp.mkdir()
            (tmp / "job.json").write_text(json.dumps(doc))
            os.rename(tmp, inbox / job_id)
            return True
        except OSError:  # the disk filled under us: try again later
            shutil.rmtree(tmp, ignore_errors=True)
            self.drop_errors += 1
            return False

    def feeder(self) -> None:
        a = self.args
        rng = random.Random(a.seed + 1)
        docs = {}
        try:
            while self.dropped < a.jobs and not self.stop.is_set():
                backlog = self.dropped - self.watcher.final_count()
                ahead = self.dropped >= a.jobs * self.kill_total() / a.kills + a.backlog
                if self.disk_full.is_set() or backlog > a.backlog - a.batch or ahead:
                    time.sleep(0.1)
                    continue
                for job_id in self.ids[self.dropped:self.dropped + a.batch]:
                    if job_id not in docs:
                        docs[job_id] = {"kind": "probe", "max_attempts": 100, "params": {
                            "seconds": round(rng.uniform(0.2, 0.4), 2), "step_seconds": 0.05,
                            "journal": str(self.journal)}}
                    if not self.drop(job_id, docs[job_id]):
                        time.sleep(0.2)
                        break
                    self.dropped += 1
        except Exception:  # noqa: BLE001 - reported, the run then ends
            self.errors.append("feeder: " + traceback.format_exc())
        finally:
            self.feeder_done.set()

    # -- faults ------------------------------------------------------------------
    def faulter(self) -> None:
        a = self.args
        rng = random.Random(a.seed + 2)
        try:
            while not self.stop.wait(rng.uniform(0.5, 1.5) * a.fault_every):
                t = round(time.monotonic() - self.t0, 1)
                if rng.random() < 0.5:
                    hold = rng.uniform(1.5, 6)
                    self.disk_full.set()
                    filler = fill(self.root)
                    time.sleep(hold)
                    os.unlink(filler)
                    self.disk_full.clear()
                    self.faults["disk"] += 1
                    self.fault_seconds["disk"] += hold
                    self.fault_log.append({"t": t, "kind": "disk", "seconds": round(hold, 1)})
                else:
                    h = rng.choice(self.hosts[1:])
                    hold = rng.uniform(2, 8)
                    with self.lock:
                        h.mount.kill()
                        h.mount_dead = True
                    time.sleep(hold)
                    with self.lock:
                        self.remount(h)
                        h.mount_dead = False
                        if not h.alive():
                            self.restart(h)
                    self.faults["mount"] += 1
                    self.fault_seconds["mount"] += hold
                    self.fault_log.append({"t": t, "kind": "mount", "host": h.name, "seconds": round(hold, 1)})
        except Exception:  # noqa: BLE001
            self.errors.append("faulter: " + traceback.format_exc())
            self.stop.set()

    def remount(self, h: Host) -> None:
        for attempt in range(5):
            try:
                h.mount.remount()
                return
            except Exception as exc:  # noqa: BLE001 - sshfs may refuse once; try again
                log(f"remount of {h.name} failed ({exc!r}); again")
                time.sleep(1)
        h.mount.remount()

    # -- the run -------------------------------------------------------------------
    def run(self) -> dict:
        a = self.args
        self.capped = False
        self.setup()
        self.t0 = time.monotonic()
        feeder = threading.Thread(target=self.feeder, daemon=True)
        faulter = threading.Thread(target=self.faulter, daemon=True)
        feeder.start()
        faulter.start()
        try:
            self.chaos()
        finally:
            self.stop.set()
            faulter.join(60)
            feeder.join(60)
        t_chaos = time.monotonic() - self.t0
        dropped_ids = self.ids[:self.dropped]
        unfinished = sum(1 for j in dropped_ids if (status(self.root, j) or {}).get("state") not in FINAL)
        log(f"kills stopped after {t_chaos:.0f}s: {self.kill_total()} kills, {self.dropped} jobs dropped, "
            f"{unfinished} not yet final; waiting for every job")
        deadline = time.monotonic() + a.drain_timeout
        last = time.monotonic()
        stuck_since, stuck = None, []
        while time.monotonic() < deadline:
            with self.lock:
                self.supervise()
            pending = [j for j in dropped_ids if (status(self.root, j) or {}).get("state") not in FINAL]
            if not pending:
                break
            # A job whose status is not final but which no folder holds (queue/, active/,
            # inbox/) will never end: stop waiting for it after a while.
            held = owned_ids(self.root)
            orphans = [j for j in pending if j not in held]
            if len(orphans) == len(pending):
                stuck_since = stuck_since or time.monotonic()
                if time.monotonic() - stuck_since > 30:
                    stuck = orphans
                    log(f"{len(orphans)} jobs are not final and no folder holds them, e.g. {orphans[:3]}: not waiting longer")
                    break
            else:
                stuck_since = None
            if time.monotonic() - last > 30:
                last = time.monotonic()
                log(f"waiting: {len(pending)} not final, e.g. {pending[:3]}")
            time.sleep(0.5)
        t_final = time.monotonic() - self.t0
        # Recovery over the finished outbox: every daemon SIGKILLed and started once more.
        for h in self.hosts:
            self.kill_daemon(h, during_start=False, final=True)
        for h in self.hosts:
            try:
                h.daemon.wait_ready(90)
            except AssertionError as exc:
                self.errors.append(f"{h.name} not ready after the final restart: {str(exc)[:2000]}")
        time.sleep(2 * float(SHARED["VIDSPOOL_SPOOL__LEASE_SECONDS"]))
        for h in self.hosts:
            try:
                h.daemon.stop(timeout=30)
            except AssertionError as exc:
                self.errors.append(f"{h.name} did not stop: {str(exc)[:500]}")
        self.watcher.scan(self.root / "outbox")
        self.watcher.stop_flag.set()
        self.watcher.join(5)
        t_end = time.monotonic() - self.t0
        return {"t_chaos": t_chaos, "t_final": t_final, "t_end": t_end, "unfinished_at_kill_stop": unfinished,
                "dropped_ids": dropped_ids, "stuck": stuck}

    def teardown(self) -> None:
        for h in getattr(self, "hosts", []):
            if h.daemon.proc is not None and h.daemon.proc.poll() is None:
                try:
                    h.daemon.stop(timeout=15)
                except AssertionError:
                    pass
        if hasattr(self, "watcher"):
            self.watcher.stop_flag.set()
        filler = self.base / "ssh" / "export" / "filler"
        if filler.exists():
            filler.unlink()
        if hasattr(self, "ex"):
            try:
                self.ex.stop()
            except Exception as exc:  # noqa: BLE001
                log(f"stopping sshd/sshfs: {exc!r}")

    def unmount_tmpfs(self) -> None:
        if hasattr(self, "tmpfs") and is_mounted(self.tmpfs):
            subprocess.run(["umount", str(self.tmpfs)], check=False)
            if is_mounted(self.tmpfs):
                subprocess.run(["umount", "-l", str(self.tmpfs)], check=False)


# -- checks ------------------------------------------------------------------------------
def owned_ids(root: Path) -> set[str]:
    """Job ids some folder still holds: queue/<rank>-<usec>-<id>, active/<host>/<id> (or
    .publish-<id>), and drops still in inbox/."""
    held = {n.split("-", 2)[-1] for n in _listdir(root / "queue")}
    for host in _listdir(root / "active"):
        for n in _listdir(root / "active" / host):
            held.add(n.removeprefix(".publish-"))
            held.add(n)
    return held | set(_listdir(root / "inbox"))


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def check(soak: Soak, run: dict) -> tuple[list[dict], dict]:
    root = soak.root
    ids = run["dropped_ids"]
    docs = {j: status(root, j) for j in ids}
    spans = _attempt_spans(soak.journal) if soak.journal.exists() else {}
    inv: list[dict] = []

    def add(name: str, bad: list, total: int, what: str, **extra) -> None:
        inv.append({"name": name, "pass": not bad, "failed": len(bad), "of": total, "what": what,
                    "examples": bad[:10], **extra})

    states = collections.Counter((d or {}).get("state") for d in docs.values())
    add("every job completed", [(j, (d or {}).get("state"), ((d or {}).get("error") or {}).get("message"))
                                for j, d in docs.items() if (d or {}).get("state") != "completed"],
        len(ids), "jobs not completed", states=dict(states))
    outbox = set(os.listdir(root / "outbox"))
    extra = sorted(n for n in outbox - set(ids) if not n.startswith("."))
    add("no job but those dropped", extra, len(outbox), "outbox entries that are not a dropped job")
    not_run_to_end = []
    for j in ids:
        out = root / "outbox" / j
        try:
            pid = int((out / "probe.txt").read_text().split(" pid ")[1].split()[0])
        except (OSError, IndexError, ValueError):
            not_run_to_end.append((j, "no readable probe.txt"))
            continue
        if not any(p == pid and spans[j][(h, att, p)][2] for (h, att, p) in spans.get(j, {})):
            not_run_to_end.append((j, f"result from pid {pid}, no ended execution of that pid"))
    add("result from an execution that ran to its end", not_run_to_end, len(ids), "jobs")
    overlaps = []
    executions = ended_executions = 0
    for j in ids:
        runs = sorted(spans.get(j, {}).values())
        executions += len(runs)
        ended_executions += sum(1 for r in runs if r[2])
        for (s1, e1, _), (s2, e2, _) in zip(runs, runs[1:]):
            if not e1 < s2:
                overlaps.append((j, [(round(s, 3), round(e, 3), end) for s, e, end in runs]))
                break
    add("no two executions of one job overlapping", overlaps, len(ids), "jobs",
        executions=executions, executions_ended=ended_executions)
    twice = []
    for j in ids:
        out = root / "outbox" / j
        try:
            lines = (out / "log.jsonl").read_text().splitlines()
        except OSError:
            lines = []
        events = []
        for line in lines:
            try:
                events.append(json.loads(line).get("event"))
            except json.JSONDecodeError:
                pass
        n = events.count("job.completed")
        if n > 1 or (out / "input.2").exists() or not (out / "input").is_dir():
            twice.append((j, f"job.completed ×{n}", "input.2" if (out / "input.2").exists() else "",
                          "" if (out / "input").is_dir() else "no input/"))
    add("at most one job.completed per job log (one input/)", twice, len(ids), "jobs")
    steps = list(dict.fromkeys(soak.watcher.backwards))  # each step once (the watcher sees it every pass)
    add("statuses never backwards", steps, len(ids), "distinct backward steps",
        jobs=sorted({b[0] for b in steps}), passes=soak.watcher.passes, reads=soak.watcher.reads)
    ours = set(ids)
    left = leftovers(root) + [f"inbox/{n}" for n in os.listdir(root / "inbox")
                              if n in ours or n.removeprefix(".").removesuffix(".part") in ours]
    add("nothing left in queue/, active/ (or inbox/)", left, len(ids), "entries")
    left_completed = list(soak.watcher.left_completed)
    for j in soak.watcher.seen_completed | {j for j, d in docs.items() if (d or {}).get("state") == "completed"}:
        if (docs.get(j) or {}).get("state") != "completed" and not any(x[0] == j for x in left_completed):
            left_completed.append((j, ("completed",), (docs.get(j) or {}).get("state")))
    add("no job once seen completed ever reported otherwise", left_completed, len(soak.watcher.seen_completed),
        "jobs seen completed", offenders=sorted({x[0] for x in left_completed}))
    attempts = collections.Counter((d or {}).get("attempt") for d in docs.values())
    figures = {
        "retries": sum(1 for d in docs.values() if (d or {}).get("attempt", 0) >= 2),
        "attempts": {str(k): v for k, v in sorted(attempts.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))},
        "max_attempt": max((d or {}).get("attempt", 0) for d in docs.values()) if docs else 0,
        "hosts": dict(collections.Counter((d or {}).get("host") for d in docs.values())),
        "executions": executions, "executions_ended": ended_executions,
    }
    return inv, figures


def census(logs: Path) -> dict:
    """Per daemon log: counts of the EVENTS, and of every warning/error event."""
    out = {}
    for path in sorted(logs.glob("daemon-*.log")):
        c: collections.Counter = collections.Counter()
        other = 0
        with open(path, "rb") as f:
            for raw in f:
                try:
                    e = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    other += 1
                    continue
                if not isinstance(e, dict):
                    continue
                ev = e.get("event")
                if ev in EVENTS or e.get("level") in ("warning", "error", "critical", "exception"):
                    c[f"{ev} ({e.get('level')})"] += 1
        out[path.stem.removeprefix("daemon-")] = {"events": dict(c.most_common()), "non_json_lines": other}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=5000, help="probe jobs to drop (default 5000)")
    p.add_argument("--kills", type=int, default=1000, help="SIGKILLs of daemons and workers, at least (default 1000)")
    p.add_argument("--seconds", type=float, default=5400, help="cap on the kill phase (default 5400)")
    p.add_argument("--seed", type=int, default=20261123)
    p.add_argument("--quick", action="store_true", help="300 jobs, 60 kills, faults every ~8 s: checks the bench itself")
    p.add_argument("--fault-every", type=float, default=None, help="mean seconds between faults (default 25; quick 8)")
    p.add_argument("--batch", type=int, default=20, help="jobs per drop batch")
    p.add_argument("--backlog", type=int, default=45, help="jobs dropped but not final, at most")
    p.add_argument("--tmpfs-mb", type=int, default=256, help="size of the tmpfs holding the spool")
    p.add_argument("--drain-timeout", type=float, default=900, help="seconds to wait for every job to end")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, journal) when all pass")
    p.add_argument("--out", type=Path, default=OUT / "soak.json")
    a = p.parse_args()
    if a.quick:
        a.jobs, a.kills = min(a.jobs, 300), min(a.kills, 60)
        a.seconds = min(a.seconds, 240)
        a.drain_timeout = min(a.drain_timeout, 300)
    a.fault_every = a.fault_every or (8 if a.quick else 25)
    if os.geteuid() != 0:
        print("soak: needs root (it mounts a tmpfs, and sshd/sshfs as the tests run them)", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="vsp-soak-"))
    soak = Soak(a, base)
    t_start = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    log(f"work folder {base}; {a.jobs} jobs, >= {a.kills} kills, faults every ~{a.fault_every:.0f} s, seed {a.seed}")
    run = inv = figures = None
    try:
        run = soak.run()
        inv, figures = check(soak, run)
    finally:
        soak.teardown()
        failed = inv is None or not all(i["pass"] for i in inv)
        if failed and hasattr(soak, "tmpfs") and (soak.tmpfs / "spool").exists():
            log(f"keeping a copy of the spool in {base / 'spool-copy'}")
            shutil.copytree(soak.tmpfs / "spool", base / "spool-copy", symlinks=True, dirs_exist_ok=True)
        soak.unmount_tmpfs()
    events = census(soak.logs)
    capped = soak.capped or soak.dropped < a.jobs or soak.kill_total() < a.kills
    summary = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(), "loadavg_samples": soak.load,
        "settings": {"jobs": a.jobs, "kills": a.kills, "seconds_cap": a.seconds, "seed": a.seed, "quick": a.quick,
                     "fault_every_s": a.fault_every, "batch": a.batch, "backlog": a.backlog, "tmpfs_mb": a.tmpfs_mb,
                     "daemon": SHARED, "job": "probe, seconds 0.2-0.4, step 0.05, max_attempts 100, journal"},
        "seconds": {"kill_phase": round(run["t_chaos"], 1), "until_all_final": round(run["t_final"], 1),
                    "with_final_restart": round(run["t_end"], 1), "total": round(time.monotonic() - t_start, 1)},
        "kills": dict(soak.kills), "kills_total": soak.kill_total(),
        "faults": dict(soak.faults), "fault_seconds": {k: round(v, 1) for k, v in soak.fault_seconds.items()},
        "fault_log": soak.fault_log,
        "jobs": {"dropped": soak.dropped, "drop_retries_enospc": soak.drop_errors,
                 "not_final_when_kills_stopped": run["unfinished_at_kill_stop"],
                 "stuck_not_final_no_folder": run["stuck"],
                 "jobs_per_s_kill_phase": round(soak.dropped / run["t_chaos"], 2) if run["t_chaos"] else None,
                 **figures},
        "invariants": inv, "all_pass": all(i["pass"] for i in inv), "targets_reached": not capped,
        "unexpected_daemon_exits": soak.unexpected_exits, "bench_errors": soak.errors,
        "daemon_log_events": events, "work_folder": str(base),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(summary, indent=2, default=str))
    print_report(summary, a.out)
    if summary["all_pass"] and not a.keep and not soak.errors:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"work folder kept: {base} (daemon logs in logs/, journal.jsonl)")
    if not summary["all_pass"]:
        return 1
    return 2 if capped or soak.errors else 0


def print_report(s: dict, out: Path) -> None:
    k, f, j, sec = s["kills"], s["faults"], s["jobs"], s["seconds"]
    print()
    print(f"soak: {s['command']}")
    print(f"  run time      {sec['total']:.0f} s (kills {sec['kill_phase']:.0f} s, all final at {sec['until_all_final']:.0f} s, "
          f"final restart until {sec['with_final_restart']:.0f} s)")
    print(f"  kills         {s['kills_total']}: daemon {k.get('daemon', 0)} ({k.get('daemon_with_job_running', 0)} with a job "
          f"running, {k.get('daemon_during_start', 0)} during start-up), worker {k.get('worker', 0)} "
          f"({k.get('worker_on_running_job', 0)} on a running job); + {k.get('final_restart', 0)} at the end")
    print(f"  faults        disk {f.get('disk', 0)} ({s['fault_seconds'].get('disk', 0):.0f} s full), mount "
          f"{f.get('mount', 0)} ({s['fault_seconds'].get('mount', 0):.0f} s dead)")
    print(f"  jobs          {j['dropped']} dropped, {j['retries']} retried (attempt >= 2), max attempt {j['max_attempt']}, "
          f"{j['executions']} executions ({j['executions_ended']} ran to their end), "
          f"{j['not_final_when_kills_stopped']} not final when the kills stopped; by host {j['hosts']}")
    if s["unexpected_daemon_exits"]:
        print(f"  UNEXPECTED daemon exits: {len(s['unexpected_daemon_exits'])}")
    for e in s["bench_errors"]:
        print(f"  bench error: {e[:500]}")
    for i in s["invariants"]:
        extra = {k2: v for k2, v in i.items() if k2 not in ("name", "pass", "failed", "of", "what", "examples")}
        print(f"  {'PASS' if i['pass'] else 'FAIL'}  {i['name']}: {i['failed']} of {i['of']} {i['what']}"
              + (f" {extra}" if extra else ""))
        for ex in i["examples"][:5] if not i["pass"] else []:
            print(f"          {ex}")
    if not s["targets_reached"]:
        print(f"  TARGETS NOT REACHED: {j['dropped']} of {s['settings']['jobs']} jobs, {s['kills_total']} of "
              f"{s['settings']['kills']} kills")
    print(f"  written: {out}")


if __name__ == "__main__":
    sys.exit(main())
