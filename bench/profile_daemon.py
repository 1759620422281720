#!/usr/bin/env python
"""Profiles the daemon during a throughput burst with py-spy (not a project dependency).

    python3 -m venv /tmp/pyspy && /tmp/pyspy/bin/pip install py-spy
    .venv/bin/python bench/profile_daemon.py --py-spy /tmp/pyspy/bin/py-spy [--jobs 1000]

Starts a daemon like bench/run.py does, renames N probe jobs into inbox/ at once, records
the daemon process (main loop and inotify thread) at 200 Hz until all are final, and prints
the hottest frames, inclusive and self. The collapsed stacks are kept in
bench/out/profile-<time>.txt (flamegraph.pl or speedscope read them).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402


def summarize(path: Path, top: int) -> None:
    incl: collections.Counter = collections.Counter()
    leaf: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        leaf[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    print(f"{total} samples (200 Hz; fsync and other blocking calls count as busy)")
    print("-- inclusive, daemon and pipeline frames")
    shown = 0
    for f, n in incl.most_common():
        if "daemon/" in f or "pipeline/" in f or "watchdog" in f:
            print(f"{100 * n / total:5.1f}%  {f}")
            shown += 1
            if shown >= top:
                break
    print("-- self")
    for f, n in leaf.most_common(15):
        print(f"{100 * n / total:5.1f}%  {f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--py-spy", required=True, help="path of a py-spy executable")
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--cooldown", type=float, default=35.0, help="rest first (see bench/run.py --cooldown)")
    args = ap.parse_args()

    if args.cooldown > 0:
        print(f"resting {args.cooldown:.0f} s ...", flush=True)
        time.sleep(args.cooldown)
    base = Path(tempfile.mkdtemp(prefix="vidspool-profile-"))
    out = bench.OUT / f"profile-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    root = base / "spool"
    d = bench.new_daemon(root)
    try:
        bench.start_timed(d)
        stage = base / "stage"
        stage.mkdir()
        ids = [f"prof-{i:05d}" for i in range(args.jobs)]
        for jid in ids:
            (stage / f"{jid}.json").write_text(json.dumps(bench.PROBE))
        spy = subprocess.Popen([args.py_spy, "record", "-p", str(d.proc.pid), "-r", "200", "-f", "raw", "-o", str(out),
                                "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.5)
        tail = bench.LogTail(d.log_path)
        t0 = time.perf_counter()
        for jid in ids:
            os.rename(stage / f"{jid}.json", root / "inbox" / f"{jid}.json")
        bench.wait_final_by_log(tail, set(ids), time.monotonic() + 300, d)
        elapsed = time.perf_counter() - t0
        spy.send_signal(2)
        spy.wait(30)
        print(f"{args.jobs} jobs in {elapsed:.2f} s = {args.jobs / elapsed:.0f} jobs/s (under the profiler)")
    finally:
        bench.stop_leftovers()
        shutil.rmtree(base, ignore_errors=True)
    summarize(out, args.top)
    print(f"collapsed stacks: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
