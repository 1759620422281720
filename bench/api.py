#!/usr/bin/env python
"""vidspool HTTP API benchmark (BENCHMARKS.md, "HTTP API"): a real `python -m daemon run`
(tests/support.py `Daemon`, 2 CPU workers) serving a spool that holds N finished jobs.

  fill      N instant probe jobs (`{"kind": "probe"}`) go through the daemon itself: written to a
            staging folder, renamed into inbox/ in batches, each batch waited for in the log;
            then a fresh daemon is started on the filled spool for the measurements;
  get       GET /api/v1/jobs/{id}, an id picked at random over the N per request, for --seconds
            with --connections keep-alive connections: wrk (--latency; the figure against the
            targets), a Python aiohttp client as a peer figure, wrk on GET /api/v1/health (the
            server's floor: no status read), and wrk after the status files were dropped from
            the page cache (cold). The load generators share the 2 cores with the daemon;
  list      GET /api/v1/jobs?limit=50 timed one request at a time: the first page, the first page
            with ?state=completed, one cursor page from the middle, and a filter that matches no
            job (every status is read; a diagnostic);
  parts     the handler's parts timed in this process on the same files (read_json, json.dumps,
            web.json_response, the outbox listing, a page from a sorted id index);
  --profile       a daemon under cProfile (load window only), loaded by wrk;
  --variants      wrk against the daemon patched in a wrapper with candidate fixes (raw status
                  bytes, an in-memory cache of final statuses, cached prometheus label children);
                  daemon/http/api.py itself is not changed;
  --fsync-trace N wrk N times against a daemon under strace (fsync/fdatasync only): the fsyncs
                  its API loop waits for during the load.
  --bare ROUNDS   only this (after the fill): the native GET /jobs/{id} beside a bare aiohttp
                  handler serving the same status.json bytes from memory (one route, no
                  middleware, its own process), alternating, ROUNDS times; the median of
                  native req/s ÷ bare req/s (issue 27 item 9: >= 0.6x, goal 0.8x).
  --compat        the seed personalities' translated status beside the native GET, on one daemon
                  (Wan's GET /api/v1/job/{id}, Visualizr's GET /api/v1/generate/status/{id}),
                  the same ids at random: each personality's run between two native runs,
                  as a ratio to them (issue 16: >= 0.8x).

Other sessions on this 2-core machine skew every figure: before each load run the bench waits
(--quiet-wait) for the machine to be idle, reads every status.json once (this VM's DAMON
reclaim pages out file pages untouched for ~30 s), and runs again (--retries) when other
processes used more than 10% of a core, or storage waits more than 10% of the time, meanwhile.
The measurements start after a rest (--rest) when jobs were just filled (the writeback of the
fill). `--keep SPOOL` fills SPOOL once and reuses it on later runs (only missing ids are dropped).

Prints a table and writes bench/out/api.json.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import pstats
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from run import (HOST, PROBE, _STARTED, LogTail, cpu_seconds, kernel_threads_cpu, machine,  # noqa: E402
                 proc_status, start_timed, stop_leftovers, summary, system_cpu, verdict, wait_final_by_log)
from tests.support import Daemon, base_env  # noqa: E402

TARGETS = {"get_rps": 2000.0, "get_p99_ms": 20.0, "list_ms": 50.0}
API = "/api/v1"


def job_ids(n: int) -> list[str]:
    width = max(5, len(str(n - 1)))
    return [f"api-{i:0{width}d}" for i in range(n)]


def new_daemon(root: Path, log_dir: Path, **settings: str) -> Daemon:
    return Daemon(root, host=HOST, workers=["cpu", "cpu"], log_dir=log_dir, **settings)


# The personalities' status paths (daemon/http/compat/), in wrk's id format.
COMPAT_PATHS = {"wan": "/api/v1/job/", "visualizr": "/api/v1/generate/status/"}


def compat_rounds(root: Path, log_dir: Path, wrk: str, ids: list[str], measured, args, rounds: int = 3) -> dict:
    """Each personality's translated status, each run between two native GET /jobs/{id} runs
    on the same daemon (the machine drifts over minutes: a ratio to the runs beside it, not to
    one early native run); the personalities' order alternates per round. Per personality:
    the median over `rounds` of req/s ÷ the mean of its two native neighbours, and of the
    daemon CPU per request (native ÷ translated)."""
    d = new_daemon(root, log_dir, **{f"VIDSPOOL_COMPAT__{n.upper()}__LISTEN": "127.0.0.1:0" for n in COMPAT_PATHS})
    d.start()
    try:
        urls = d.heartbeat["compat_urls"]
        pids = (d.proc.pid, [w["pid"] for w in d.heartbeat["workers"]])
        targets = {"native": (d.api, f"{API}/jobs/"), **{n: (urls[n], path) for n, path in COMPAT_PATHS.items()}}
        luas = {}
        for name, (base, path) in targets.items():
            luas[name] = log_dir / f"ids-{name}.lua"
            luas[name].write_text(WRK_LUA.replace("/api/v1/jobs/", path) % {"n": len(ids), "width": len(ids[0]) - 4})
            run_wrk(wrk, base + path + "x", 2, args.connections, args.threads, luas[name], None)  # warm-up

        def load(name: str) -> dict:
            base, path = targets[name]
            return measured(lambda: run_wrk(wrk, base + path + "x", args.seconds, args.connections, args.threads,
                                            luas[name], CpuWindow(*pids)))

        pairs: dict[str, list[dict]] = {n: [] for n in COMPAT_PATHS}
        native_runs = [load("native")]
        for k in range(rounds):
            order = list(COMPAT_PATHS) if k % 2 == 0 else list(reversed(COMPAT_PATHS))
            for name in order:
                run = load(name)
                native_runs.append(load("native"))
                before, after = native_runs[-2], native_runs[-1]
                native_rps = (before["requests_per_s"] + after["requests_per_s"]) / 2
                native_cpu = (before["daemon_cpu_us_per_request"] + after["daemon_cpu_us_per_request"]) / 2
                pairs[name].append({"requests_per_s": run["requests_per_s"], "native_requests_per_s": round(native_rps, 1),
                                    "ratio": round(run["requests_per_s"] / native_rps, 3),
                                    "cpu_us_per_request": round(run["daemon_cpu_us_per_request"], 1),
                                    "native_cpu_us_per_request": round(native_cpu, 1),
                                    "cpu_ratio": round(native_cpu / run["daemon_cpu_us_per_request"], 3),
                                    "non_2xx": run.get("non_2xx") or 0})
    finally:
        d.stop()

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    return {"native_requests_per_s": [round(r["requests_per_s"], 1) for r in native_runs],
            **{name: {"ratio": median([x["ratio"] for x in runs]), "cpu_ratio": median([x["cpu_ratio"] for x in runs]),
                      "requests_per_s": median([x["requests_per_s"] for x in runs]), "rounds": runs}
               for name, runs in pairs.items()}}


# -- fill ---------------------------------------------------------------------------------
BARE_SERVER = """
import asyncio, os, sys
from pathlib import Path
from aiohttp import web
outbox = Path(sys.argv[1]) / "outbox"
bodies = {j: (outbox / j / "status.json").read_bytes() for j in os.listdir(outbox) if (outbox / j / "status.json").is_file()}

async def get_job(request):
    body = bodies.get(request.match_info["id"])
    if body is None:
        raise web.HTTPNotFound()
    return web.Response(body=body, content_type="application/json")

async def main():
    app = web.Application()
    app.add_routes([web.get("/api/v1/jobs/{id}", get_job)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def bare_rounds(root: Path, base: str, daemon_pids: tuple, wrk: str, lua: Path, measured, args) -> dict:
    """The native GET /jobs/{id} and a bare aiohttp handler serving the same bytes (BARE_SERVER),
    alternating on the same machine, `args.bare` rounds; per round native req/s ÷ the mean of
    the bare runs beside it (the machine drifts over minutes)."""
    bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        bare_base = f"http://127.0.0.1:{int(bare.stdout.readline())}"
        targets = {"native": (base, daemon_pids), "bare": (bare_base, (bare.pid, []))}
        for url, _ in targets.values():
            run_wrk(wrk, url + f"{API}/jobs/x", 2, args.connections, args.threads, lua, None)  # warm-up

        def load(name: str) -> dict:
            url, pids = targets[name]
            return measured(lambda: run_wrk(wrk, url + f"{API}/jobs/x", args.seconds, args.connections, args.threads,
                                            lua, CpuWindow(*pids)))

        bare_runs, rounds = [load("bare")], []
        for _ in range(args.bare):
            native = load("native")
            bare_runs.append(load("bare"))
            beside = (bare_runs[-2]["requests_per_s"] + bare_runs[-1]["requests_per_s"]) / 2
            rounds.append({"native_requests_per_s": native["requests_per_s"], "bare_requests_per_s": round(beside, 1),
                           "ratio": round(native["requests_per_s"] / beside, 3),
                           "native_cpu_us_per_request": round(native["daemon_cpu_us_per_request"], 1),
                           "non_2xx": native["non_2xx"]})
            print(f"  bare: native {native['requests_per_s']:.0f} req/s, bare {beside:.0f} req/s: "
                  f"x{rounds[-1]['ratio']:.2f}", flush=True)
    finally:
        bare.kill()
        bare.wait()
    ratios = sorted(r["ratio"] for r in rounds)
    return {"rounds": rounds, "median_ratio": ratios[len(ratios) // 2]}


def final_state(root: Path, jid: str) -> str | None:
    try:
        with open(root / "outbox" / jid / "status.json", "rb") as f:
            return json.loads(f.read()).get("state")
    except (OSError, json.JSONDecodeError):
        return None


def fill(d: Daemon, ids: list[str], batch: int) -> dict:
    """Drops the ids that are not in outbox/ yet, `batch` at a time, through the running daemon."""
    root = d.root
    have = set(os.listdir(root / "outbox"))
    missing = [j for j in ids if j not in have]
    res = {"already_there": len(ids) - len(missing), "dropped": len(missing), "batch": batch, "batches": []}
    if not missing:
        return res
    stage = Path(tempfile.mkdtemp(prefix=".api-stage-", dir=root.parent))  # same filesystem: rename
    body = json.dumps(PROBE)
    t0 = time.perf_counter()
    try:
        for k in range(0, len(missing), batch):
            part = missing[k:k + batch]
            for jid in part:
                (stage / f"{jid}.json").write_text(body)
            tail = LogTail(d.log_path)
            tb = time.perf_counter()
            for jid in part:
                os.rename(stage / f"{jid}.json", root / "inbox" / f"{jid}.json")
            done = wait_final_by_log(tail, set(part), time.monotonic() + 600, d)
            took = time.perf_counter() - tb
            bad = sum(1 for v in done.values() if v != "completed")
            res["batches"].append({"jobs": len(part), "s": round(took, 3), "jobs_per_s": round(len(part) / took, 1), "not_completed": bad})
            print(f"  fill: {k + len(part)}/{len(missing)} ({len(part) / took:.0f} jobs/s)", flush=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    res["s"] = time.perf_counter() - t0
    res["jobs_per_s"] = len(missing) / res["s"]
    return res


def check_all_completed(root: Path, ids: list[str]) -> dict[str, int]:
    states: dict[str, int] = {}
    for jid in ids:
        s = final_state(root, jid) or "missing"
        states[s] = states.get(s, 0) + 1
    return states


def softirq_s() -> float:
    """Machine-wide softirq CPU seconds (/proc/stat): loopback TCP work that is not charged to a process."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(f[7]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_s: float, busy_below: float = 0.15, window: float = 2.0) -> float:
    """Waits (up to max_s) until the machine has been busy (or waiting on storage) less than
    `busy_below` of its CPUs for two windows in a row: other sessions' work skews every figure.
    Returns the seconds waited."""
    t0 = time.perf_counter()
    quiet = 0
    while time.perf_counter() - t0 < max_s and quiet < 2:
        a = system_cpu()
        time.sleep(window)
        b = system_cpu()
        busy = b["busy"] - a["busy"]
        iowait = b["iowait"] - a["iowait"]
        total = busy + (b["idle"] - a["idle"]) + iowait
        quiet = quiet + 1 if total and (busy + iowait) / total < busy_below else 0
    return time.perf_counter() - t0


def io_read_bytes(pid: int) -> int:
    """Bytes a process caused to be read from storage (/proc/PID/io read_bytes): page-cache misses."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def major_faults(pid: int) -> int:
    """Major page faults of a process so far (/proc/PID/stat): pages it had to wait for from storage."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[9])
    except (OSError, IndexError, ValueError):
        return 0


def prime(root: Path, ids: list[str]) -> dict:
    """Reads every status.json once, so that the run starts with them in the page cache
    (this VM's DAMON reclaim pages out file pages untouched for ~30 s)."""
    t = time.perf_counter()
    for jid in ids:
        with open(root / "outbox" / jid / "status.json", "rb") as f:
            f.read()
    return {"prime_s": time.perf_counter() - t}


def evict(root: Path, ids: list[str]) -> float:
    """Drops the status.json pages from the page cache (POSIX_FADV_DONTNEED): a cold start."""
    t = time.perf_counter()
    for jid in ids:
        fd = os.open(root / "outbox" / jid / "status.json", os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return time.perf_counter() - t


# -- CPU accounting -----------------------------------------------------------------------------
class CpuWindow:
    """CPU seconds used during a load run by the daemon, its workers, the load generator (a
    waited child, or this process) and everything else on the machine."""

    def __init__(self, daemon_pid: int, worker_pids: list[int]):
        self.pids = [daemon_pid] + worker_pids

    def __enter__(self):
        self.a = self._take()
        return self

    def __exit__(self, *exc):
        self.b = self._take()

    def _take(self) -> dict:
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        return {"procs": [cpu_seconds(p) for p in self.pids], "read_bytes": io_read_bytes(self.pids[0]), "majflt": major_faults(self.pids[0]), "machine": system_cpu(), "softirq": softirq_s(), "kth": kernel_threads_cpu(),
                "children": ch.ru_utime + ch.ru_stime, "self": me.ru_utime + me.ru_stime, "wall": time.perf_counter()}

    def report(self) -> dict:
        a, b = self.a, self.b
        procs = [y - x for x, y in zip(a["procs"], b["procs"])]
        busy = b["machine"]["busy"] - a["machine"]["busy"]
        gen = (b["children"] - a["children"]) + (b["self"] - a["self"])
        kth = b["kth"] - a["kth"]
        return {"wall_s": b["wall"] - a["wall"], "daemon_s": procs[0], "workers_s": sum(procs[1:]), "loadgen_and_bench_s": gen,
                "daemon_storage_read_kb": (b["read_bytes"] - a["read_bytes"]) / 1024, "daemon_major_faults": b["majflt"] - a["majflt"],
                "steal_s": b["machine"]["steal"] - a["machine"]["steal"], "iowait_s": b["machine"]["iowait"] - a["machine"]["iowait"],
                "kernel_threads_s": kth, "softirq_s": b["softirq"] - a["softirq"], "machine_busy_s": busy, "machine_idle_s": b["machine"]["idle"] - a["machine"]["idle"],
                "other_s": max(0.0, busy - sum(procs) - gen - kth - (b["softirq"] - a["softirq"]))}


# -- wrk ---------------------------------------------------------------------------------------
WRK_LUA = """
-- GET /api/v1/jobs/{id} with an id picked at random per request
local ids_n = %(n)d
local fmt = "/api/v1/jobs/api-%%0%(width)dd"
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end
function request()
  return wrk.format("GET", string.format(fmt, math.random(0, ids_n - 1)))
end
"""


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk missing: apt-get install -y wrk ...", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        r = subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, capture_output=True, text=True)
        if r.returncode != 0:  # maybe the package lists are stale
            subprocess.run(["apt-get", "update"], env=env, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, capture_output=True)
        path = shutil.which("wrk")
        if path:
            return path
    sys.exit("wrk is needed: `sudo apt-get install wrk` (Debian/Ubuntu package `wrk`), then run again")


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"wrk time {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_wrk(out: str) -> dict:
    r: dict = {}
    m = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)\s+([\d.]+)%", out)
    if m:
        r["latency_avg_ms"], r["latency_stdev_ms"], r["latency_max_ms"] = _ms(m.group(1)), _ms(m.group(2)), _ms(m.group(3))
    dist = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.M))
    r["latency_ms"] = {f"p{k}": _ms(v) for k, v in dist.items()}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+\w+) read", out)
    if m:
        r["requests"] = int(m.group(1))
        r["duration_s"] = _ms(m.group(2) + m.group(3)) / 1e3
        r["read"] = m.group(4)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["requests_per_s"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m else {}
    return r


def run_wrk(wrk: str, url: str, seconds: float, connections: int, threads: int, lua: Path | None, cpu: CpuWindow | None) -> dict:
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s"]
    if lua:
        cmd += ["-s", str(lua)]
    cmd.append(url)
    if cpu:
        with cpu:
            p = subprocess.run(cmd, capture_output=True, text=True)
    else:
        p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    r = parse_wrk(p.stdout)
    r["command"] = " ".join(cmd)
    r["raw"] = p.stdout
    if cpu:
        r["cpu"] = cpu.report()
        if r.get("requests"):
            r["daemon_cpu_us_per_request"] = r["cpu"]["daemon_s"] / r["requests"] * 1e6
    return r


# -- Python aiohttp client -------------------------------------------------------------------------
async def _client_load(base: str, ids: list[str], seconds: float, connections: int, warmup: float) -> dict:
    import aiohttp

    lat: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    conn = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=conn) as session:
        t_start = time.perf_counter()
        t_rec = t_start + warmup
        t_end = t_rec + seconds

        async def one(k: int) -> None:
            rnd = random.Random(k * 7919 + int(time.time()))
            while True:
                t = time.perf_counter()
                if t >= t_end:
                    return
                jid = ids[rnd.randrange(len(ids))]
                try:
                    async with session.get(f"{base}{API}/jobs/{jid}") as r:
                        await r.read()
                        st = r.status
                except aiohttp.ClientError as exc:
                    errors.append(repr(exc))
                    continue
                t2 = time.perf_counter()
                if t >= t_rec:  # requests sent after the warm-up
                    lat.append((t2 - t) * 1e3)
                    statuses[st] = statuses.get(st, 0) + 1

        await asyncio.gather(*(one(k) for k in range(connections)))
        t_done = time.perf_counter()
    # throughput over the recorded window: requests started after warm-up, ended by t_done
    return {"requests": len(lat), "duration_s": t_done - t_rec, "requests_per_s": len(lat) / (t_done - t_rec),
            "latency_ms": summary(lat), "statuses": {str(k): v for k, v in statuses.items()}, "errors": errors[:5],
            "n_errors": len(errors), "warmup_s": warmup, "connections": connections}


def python_client(base: str, ids: list[str], seconds: float, connections: int, cpu: CpuWindow) -> dict:
    with cpu:
        r = asyncio.run(_client_load(base, ids, seconds, connections, warmup=1.0))
    r["cpu"] = cpu.report()
    r["daemon_cpu_us_per_request"] = r["cpu"]["daemon_s"] / max(1, r["requests"]) * 1e6  # includes the warm-up second
    return r


# -- list pages --------------------------------------------------------------------------------
def time_list(base: str, query: str, reps: int, warmup: int = 5) -> dict:
    host, port = base.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    ms: list[float] = []
    body = {}
    try:
        for i in range(warmup + reps):
            t = time.perf_counter()
            conn.request("GET", f"{API}/jobs?{query}")
            r = conn.getresponse()
            raw = r.read()
            took = (time.perf_counter() - t) * 1e3
            if r.status != 200:
                raise RuntimeError(f"GET /jobs?{query} -> {r.status}: {raw[:300]!r}")
            if i >= warmup:
                ms.append(took)
            body = json.loads(raw)
    finally:
        conn.close()
    jobs = body.get("jobs", [])
    return {"query": query, "ms": summary(ms), "jobs": len(jobs), "first": jobs[0]["id"] if jobs else None,
            "last": jobs[-1]["id"] if jobs else None, "next_cursor": body.get("next_cursor"), "bytes": len(raw)}


# -- the handler's parts, timed here ------------------------------------------------------------
def handler_parts(root: Path, ids: list[str], n: int = 3000) -> dict:
    from aiohttp import web

    from daemon.spool.fsops import read_json
    from daemon.spool.layout import is_valid_job_id

    rnd = random.Random(1)
    sample = [ids[rnd.randrange(len(ids))] for _ in range(n)]
    paths = [root / "outbox" / j / "status.json" for j in sample]
    out: dict = {}

    def per_call(fn, items) -> float:
        t = time.perf_counter()
        for x in items:
            fn(x)
        return (time.perf_counter() - t) / len(items) * 1e6

    def raw_read(p: Path) -> bytes:
        with open(p, "rb") as f:
            return f.read()

    per_call(read_json, paths[:200])  # warm
    out["read_json_us"] = per_call(read_json, paths)
    out["open_read_bytes_us"] = per_call(raw_read, paths)
    out["status_json_bytes"] = len(raw_read(paths[0]))
    docs = [read_json(p) for p in paths[:500]]
    out["json_loads_us"] = per_call(json.loads, [raw_read(p) for p in paths[:500]])
    out["json_dumps_us"] = per_call(json.dumps, docs)
    out["web_json_response_us"] = per_call(web.json_response, docs)
    out["web_response_raw_bytes_us"] = per_call(lambda b: web.Response(body=b, content_type="application/json"),
                                                [raw_read(p) for p in paths[:500]])
    out["is_valid_job_id_us"] = per_call(is_valid_job_id, sample)
    outbox = root / "outbox"
    t = time.perf_counter()
    for _ in range(20):
        names = os.listdir(outbox)
    out["listdir_outbox_ms"] = (time.perf_counter() - t) / 20 * 1e3
    t = time.perf_counter()
    for _ in range(20):
        sorted(x for x in names if x > "" and is_valid_job_id(x))
    out["filter_sort_names_ms"] = (time.perf_counter() - t) / 20 * 1e3
    out["outbox_entries"] = len(names)
    # what the page would cost with a sorted in-memory index of ids (bisect to the cursor, 50 reads)
    index = sorted(x for x in names if is_valid_job_id(x))
    import bisect

    t = time.perf_counter()
    for _ in range(20):
        i = bisect.bisect_right(index, ids[len(ids) // 2 - 1])
        for jid in index[i:i + 50]:
            read_json(root / "outbox" / jid / "status.json")
    out["indexed_page_ms"] = (time.perf_counter() - t) / 20 * 1e3
    return out


# -- cProfile of a daemon under load ---------------------------------------------------------------
PROFILED_DAEMON = """
import cProfile, signal, sys
prof, path = cProfile.Profile(), sys.argv[1]
signal.signal(signal.SIGUSR1, lambda *a: prof.enable())
signal.signal(signal.SIGUSR2, lambda *a: (prof.disable(), prof.dump_stats(path)))
sys.argv = ["daemon", "run"]
from daemon.cli.commands import main
sys.exit(main())
"""


def profile_daemon(root: Path, log_dir: Path, wrk: str, lua: Path, prep, seconds: float, connections: int, threads: int) -> dict:
    """`python -m daemon run` in a wrapper that turns cProfile on at SIGUSR1 and writes it at
    SIGUSR2, so that only the load window is profiled (the API runs on the main thread's loop)."""
    prof_path = log_dir / "daemon.prof"
    d = new_daemon(root, log_dir)
    d.root.mkdir(parents=True, exist_ok=True)
    d._log = open(d.log_path, "ab")
    d.proc = subprocess.Popen([sys.executable, "-c", PROFILED_DAEMON, str(prof_path)], cwd=REPO,
                              env=base_env(**d.settings), stdout=d._log, stderr=subprocess.STDOUT)
    _STARTED.append(d)
    try:
        d.wait_ready()
        base = d.api
        run_wrk(wrk, base + f"{API}/jobs/x", 1, connections, threads, lua, None)  # warm
        prepared = prep()
        os.kill(d.proc.pid, signal.SIGUSR1)
        time.sleep(0.2)
        r = run_wrk(wrk, base + f"{API}/jobs/x", seconds, connections, threads, lua, None)
        os.kill(d.proc.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not prof_path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        d.stop()
    st = pstats.Stats(str(prof_path))
    total = st.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (cc, nc, tt, ct, callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append({"func": f"{Path(file).name}:{line}({func})" if line else func, "file": file, "calls": nc,
                     "tottime_s": tt, "cumtime_s": ct})

    def cum(name: str, file_part: str = "") -> float:
        return max((x["cumtime_s"] for x in rows if x["func"].endswith(f"({name})") and file_part in x["file"]), default=0.0)

    def tot(funcs: tuple[str, ...]) -> float:
        return sum(x["tottime_s"] for x in rows if x["func"] in funcs)

    idle = tot(("<method 'poll' of 'select.epoll' objects>",))
    busy = total - idle
    handler = cum("get_job", "daemon/http/api.py")
    current = cum("current", "daemon/spool/status.py")
    json_resp = cum("json_response", "aiohttp")
    outer_mw = cum("chain", "daemon/http/chain.py")  # the fronts' one middleware (daemon/http/chain.py)
    observe = cum("observe_request", "daemon/http/metrics.py")
    send = tot(("<method 'send' of '_socket.socket' objects>",))
    file_io = tot(("<built-in method io.open>", "<method 'read' of '_io.BufferedReader' objects>"))
    loads = sum(x["tottime_s"] for x in rows if x["func"].endswith("(raw_decode)"))
    groups = {
        "busy (all but the epoll wait)": busy,
        "GET /jobs/{id} handler (Api.get_job)": handler,
        "  statuses.current -> read_json": current,
        "    open + read syscalls (tottime)": file_io,
        "    json.loads (raw_decode tottime)": loads,
        "  web.json_response (json.dumps + Response)": json_resp,
        "the fronts' chain without the handler": outer_mw - handler,
        "  of which Metrics.observe_request (prometheus)": observe,
        "aiohttp outside the chain (parse, route, write)": busy - outer_mw,
        "  of which socket.send (tottime)": send,
    }
    n = r.get("requests") or 1
    top = sorted(rows, key=lambda x: -x["tottime_s"])[:40]
    return {"seconds": seconds, "prep": prepared, "wrk_under_profile": {k: r.get(k) for k in ("requests", "requests_per_s", "latency_ms", "non_2xx")},
            "profile_total_s": total, "idle_s": idle, "groups_s": groups,
            "groups_share_of_busy": {k: v / busy for k, v in groups.items()} if busy else {},
            "groups_us_per_request": {k: v / n * 1e6 for k, v in groups.items()},
            "top_tottime": [{k: x[k] for k in ("func", "calls", "tottime_s", "cumtime_s")} for x in top],
            "prof_file": str(prof_path)}


# -- A/B: the fixes, tried by patching the daemon in a wrapper (daemon/http/api.py is not changed) -------
VARIANT_DAEMON = """
import json, sys
variant = sys.argv[1]
sys.argv = ["daemon", "run"]
from aiohttp import web
import daemon.http.api as api
import daemon.http.metrics as metrics
from daemon.spool.layout import is_valid_job_id

if variant in ("raw", "cache", "cache+metrics"):
    FINAL = {"completed", "failed", "canceled"}
    orig_init = api.Api.__init__

    def init(self, view):
        orig_init(self, view)
        self._final = {}  # job id -> the bytes of its final status.json
        view.on_status(lambda doc: self._final.pop(doc.get("id"), None))

    async def get_job(self, request):
        job_id = request.match_info["id"]
        if is_valid_job_id(job_id) and self.view.daemon.statuses.live(job_id) is None:  # not live in memory
            raw = self._final.get(job_id)
            if raw is None:
                try:
                    with open(self.view.spool.status_path(job_id), "rb") as f:
                        raw = f.read()
                except (FileNotFoundError, NotADirectoryError):
                    raw = None
                if raw is not None and variant != "raw":
                    try:
                        state = json.loads(raw).get("state")
                    except ValueError:
                        state = None
                    if state in FINAL:
                        self._final[job_id] = raw
            if raw is not None:
                return web.Response(body=raw, content_type="application/json")
        return await orig_get_job(self, request)

    orig_get_job = api.Api.get_job
    api.Api.__init__ = init
    api.Api.get_job = get_job

if variant == "cache+metrics":
    def observe_request(self, method, route, status, seconds):
        key = (method, route, status)
        children = self.__dict__.setdefault("_children", {})
        c = children.get(key)
        if c is None:
            c = children[key] = (self.requests.labels(method, route, str(status)), self.request_seconds.labels(route))
        c[0].inc()
        c[1].observe(seconds)

    metrics.Metrics.observe_request = observe_request

from daemon.cli.commands import main
sys.exit(main())
"""
VARIANTS = {
    "base": "the daemon as it is (through the same wrapper)",
    "raw": "final status served as the bytes of status.json (no json.loads / json.dumps)",
    "cache": "final status bytes kept in memory after the first read (no file read)",
    "cache+metrics": "cache, and the prometheus label children looked up once per (method, route, status)",
}


def same_answers(base: str, root: Path, prefix: str, n: int) -> bool:
    """GET /jobs/{id} of n outbox jobs parses to the same object as their status.json."""
    import urllib.request

    names = sorted(x for x in os.listdir(root / "outbox") if x.startswith(prefix))[:n]
    for jid in names:
        with urllib.request.urlopen(f"{base}{API}/jobs/{jid}", timeout=10) as r:
            if r.status != 200 or not r.headers.get("Content-Type", "").startswith("application/json"):
                return False
            got = json.loads(r.read())
        if got != json.loads((root / "outbox" / jid / "status.json").read_bytes()):
            return False
    return True


def run_variants(root: Path, log_dir: Path, wrk: str, lua: Path, measured, seconds: float, connections: int, threads: int) -> dict:
    out = {}
    for name, what in VARIANTS.items():
        d = new_daemon(root, log_dir)
        d.root.mkdir(parents=True, exist_ok=True)
        d._log = open(d.log_path, "ab")
        d.proc = subprocess.Popen([sys.executable, "-c", VARIANT_DAEMON, name], cwd=REPO, env=base_env(**d.settings),
                                  stdout=d._log, stderr=subprocess.STDOUT)
        _STARTED.append(d)
        try:
            d.wait_ready()
            hb = d.heartbeat
            cpu = CpuWindow(d.proc.pid, [w["pid"] for w in hb["workers"]])
            run_wrk(wrk, d.api + f"{API}/jobs/x", 2, connections, threads, lua, None)  # warm-up (fills the cache)
            same = same_answers(d.api, root, job_ids(1)[0][:4], 20)
            r = measured(lambda: run_wrk(wrk, d.api + f"{API}/jobs/x", seconds, connections, threads, lua, cpu))
        finally:
            d.stop()
        r.pop("raw", None)
        r["what"] = what
        r["answers_equal_status_json"] = same
        out[name] = r
        print(f"  {name:<14} {r['requests_per_s']:7.0f} req/s  p50/p99 {r['latency_ms'].get('p50', 0):.2f} / {r['latency_ms'].get('p99', 0):.2f} ms  "
              f"daemon {r['daemon_cpu_us_per_request']:.0f} µs/req  other procs {r['cpu']['other_s']:.2f} s", flush=True)
    return out


# -- fsyncs on the daemon's loop during the load (strace, only fsync/fdatasync stop the daemon) ------
def fsync_trace(root: Path, log_dir: Path, wrk: str, lua: Path, prep, runs: int, seconds: float, connections: int, threads: int) -> dict:
    strace = shutil.which("strace")
    if not strace:
        return {"error": "strace not installed (apt-get install strace)"}
    trace = log_dir / "fsync-trace.txt"
    d = new_daemon(root, log_dir)
    d._log = open(d.log_path, "ab")
    d.proc = subprocess.Popen([strace, "-f", "--seccomp-bpf", "-e", "trace=fsync,fdatasync", "-T", "-ttt", "-o", str(trace),
                               sys.executable, "-m", "daemon", "run"], cwd=REPO, env=base_env(**d.settings),
                              stdout=d._log, stderr=subprocess.STDOUT)
    _STARTED.append(d)
    windows = []
    pid = None
    try:
        deadline = time.monotonic() + 60
        while True:  # d.proc is strace: the heartbeat names the daemon's own pid
            hb = d.heartbeat
            if hb.get("api_url") and hb.get("workers") and all(w["ready"] for w in hb["workers"]):
                break
            if time.monotonic() > deadline or d.proc.poll() is not None:
                raise RuntimeError(f"traced daemon not ready:\n{d.log()}")
            time.sleep(0.05)
        pid, api = hb["pid"], hb["api_url"]
        run_wrk(wrk, api + f"{API}/jobs/x", 2, connections, threads, lua, None)
        for _ in range(runs):
            info = prep()
            t0 = time.time()
            r = run_wrk(wrk, api + f"{API}/jobs/x", seconds, connections, threads, lua, CpuWindow(pid, [w["pid"] for w in hb["workers"]]))
            windows.append((t0, time.time(), r, info))
    finally:
        if pid:
            os.kill(pid, signal.SIGTERM)
        try:
            d.proc.wait(30)
        except subprocess.TimeoutExpired:
            d.proc.kill()
    calls = []
    for line in trace.read_text().splitlines():
        m = re.match(r"(\d+)\s+([\d.]+) (?:<\.\.\. )?(fsync|fdatasync)(?:\(| resumed>).*<([\d.]+)>$", line)
        if m:
            calls.append((float(m.group(2)), float(m.group(4)) * 1e3, int(m.group(1))))
    out = []
    for t0, t1, r, info in windows:
        ms = sorted(x[1] for x in calls if t0 <= x[0] <= t1 and x[2] == pid)
        out.append({"requests_per_s": r["requests_per_s"], "latency_ms": r["latency_ms"], "latency_max_ms": r.get("latency_max_ms"),
                    "cpu": r["cpu"], "prep": info, "fsyncs": len(ms), "fsync_ms_max": ms[-1] if ms else None,
                    "fsync_ms_over_5": [round(x, 1) for x in ms if x > 5], "fsync_ms_p50": ms[len(ms) // 2] if ms else None})
        print(f"  {r['requests_per_s']:6.0f} req/s  p99 {r['latency_ms'].get('p99', 0):6.2f}  max {r.get('latency_max_ms', 0):6.1f} ms  |  "
              f"{len(ms)} fsyncs by the daemon's main thread, max {out[-1]['fsync_ms_max'] or 0:.1f} ms, > 5 ms: {out[-1]['fsync_ms_over_5']}", flush=True)
    return {"runs": out, "note": "daemon started under strace -f --seccomp-bpf -e trace=fsync,fdatasync -T (only those calls stop)"}


# -- report ---------------------------------------------------------------------------------------
def print_report(R: dict) -> None:
    m = R["machine"]
    print()
    print(f"vidspool API bench  {R['started']}  git {m['git_head']}{' (modified tree)' if m['git_modified'] else ''}")
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['mem_total_kb'] // 1024} MiB, kernel {m['kernel']}, Python {m['python']}")
    F = R.get("fill") or {}
    print(f"spool: {R['spool']} ({R['jobs']} jobs; {F.get('dropped', 0)} dropped this run"
          + (f" in {F['s']:.1f} s, {F['jobs_per_s']:.0f} jobs/s" if F.get("dropped") else "") + f"); states {R.get('states')}")
    print()
    rows = []
    a = R["args"]
    W = R.get("wrk_get")
    if W:
        lm = W["latency_ms"]
        rows += [
            (f"GET /jobs/{{id}} wrk, {a['connections']} conns, {a['threads']} threads, {W.get('duration_s', 0):.0f} s",
             f"{W['requests_per_s']:.0f} req/s ({W.get('requests')} requests, non-2xx {W['non_2xx']})",
             f">= {TARGETS['get_rps']:.0f} req/s", verdict(W["requests_per_s"], TARGETS["get_rps"], True)),
            ("  latency p50 / p90 / p99 / max (wrk)",
             f"{lm.get('p50', float('nan')):.2f} / {lm.get('p90', float('nan')):.2f} / {lm.get('p99', float('nan')):.2f} / {W.get('latency_max_ms', float('nan')):.1f} ms",
             f"p99 <= {TARGETS['get_p99_ms']:.0f} ms", verdict(lm.get("p99", float("inf")), TARGETS["get_p99_ms"])),
            ("  CPU s daemon / wrk+bench / softirq / other procs; iowait",
             f"{W['cpu']['daemon_s']:.2f} / {W['cpu']['loadgen_and_bench_s']:.2f} / {W['cpu']['softirq_s']:.2f} / {W['cpu']['other_s']:.2f} "
             f"({W['cpu']['wall_s']:.1f} s); {W['cpu']['iowait_s']:.2f} s", "-", ""),
            ("  daemon CPU per request; storage reads", f"{W['daemon_cpu_us_per_request']:.0f} µs; {W['cpu']['daemon_storage_read_kb']:.0f} kB", "-", ""),
        ]
    C = R.get("wrk_get_cold")
    if C:
        lm = C["latency_ms"]
        rows += [("GET /jobs/{id} wrk, status files evicted first (cold)",
                  f"{C['requests_per_s']:.0f} req/s, p50/p99 {lm.get('p50', 0):.2f} / {lm.get('p99', 0):.2f} ms, "
                  f"{C['daemon_cpu_us_per_request']:.0f} µs/req, read {C['cpu']['daemon_storage_read_kb'] / 1024:.1f} MB, other {C['cpu']['other_s']:.2f} s", "-", "")]
    H = R.get("wrk_health")
    if H:
        rows += [("floor: GET /health wrk, same load", f"{H['requests_per_s']:.0f} req/s, p50/p99 {H['latency_ms'].get('p50', 0):.2f} / "
                  f"{H['latency_ms'].get('p99', 0):.2f} ms, daemon {H['daemon_cpu_us_per_request']:.0f} µs/req", "-", "")]
    P = R.get("python_get")
    if P:
        rows += [
            (f"GET /jobs/{{id}} Python aiohttp client, {P['connections']} conns", f"{P['requests_per_s']:.0f} req/s ({P['requests']} requests)", "(peer)", ""),
            ("  latency p50 / p90 / p99 / max (client)",
             f"{P['latency_ms']['p50']:.2f} / {P['latency_ms']['p90']:.2f} / {P['latency_ms']['p99']:.2f} / {P['latency_ms']['max']:.1f} ms", "(peer)", ""),
            ("  CPU s daemon / client / softirq / other procs",
             f"{P['cpu']['daemon_s']:.2f} / {P['cpu']['loadgen_and_bench_s']:.2f} / {P['cpu']['softirq_s']:.2f} / {P['cpu']['other_s']:.2f} ({P['cpu']['wall_s']:.1f} s)", "-", ""),
        ]
    for key, title, target in (("list_first", "GET /jobs?limit=50, first page", True),
                               ("list_completed", "GET /jobs?limit=50&state=completed, first page", True),
                               ("list_middle", "GET /jobs?limit=50&cursor=<middle>", False),
                               ("list_nomatch", "diag: GET /jobs?state=failed (no match: reads all)", None)):
        L = R.get(key)
        if L:
            rows.append((f"{title}, {L['ms']['n']} seq.", f"p50 {L['ms']['p50']:.2f} / p99 {L['ms']['p99']:.2f} / max {L['ms']['max']:.1f} ms ({L['jobs']} jobs)",
                         f"<= {TARGETS['list_ms']:.0f} ms" if target else ("(<= 50 ms)" if target is False else "-"),
                         verdict(L["ms"]["p99"], TARGETS["list_ms"]) if target is not None else ""))
    HP = R.get("parts")
    if HP:
        rows += [
            ("parts: read_json(status.json) / open+read only", f"{HP['read_json_us']:.1f} / {HP['open_read_bytes_us']:.1f} µs ({HP['status_json_bytes']} B)", "-", ""),
            ("parts: json.dumps / web.json_response / raw-bytes Response", f"{HP['json_dumps_us']:.1f} / {HP['web_json_response_us']:.1f} / {HP['web_response_raw_bytes_us']:.1f} µs", "-", ""),
            ("parts: listdir(outbox) / filter+sort names", f"{HP['listdir_outbox_ms']:.2f} / {HP['filter_sort_names_ms']:.2f} ms ({HP['outbox_entries']} entries)", "-", ""),
            ("parts: a page from a sorted id index (bisect + 50 read_json)", f"{HP['indexed_page_ms']:.2f} ms", "-", ""),
        ]
    if R.get("rss_after_kb"):
        rows.append(("daemon RSS after the load", f"{R['rss_after_kb'].get('VmRSS', 0) / 1024:.1f} MiB", "-", ""))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    print(f"{'measure':<{w0}}  {'value':<{w1}}  {'target':<{w2}}")
    print("-" * (w0 + w1 + w2 + 10))
    for r in rows:
        print(f"{r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]:<{w2}}  {r[3]}")
    PR = R.get("profile")
    if PR:
        print()
        print(f"cProfile of the daemon's main thread under wrk, load window only ({PR['wrk_under_profile'].get('requests_per_s', 0):.0f} req/s "
              f"while profiled; busy {PR['groups_s']['busy (all but the epoll wait)']:.1f} s of {PR['profile_total_s']:.1f} s):")
        for k, v in PR["groups_share_of_busy"].items():
            print(f"  {k:<56} {v * 100:5.1f}%  {PR['groups_us_per_request'][k]:6.0f} µs/request")
    CP = R.get("compat")
    if CP:
        print()
        print("Seed personalities: translated status, each run between two native GET /jobs/{id} runs (wrk; median of rounds):")
        print(f"  native runs: {CP['native_requests_per_s']} req/s")
        for name, x in CP.items():
            if name == "native_requests_per_s":
                continue
            print(f"  {name:<10} {x['requests_per_s']:7.0f} req/s  x{x['ratio']:.2f} of the native beside it; "
                  f"daemon CPU per request x{x['cpu_ratio']:.2f} (native ÷ translated); rounds "
                  + ", ".join(f"{r['ratio']:.2f}" for r in x["rounds"]) + f"; non-2xx {sum(r['non_2xx'] for r in x['rounds'])}")
    V = R.get("variants")
    if V:
        print()
        print("A/B, wrk against the daemon patched in a wrapper (daemon/http/api.py unchanged):")
        b = V["base"]["requests_per_s"]
        for k, v in V.items():
            print(f"  {k:<14} {v['requests_per_s']:7.0f} req/s (x{v['requests_per_s'] / b:.2f})  p50/p99 {v['latency_ms'].get('p50', 0):6.2f} / "
                  f"{v['latency_ms'].get('p99', 0):6.2f} ms  daemon {v['daemon_cpu_us_per_request']:4.0f} µs/req  other procs {v['cpu']['other_s']:.2f} s  {v['what']}")
    FT = (R.get("fsync_trace") or {}).get("runs")
    if FT:
        print()
        print("wrk against a daemon under strace (fsync/fdatasync only): fsyncs on the daemon's main thread (the API's loop):")
        for x in FT:
            print(f"  {x['requests_per_s']:6.0f} req/s  p99 {x['latency_ms'].get('p99', 0):6.2f}  max {x['latency_max_ms'] or 0:6.1f} ms  |  "
                  f"{x['fsyncs']} fsyncs, p50 {x['fsync_ms_p50'] or 0:.2f} ms, max {x['fsync_ms_max'] or 0:.1f} ms, > 5 ms: {x['fsync_ms_over_5']}")
    print()
    print("wrk is the figure against the targets: it takes ~0.2 of a core at these rates, the Python client ~0.8 (both share the 2 cores "
          "with the daemon, whose API loop is one thread).")
    la = R.get("loadavg", {})
    print(f"load average at start {la.get('start', [0])[0]:.2f}; total bench time {R.get('bench_seconds', 0):.0f} s; results in {R['args']['out']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=10_000, help="finished jobs in the spool (default 10000)")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each GET load run (default 10)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--batch", type=int, default=1000, help="jobs renamed into inbox/ at once while filling")
    ap.add_argument("--list-reps", type=int, default=200)
    ap.add_argument("--rest", type=float, default=35.0, help="seconds of rest after filling, before measuring (0 skips)")
    ap.add_argument("--keep", type=Path, metavar="SPOOL", help="spool folder to fill once and reuse on later runs")
    ap.add_argument("--no-python-client", action="store_true")
    ap.add_argument("--quiet-wait", type=float, default=120.0,
                    help="before each load run, wait up to this long for the machine to be idle (other sessions); 0 skips")
    ap.add_argument("--retries", type=int, default=2,
                    help="run a load run again (up to this many times) when other processes used > 10%% of a core during it")
    ap.add_argument("--profile", action="store_true", help="also run a daemon under cProfile with wrk load")
    ap.add_argument("--variants", action="store_true",
                    help="also run wrk against the daemon patched (in a wrapper) with candidate fixes: " + ", ".join(VARIANTS))
    ap.add_argument("--fsync-trace", type=int, default=0, metavar="RUNS",
                    help="also run wrk RUNS times against a daemon under strace (fsync/fdatasync only), timing its fsyncs")
    ap.add_argument("--bare", type=int, default=0, metavar="ROUNDS",
                    help="only the native GET beside a bare aiohttp handler serving the same bytes, ROUNDS rounds")
    ap.add_argument("--compat", action="store_true",
                    help="also load the seed personalities' translated status beside the native GET (rounds, ratios)")
    ap.add_argument("--out", type=Path, default=OUT / "api.json")
    args = ap.parse_args()

    t_start = time.perf_counter()
    wrk = ensure_wrk()
    base_dir = Path(tempfile.mkdtemp(prefix="vidspool-apibench-"))
    root = args.keep.resolve() if args.keep else base_dir / "spool"
    ids = job_ids(args.jobs)
    R: dict = {"started": datetime.now().isoformat(timespec="seconds"), "machine": machine(), "spool": str(root), "jobs": args.jobs,
               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "wrk_version": subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.splitlines()[0:1],
               "loadavg": {"start": os.getloadavg()}, "targets": TARGETS}
    try:
        import aiohttp

        R["aiohttp"] = aiohttp.__version__
        lua = base_dir / "ids.lua"
        lua.write_text(WRK_LUA % {"n": args.jobs, "width": len(ids[0]) - 4})

        # 1. fill (through a daemon), then a fresh daemon for the measurements
        d = new_daemon(root, base_dir)
        R["fill_start"] = start_timed(d)
        print(f"fill: {args.jobs} probe jobs in {root} ...", flush=True)
        R["fill"] = fill(d, ids, args.batch)
        d.stop()
        R["states"] = check_all_completed(root, ids)
        if R["states"].get("completed", 0) != args.jobs:
            raise RuntimeError(f"not all {args.jobs} jobs completed: {R['states']}")
        if R["fill"]["dropped"] and args.rest > 0:
            print(f"  (resting {args.rest:.0f} s: writeback of the fill)", flush=True)
            time.sleep(args.rest)
        d = new_daemon(root, base_dir)
        R["start"] = start_timed(d)
        base = d.api
        pids = (d.proc.pid, R["start"]["worker_pids"])
        R["api_url"] = base

        def prep() -> dict:
            """Before a load run: wait for the machine to be idle, then prime the page cache."""
            info = {"quiet_wait_s": wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else 0.0}
            if info["quiet_wait_s"] > 5:
                print(f"  (waited {info['quiet_wait_s']:.0f} s for the machine to be idle)", flush=True)
            info.update(prime(root, ids))
            return info

        def measured(fn, io_expected: bool = False) -> dict:
            """prep + a load run, again (up to --retries times) while other processes used more
            than 10% of one core during it, or the machine waited on storage more than 10% of
            the time (someone else's I/O; unless the run reads from storage on purpose).
            Returns the least disturbed attempt, with a summary of the others."""
            def disturbance(r: dict) -> float:
                return r["cpu"]["other_s"] + (0.0 if io_expected else r["cpu"]["iowait_s"])

            attempts = []
            for _ in range(args.retries + 1):
                info = prep()
                r = fn()
                r["prep"] = info
                attempts.append(r)
                if disturbance(r) <= 0.1 * r["cpu"]["wall_s"]:
                    break
                print(f"  (disturbed: other processes used {r['cpu']['other_s']:.1f} s of CPU, iowait {r['cpu']['iowait_s']:.1f} s; again)", flush=True)
            best = min(attempts, key=disturbance)
            best["attempts"] = [{k: x.get(k) for k in ("requests_per_s", "latency_ms", "latency_max_ms", "cpu")} for x in attempts]
            return best

        if args.bare:
            print(f"bare: native GET /jobs/{{id}} beside a bare aiohttp handler, {args.bare} rounds ...", flush=True)
            R["bare"] = bare_rounds(root, base, pids, wrk, lua, measured, args)
            print(f"bare: median native / bare x{R['bare']['median_ratio']:.2f}")
            return 0

        # 2. GET /jobs/{id}: wrk (warm-up, measured), the health floor, the Python client, a cold run
        print(f"get: wrk {args.seconds:.0f} s, {args.connections} connections ...", flush=True)
        run_wrk(wrk, base + f"{API}/jobs/x", 2, args.connections, args.threads, lua, None)  # warm-up, discarded
        R["wrk_get"] = measured(lambda: run_wrk(wrk, base + f"{API}/jobs/x", args.seconds, args.connections, args.threads, lua, CpuWindow(*pids)))
        R["wrk_health"] = measured(lambda: run_wrk(wrk, base + f"{API}/health", max(3, args.seconds / 2), args.connections, args.threads, None,
                                                   CpuWindow(*pids)))
        if not args.no_python_client:
            print(f"get: Python aiohttp client {args.seconds:.0f} s, {args.connections} connections ...", flush=True)
            R["python_get"] = measured(lambda: python_client(base, ids, args.seconds, args.connections, CpuWindow(*pids)))
        print("get: wrk with the status files dropped from the page cache first ...", flush=True)

        def cold() -> dict:
            t = evict(root, ids)
            r = run_wrk(wrk, base + f"{API}/jobs/x", args.seconds, args.connections, args.threads, lua, CpuWindow(*pids))
            r["evict_s"] = t
            return r

        R["wrk_get_cold"] = measured(cold, io_expected=True)
        R["rss_after_kb"] = proc_status(d.proc.pid)

        # 3. list pages, one request at a time
        R["list_prep"] = prep()
        print(f"list: {args.list_reps} sequential requests per query ...", flush=True)
        R["list_first"] = time_list(base, "limit=50", args.list_reps)
        R["list_completed"] = time_list(base, "limit=50&state=completed", args.list_reps)
        R["list_middle"] = time_list(base, f"limit=50&cursor={ids[args.jobs // 2 - 1]}", args.list_reps)
        R["list_nomatch"] = time_list(base, "limit=50&state=failed", 5, warmup=1)
        d.stop()

        # 4. the handler's parts, and the optional profile
        R["parts"] = handler_parts(root, ids)
        if args.profile:
            print("profile: daemon under cProfile, wrk ...", flush=True)
            R["profile"] = profile_daemon(root, base_dir, wrk, lua, prep, max(3, args.seconds / 2), args.connections, args.threads)
        if args.variants:
            print("variants: wrk against patched daemons ...", flush=True)
            R["variants"] = run_variants(root, base_dir, wrk, lua, measured, args.seconds, args.connections, args.threads)
        if args.compat:
            print("compat: native GET and the personalities' translated status, alternating ...", flush=True)
            R["compat"] = compat_rounds(root, base_dir, wrk, ids, measured, args)
        if args.fsync_trace:
            print(f"fsync trace: {args.fsync_trace} wrk runs against a daemon under strace ...", flush=True)
            R["fsync_trace"] = fsync_trace(root, base_dir, wrk, lua, prep, args.fsync_trace, args.seconds, args.connections, args.threads)
        R["loadavg"]["end"] = os.getloadavg()
    finally:
        stop_leftovers()
        R["bench_seconds"] = time.perf_counter() - t_start
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(R, indent=1, default=str) + "\n")
        if args.keep:
            print(f"spool kept in {root} (logs in {base_dir})")
        else:
            shutil.rmtree(base_dir, ignore_errors=True)
    print_report(R)
    W = R.get("wrk_get") or {}
    if W.get("non_2xx") or any((W.get("socket_errors") or {}).values()):
        print(f"errors: non-2xx {W.get('non_2xx')}, socket {W.get('socket_errors')}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
