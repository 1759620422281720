#!/usr/bin/env python
"""vidspool webhook bench (`make bench`): delivery latency and what webhooks cost the spool.

A real `python -m daemon run` (2 CPU workers, the tests' settings, as bench/run.py) gets
N instant probe jobs renamed into inbox/ at once, in rounds of: webhooks off, then on
([webhooks] default: the three end states, so one `completed` delivery per job) to a
receiver on loopback (http.server, HTTP/1.1 keep-alive, answers 204). Each burst runs on a
fresh spool after a short rest; the rounds alternate which mode goes first (off on, on off …),
so that the slowdown after a burst's deletions (bench/run.py) and drifts in other load on the
machine fall on both modes alike. The daemon's CPU per job (all threads, and its main loop
alone), and the webhook sender process's, are the figures other load disturbs least.

  latency     receiver arrival − the body's data.updated_at (the moment the daemon stamped
              the status it had just decided to write), per delivery, p50/p99;
  throughput  jobs/s = N / (latest final updated_at − first rename), on ÷ off.

`--events all` sends queued, running and completed for each job (three deliveries per job).
Prints a table and writes bench/out/webhooks.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.run import (HOST, PROBE, LogTail, children, cpu_seconds, disturbance, iso_ts, machine,  # noqa: E402
                       new_daemon, read_json, snapshot, start_timed, stop_leftovers, summary, wait_final_by_log)

OUT = REPO / "bench" / "out"
SECRET = "whsec_" + base64.b64encode(b"vidspool webhook bench key 32 b").decode()
EVENTS = {"end": ["completed", "failed", "canceled"], "all": ["queued", "running", "completed", "failed", "canceled"]}


class Receiver:
    """Records each delivery's arrival time and the status time in its body."""

    def __init__(self):
        self.arrivals: list[tuple[float, str, str]] = []  # (arrival, data.updated_at, type)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                now = time.time()
                doc = json.loads(body)
                with receiver.lock:
                    receiver.arrivals.append((now, doc["data"]["updated_at"], doc["type"]))
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self) -> list[tuple[float, str, str]]:
        with self.lock:
            taken, self.arrivals = self.arrivals, []
        return taken


def main_thread_cpu(pid: int) -> float:
    """CPU seconds of the daemon's main thread (the arbiter's loop; its tid is the pid)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def burst(base: Path, tag: str, n: int, rx: Receiver | None, events: list[str]) -> dict:
    root = base / tag / "spool"
    env = {}
    if rx is not None:
        env = {"VIDSPOOL_WEBHOOKS__SECRET": SECRET,
               "VIDSPOOL_WEBHOOKS__DEFAULT": json.dumps({"url": rx.url, "events": events})}
    d = new_daemon(root, **env)
    start_timed(d)
    stage = base / tag / "stage"
    stage.mkdir()
    ids = [f"wh-{i:05d}" for i in range(n)]
    for jid in ids:
        (stage / f"{jid}.json").write_text(json.dumps(PROBE))
    tail = LogTail(d.log_path)
    time.sleep(0.6)  # let the daemon go idle after start (one rescan period)
    want = n * sum(1 for e in events if e in ("queued", "running", "completed"))
    if rx is not None:
        rx.take()
    pids = [d.proc.pid] + [w["pid"] for w in d.heartbeat["workers"]]
    # the webhook sender (and multiprocessing's resource tracker, which idles)
    others = [p for p in children(d.proc.pid) if p not in pids]
    deadline = time.monotonic() + 10
    while rx is not None and len(others) < 2 and time.monotonic() < deadline:  # the sender is still starting
        time.sleep(0.1)
        others = [p for p in children(d.proc.pid) if p not in pids]
    cpu0, loop0, machine0 = [cpu_seconds(p) for p in pids + others], main_thread_cpu(d.proc.pid), snapshot()
    try:
        t_wall = time.time()
        for jid in ids:
            os.rename(stage / f"{jid}.json", root / "inbox" / f"{jid}.json")
        wait_final_by_log(tail, set(ids), time.monotonic() + 300, d)
        arrivals = []
        deadline = time.monotonic() + 120
        while rx is not None and len(arrivals) < want and time.monotonic() < deadline:
            time.sleep(0.05)
            arrivals += rx.take()
        cpu = [cpu_seconds(p) - c for p, c in zip(pids + others, cpu0)]
        loop = main_thread_cpu(d.proc.pid) - loop0
        other = disturbance(machine0, snapshot())
    finally:
        d.stop()
    docs = [read_json(root / "outbox" / jid / "status.json") or {} for jid in ids]
    elapsed = max(iso_ts(doc["updated_at"]) for doc in docs if doc.get("updated_at")) - t_wall
    out = {"jobs": n, "completed": sum(1 for doc in docs if doc.get("state") == "completed"),
           "elapsed_s": elapsed, "jobs_per_s": n / elapsed,
           "daemon_cpu_ms_per_job": cpu[0] / n * 1e3, "loop_cpu_ms_per_job": loop / n * 1e3, "workers_cpu_ms_per_job": sum(cpu[1:len(pids)]) / n * 1e3,
           "sender_cpu_ms_per_job": sum(cpu[len(pids):]) / n * 1e3,
           "other_processes_cpu_s": other["other_s"], "wall_s": other["wall_s"]}
    if rx is not None:
        latency = [(at - iso_ts(updated)) * 1e3 for at, updated, _ in arrivals]
        out.update(deliveries=len(arrivals), expected_deliveries=want, latency_ms=summary(latency),
                   latency_by_type_ms={t: summary([(a - iso_ts(u)) * 1e3 for a, u, ty in arrivals if ty == t])
                                       for t in sorted({ty for _, _, ty in arrivals})},
                   last_delivery_s=max(at for at, _, _ in arrivals) - t_wall if arrivals else None,
                   pending_markers=len(os.listdir(root / "webhooks" / HOST)))
    return out


def print_report(R: dict) -> None:
    print(f"\n{'burst':<8} {'jobs/s':>7} {'elapsed s':>10} {'daemon CPU ms/job':>18} {'of it loop':>11} {'sender':>7} {'other procs CPU s':>18} "
          f"{'deliveries':>11} {'latency p50 ms':>15} {'p99 ms':>7} {'max ms':>7}")
    for name, r in R["bursts"].items():
        lat = r.get("latency_ms")
        print(f"{name:<8} {r['jobs_per_s']:>7.0f} {r['elapsed_s']:>10.2f} {r['daemon_cpu_ms_per_job']:>18.2f} {r['loop_cpu_ms_per_job']:>11.2f} {r['sender_cpu_ms_per_job']:>7.2f} "
              f"{r['other_processes_cpu_s']:>18.1f} {r.get('deliveries', '-'):>11} "
              + (f"{lat['p50']:>15.1f} {lat['p99']:>7.1f} {lat['max']:>7.1f}" if lat else f"{'-':>15} {'-':>7} {'-':>7}"))
    print(f"\nthroughput on ÷ off: {R['ratio']:.3f} (goal >= 0.9); per round: "
          + ", ".join(f"{x:.3f}" for x in R["ratios"]))
    print(f"daemon CPU per job on ÷ off: {R['cpu_ratio']:.3f} (robust to other load on the machine)")
    print(f"load average at start {R['loadavg'][0]:.2f}, at end {R['loadavg_end'][0]:.2f}; results in {R['out']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=4, help="off/on pairs, in the order off on on off off on … (default 4)")
    ap.add_argument("--events", choices=sorted(EVENTS), default="end")
    ap.add_argument("--cooldown", type=float, default=10.0, help="seconds of rest before each burst; 0 skips")
    ap.add_argument("--out", type=Path, default=OUT / "webhooks.json")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="vidspool-bench-webhooks-"))
    rx = Receiver()
    R: dict = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "loadavg": os.getloadavg(),
               "bursts": {}, "out": str(args.out)}
    try:
        for i in range(args.rounds):
            for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):  # ABBA: drifts in the machine's load cancel
                if args.cooldown:
                    print(f"  (resting {args.cooldown:.0f} s)", flush=True)
                    time.sleep(args.cooldown)
                name = f"{mode}-{i + 1}"
                print(f"{name}: {args.jobs} jobs at once, webhooks {mode} ...", flush=True)
                R["bursts"][name] = burst(base, name, args.jobs, rx if mode == "on" else None, EVENTS[args.events])
    finally:
        stop_leftovers()
        rx.server.shutdown()
        shutil.rmtree(base, ignore_errors=True)
    B = R["bursts"]
    R["ratios"] = [B[f"on-{i + 1}"]["jobs_per_s"] / B[f"off-{i + 1}"]["jobs_per_s"] for i in range(args.rounds)]
    R["ratio"] = (sum(B[f"on-{i + 1}"]["jobs_per_s"] for i in range(args.rounds))
                  / sum(B[f"off-{i + 1}"]["jobs_per_s"] for i in range(args.rounds)))
    cpu = lambda mode: sum(B[f"{mode}-{i + 1}"]["daemon_cpu_ms_per_job"] for i in range(args.rounds))  # noqa: E731
    R["cpu_ratio"] = cpu("on") / cpu("off")
    R["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(R, indent=1) + "\n")
    print_report(R)
    return 0


if __name__ == "__main__":
    sys.exit(main())
