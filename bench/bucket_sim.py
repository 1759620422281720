#!/usr/bin/env python
"""A discrete-event simulation of the folder spool and the bucket spool past this machine
(issue 28 item 6): N hosts of G GPUs each, jobs arriving at a rate that keeps the fleet 80 %
busy (or a saturated queue), for N = 3 … 1,000.

Designs (docs/design.md, docs/crash-points.md, docs/bucket-spool.md):

  folder      one file server. Each host lists inbox/ and queue/ every rescan; a drop is
              taken after `stable_seconds` of checks (a stat each) by whoever renames it
              first; a claim pops the head of the host's in-memory copy of the queue (as
              listed at its last rescan) and renames it: ENOENT is a lost claim, the host
              tries its next entry. Every host reads every host's heartbeat file each beat.
              The server is an M/M/1 queue: each file op costs its measured service time,
              each listed entry its own, and an op's response time is service / (1 - load).
  folder-nas  the same with a file server 10× faster per op and per entry than sshd on this
              machine (an assumption standing for a dedicated NFS server).
  bucket      AWS S3 (a losing CAS is answered 412 at once). Each host's turn (`poll_seconds`): LIST inbox/, LIST queue/ (1,000 keys a
              page), LIST hosts/. A new drop is taken by an intake marker (PUT
              If-None-Match: every host whose turn sees it before the winner deletes it
              gets a 412); a claim is intent PUT, GET status, CAS PUT If-Match (412 for
              losers) in the claim window (`claim_window` entries at the head, the start
              rotated by the host's hash). Request latencies are the measured ones
              (bench/bucket_latency.py); S3's per-prefix limits (3,500 PUT/COPY/POST/DELETE
              and 5,500 GET/HEAD/LIST per second) make a request wait, and past them 503
              SlowDown and a retry with backoff, on the prefixes with fixed names (inbox/,
              intake/, queue/, hosts/; outbox/, active/ and work/ spread over ids and hosts
              and are assumed partitioned by S3).
  bucket-sw   the same on SeaweedFS: racing conditional writes to one key are serialised
              by a lock retried every second, so a loser that arrives while the key is
              locked is answered a whole second later (bench/bucket_latency.py's race).
  sharded     queue/<k>/ and intake/<k>/ for k < N/8: a job's hint and its intake go to one
              shard by its id's hash (only that shard's hosts take its drop); a host lists
              only its shard, and another (at random) when its own is empty and it has an
              idle GPU. inbox/ stays one prefix (the users write it).
  notify      S3 event notifications into a queue (SQS): no LIST of inbox/ or queue/; each
              drop's event, then each queued job's, is received by one host with an idle
              GPU (`--notify-seconds` after the write, 0.5 s on average: an assumption; AWS
              says "typically seconds"). The claim CAS stays (exactly once), without races;
              SQS requests ($0.40 per million) are counted, each idle host long-polling.
  shard+ntf   notifications on the sharded prefixes.

What is simplified: each host's spool work (listings, intake, claims, publishes) runs on one
serial loop, as today's daemon's does; a drop goes to the first host whose turn lists it
(others lose the race only within that winner's rename or accept: bursts, where several
hosts stage different drops of one listing, are not modelled); a host stops trying its
stale view after 64 lost claims in a row until its next turn; a run stops ("collapsed")
once its server stays over 3× its capacity for 5 s. Media transfers are not requests here.

Outputs per N and design: throughput (jobs/s ÷ offered), pickup (drop → running) p50/p99,
claims lost per job (queue) and intake races lost per job, entries listed per second, the
server's load (the file server's utilisation; S3's busiest limited prefix ÷ its limit),
requests per job and per hour by kind and their cost at AWS list prices, and takeover
(a host killed: kill → its job running elsewhere) p50/max.

  .venv/bin/python bench/bucket_sim.py            # the full tables (< 2 min on 2 cores)
  .venv/bin/python bench/bucket_sim.py --quick    # N = 3, 10, 30 and short runs

Calibration, from measured figures (BENCHMARKS.md "Shared spool over sshfs"): a file op
over sshfs on loopback is ~0.17 ms (0.25 s per 0.2 s job at ~250 file syscalls per job, of
which 8.8 ms is the daemon's CPU), of which the server's (sshd, sftp-server) share is taken
as half of the 43 ms of sshfs + sshd CPU per job; a listed entry costs 5 µs (readdir +
lstat, as sftp-server does: 4.5 µs per entry measured here on a 10,000-entry folder). The
calibration table, printed after the others (--no-calibration leaves it out), sets the
simulated folder beside the measured 1- and 3-host figures.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import itertools
import json
import math
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from multiprocessing import Pool
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LATENCY_FILE = REPO / "bench" / "out" / "bucket_latency.json"
INF = float("inf")

# --------------------------------------------------------------------- calibration

# The file server (sshfs on loopback, BENCHMARKS.md): seconds of server work per file op and
# per listed entry, and the client's share of an op's round trip.
FOLDER_OP_SERVICE = 0.085e-3
FOLDER_OP_RTT = 0.080e-3
FOLDER_ENTRY_SERVICE = 5e-6
HOST_CPU_PER_JOB = 8.8e-3  # the daemon's own CPU per job (8.8 ms per instant job over sshfs)
# File ops per job by step (the census: 238-265 file syscalls per job run over sshfs).
FOLDER_OPS = {"accept": 90, "claim": 3, "start": 25, "publish": 120, "status_write": 6,
              "stat": 1, "requeue": 12, "beat": 6}
# Stats a host makes of a drop it saw (its stability checks, one every stable_seconds / 3)
# before the drop is gone, on average.
STATS_PER_SEER = 2.5
PROGRESS_SECONDS = 0.5  # [status] progress_interval_seconds: one status write per interval

# S3 request latencies (ms: p50, p99), SeaweedFS on loopback, bench/bucket_latency.py at the
# commit that added this file (200 requests each); bench/out/bucket_latency.json overrides.
MEASURED_MS = {"put": (1.99, 10.65), "create": (2.16, 3.46), "replace": (2.08, 4.93),
               "get": (1.15, 1.76), "head": (0.79, 1.08), "list": (51.5, 121.1), "delete": (1.56, 5.31)}
SEAWEED_LOCK_RETRY = 1.0  # seconds between SeaweedFS's retries of a locked key
# S3 per-prefix request rates (AWS: per partitioned prefix, per second).
PUT_LIMIT, GET_LIMIT = 3500.0, 5500.0
MAX_RETRIES = 8
LIMITED_PREFIXES = ("inbox", "intake", "queue", "hosts")
# AWS S3 Standard list prices, $ per request; SQS standard queue $0.40 per million.
PRICE = {"PUT": 0.005 / 1000, "COPY": 0.005 / 1000, "LIST": 0.005 / 1000, "GET": 0.0004 / 1000,
         "HEAD": 0.0004 / 1000, "DELETE": 0.0, "SQS": 0.40 / 1e6}
PUT_CLASS = {"PUT", "COPY", "DELETE"}
LIST_PAGE = 1000
SQS_LONG_POLL = 20.0
MAX_LOSSES_PER_TURN = 64
# A run stops once its server is this far past its capacity for this many seconds in a row:
# the design cannot run there, and simulating the pile-up costs minutes.
COLLAPSE_LOAD, COLLAPSE_SECONDS = 3.0, 5  # a host stops trying its stale view after this many losses in a row

# The designs, as named in the tables.
FOLDER, FOLDER_NAS = "folder", "folder-nas"
BUCKET, BUCKET_SW, SHARDED, NOTIFY, BOTH = "bucket", "bucket-sw", "sharded", "notify", "shard+ntf"
DESIGNS = (FOLDER, FOLDER_NAS, BUCKET_SW, BUCKET, SHARDED, NOTIFY, BOTH)
# folder-nas: a file server this much faster per op and per listed entry than sshd here (an
# assumption, for a dedicated NFS server), to show where the folder's knee moves.
NAS_SPEEDUP = 10.0
HOSTS_PER_SHARD = 8


@dataclass(frozen=True)
class Scenario:
    """One simulated run. load: offered work ÷ the fleet's GPUs (None: a saturated queue of
    `backlog` jobs, kept full). burst: that many jobs dropped at 0 and nothing after."""

    design: str
    hosts: int
    gpus: int = 8
    job_seconds: float = 60.0
    load: float | None = 0.8
    seconds: float = 300.0
    warmup: float = 60.0
    poll: float = 2.0          # [spool] rescan_seconds / [s3] poll_seconds
    heartbeat: float = 3.0
    lease: float = 30.0
    stable: float = 3.0        # folder only
    claim_window: int = 8      # bucket only
    kills: int = 1             # hosts killed (one at a time) to time takeovers
    backlog: int = 0
    burst: int = 0
    rtt_ms: float = 0.0        # added to every S3 request (loopback: 0)
    notify_seconds: float = 0.5
    drain: bool = False        # stop arrivals at `seconds`, run until every job completed
    seed: int = 1

    @property
    def shards(self) -> int:
        return max(1, self.hosts // HOSTS_PER_SHARD) if self.design in (SHARDED, BOTH) else 1

    @property
    def kill_spacing(self) -> float:
        return self.lease + 3 * self.poll + self.job_seconds / 4

    @property
    def window_end(self) -> float:
        """Throughput and pickups are measured before the first kill (a dead host's jobs wait
        a lease, which would swamp a small fleet's figures); the kills come after."""
        kills = self.kills if self.hosts > 1 else 0
        return max(self.warmup + 1, self.seconds - kills * self.kill_spacing)

    @property
    def notify(self) -> bool:
        return self.design in (NOTIFY, BOTH)

    @property
    def bucket(self) -> bool:
        return self.design not in (FOLDER, FOLDER_NAS)

    @property
    def arrival_rate(self) -> float:
        return 0.0 if self.load is None or self.burst else self.load * self.hosts * self.gpus / self.job_seconds


class Job:
    __slots__ = ("id", "arrived", "shard", "duration", "started", "completions", "killed_at", "owner", "runs",
                 "lost_runs")

    def __init__(self, jid: int, arrived: float, shard: int, duration: float):
        self.id, self.arrived, self.shard, self.duration = jid, arrived, shard, duration
        self.started = None
        self.completions = 0
        self.killed_at = None
        self.owner = None
        self.runs = 0  # attempts started: an attempt's end counts only if no later one started
        self.lost_runs = 0  # attempts that died with their host


class Entry:
    """A queue entry (a folder in queue/, or a hint key): one per time a job is queued."""

    __slots__ = ("job", "enq_time", "claim_time", "lock_until", "index")

    def __init__(self, job: Job, enq_time: float, index: int):
        self.job, self.enq_time, self.index = job, enq_time, index
        self.claim_time = INF
        self.lock_until = -INF


class Host:
    __slots__ = ("id", "phase", "beat_phase", "gpus_free", "alive", "rot", "loop_free", "shard", "view",
                 "snap_t", "scan_end", "cursor", "tried", "own", "claiming", "losses", "running", "orphans",
                 "messages")

    def __init__(self, hid: int, phase: float, beat_phase: float, gpus: int, rot: int, shard: int):
        self.id, self.phase, self.beat_phase, self.gpus_free, self.rot = hid, phase, beat_phase, gpus, rot
        self.alive, self.loop_free, self.shard, self.view = True, 0.0, shard, shard
        self.snap_t, self.scan_end, self.cursor = -INF, 0, 0
        self.tried: set = set()
        self.own: set = set()
        self.claiming, self.losses = False, 0
        self.running: set = set()
        self.orphans: list = []
        self.messages: list = []


def load_latencies(path: Path = LATENCY_FILE) -> dict:
    """{request: (p50 s, p99 s)}: bench/out/bucket_latency.json when there, else MEASURED_MS."""
    figures = dict(MEASURED_MS)
    if path.exists():
        found = json.loads(path.read_text())
        figures.update({k: (v["p50_ms"], v["p99_ms"]) for k, v in found.items() if k in MEASURED_MS})
    return {k: (a / 1000, b / 1000) for k, (a, b) in figures.items()}


# --------------------------------------------------------------------- servers

class FileServer:
    """The folder spool's file server: an M/M/1 queue whose load is the work of the
    previous second (plus the constant heartbeat work of every host)."""

    def __init__(self, background: float, speedup: float, rng: random.Random):
        self.work: dict[int, float] = defaultdict(float)
        self.speedup = speedup
        self.background = background
        self.rng = rng
        self.ops = 0
        self.entries = 0

    def load(self, t: float) -> float:
        return self.background + self.work.get(int(t) - 1, 0.0)

    def ops_latency(self, t: float, ops: int, entries: int = 0, sample: bool = False) -> float:
        """Response time of `ops` file ops in a row (and `entries` listed), sent at t."""
        busy = (ops * FOLDER_OP_SERVICE + entries * FOLDER_ENTRY_SERVICE) / self.speedup
        self.work[int(t)] += busy
        self.ops += ops
        self.entries += entries
        slow = 1.0 / (1.0 - min(self.load(t), 0.99))
        service = self.rng.expovariate(1.0 / (busy * slow)) if sample else busy * slow
        return ops * FOLDER_OP_RTT + service


class S3:
    """Requests by kind and prefix, their latency (measured, plus the prefix's queueing and
    throttling), and SeaweedFS's per-key lock."""

    def __init__(self, latencies: dict, rtt: float, rng: random.Random):
        self.latencies, self.rtt, self.rng = latencies, rtt, rng
        # op -> (median, sigma) of its lognormal latency
        self.shapes = {op: (p50, max(1e-6, math.log(p99 / p50) / 2.326)) for op, (p50, p99) in latencies.items()}
        self.counts: Counter = Counter()          # (kind, prefix) -> requests
        self.per_second: dict = defaultdict(Counter)  # second -> (prefix, class) -> requests
        self.limited: dict[str, bool] = {}
        self.throttled = 0
        self.entries = 0

    def is_limited(self, prefix: str) -> bool:
        limited = self.limited.get(prefix)
        if limited is None:
            limited = self.limited[prefix] = prefix.split("/")[0] in LIMITED_PREFIXES
        return limited

    def count(self, t: float, kind: str, prefix: str, n: int = 1) -> None:
        self.counts[(kind, prefix)] += n
        if self.is_limited(prefix):
            self.per_second[int(t)][(prefix, "put" if kind in PUT_CLASS else "get")] += n

    def request(self, t: float, kind: str, prefix: str, op: str, listed: int = 0) -> float:
        """Latency of one request of `kind` (PUT, GET, …) on `prefix` sent at t; `op` names
        its measured latency (put, create, replace, get, head, list, delete)."""
        self.count(t, kind, prefix)
        self.entries += listed
        latency = base = self.sample(op, listed)
        if self.is_limited(prefix):
            cls = "put" if kind in PUT_CLASS else "get"
            limit = PUT_LIMIT if cls == "put" else GET_LIMIT
            rho = self.per_second.get(int(t) - 1, {}).get((prefix, cls), 0) / limit
            if rho < 1.0:
                latency += rho / (2 * limit * (1 - rho))  # M/D/1 wait at the prefix's rate
            else:
                backoff = 0.05
                for _ in range(MAX_RETRIES):  # 503 SlowDown, retried with backoff (the SDK's, then the next turn's)
                    if self.rng.random() < 1.0 / rho:
                        break
                    self.throttled += 1
                    latency += backoff * (0.5 + self.rng.random()) + base
                    backoff = min(backoff * 2, 5.0)
        return latency

    def sample(self, op: str, listed: int = 0) -> float:
        """The latency of one request (a LIST: of `listed` keys), counted nowhere."""
        gauss = self.rng.gauss
        if op != "list":
            p50, sigma = self.shapes[op]
            return p50 * math.exp(sigma * gauss(0.0, 1.0)) + self.rtt
        page = min(listed, LIST_PAGE) / LIST_PAGE
        (get, get_sigma), (full, list_sigma) = self.shapes["get"], self.shapes["list"]
        return self.rtt + get * math.exp(get_sigma * gauss(0.0, 1.0)) + page * (
            full * math.exp(list_sigma * gauss(0.0, 1.0)) - get)

    def list_pages(self, t: float, prefix: str, listed: int) -> float:
        """A LIST of `listed` keys, a page of 1,000 at a time."""
        if listed <= LIST_PAGE:
            return self.request(t, "LIST", prefix, "list", listed)
        pages = math.ceil(listed / LIST_PAGE)
        return sum(self.request(t, "LIST", prefix, "list", min(LIST_PAGE, listed - p * LIST_PAGE))
                   for p in range(pages))


# --------------------------------------------------------------------- the simulation

class Simulation:
    def __init__(self, sc: Scenario, latencies: dict | None = None):
        self.sc = sc
        self.rng = random.Random(sc.seed)
        self.heap: list = []
        self.order = itertools.count()
        self.now = 0.0
        n = sc.hosts
        self.hosts = [Host(i, self.rng.uniform(0, sc.poll), self.rng.uniform(0, sc.heartbeat), sc.gpus,
                           self.rng.randrange(1 << 30), i % sc.shards) for i in range(n)]
        by_phase = sorted(self.hosts, key=lambda h: h.phase)
        self.phases = [h.phase for h in by_phase]
        self.by_phase = by_phase
        self.shard_hosts = [[h for h in by_phase if h.shard == k] for k in range(sc.shards)]
        self.shard_phases = [[h.phase for h in hs] for hs in self.shard_hosts]
        self.queues: list[list[Entry]] = [[] for _ in range(sc.shards)]
        self.heads = [0] * sc.shards
        self.queued = [0] * sc.shards
        self.inbox = 0
        self.jobs: list[Job] = []
        self.pending_messages: list[Entry] = []   # notify: queued jobs no idle host received yet
        beat_work = 0.0
        if not sc.bucket:  # each beat: write own heartbeat, list hosts/ and 3 owed roots, read N heartbeats
            per_beat = (FOLDER_OPS["beat"] + 3 * n) * FOLDER_OP_SERVICE + 4 * n * FOLDER_ENTRY_SERVICE
            beat_work = n / sc.heartbeat * per_beat
        speedup = NAS_SPEEDUP if sc.design == FOLDER_NAS else 1.0
        self.fs = FileServer(beat_work / speedup, speedup, self.rng)
        self.s3 = S3(latencies or load_latencies(), sc.rtt_ms / 1000, self.rng)
        self.stats = Counter()
        self.pickups: list[float] = []
        self.takeovers: list[float] = []
        self.completion_times: list[float] = []
        self.first_start = INF
        self.collapsed_at: float | None = None

    # ---------------------------------------------------------------- plumbing

    def at(self, t: float, fn, *args) -> None:
        heapq.heappush(self.heap, (t, next(self.order), fn, args))

    def in_window(self, t: float) -> bool:
        return bool(self.sc.burst) or self.sc.warmup <= t < self.sc.window_end

    def on_loop(self, host: Host, t: float, latency: float) -> float:
        """Runs `latency` of work on the host's serial loop from t: when it ends."""
        start = max(t, host.loop_free)
        host.loop_free = start + latency
        return host.loop_free

    def run(self) -> "Simulation":
        sc = self.sc
        if sc.burst:
            for _ in range(sc.burst):
                self.arrive(0.0)
        elif sc.load is None:
            for _ in range(sc.backlog):
                job = self.new_job(0.0)
                self.enqueue(0.0, job, None)
        else:
            self.at(self.rng.expovariate(sc.arrival_rate), self.arrive_next)
        for h in self.hosts:
            self.at(h.phase, self.poll, h)
        for k in range(sc.kills if sc.hosts > 1 else 0):
            self.at(sc.window_end + k * sc.kill_spacing, self.kill)
        end = sc.seconds if not (sc.drain or sc.burst) else sc.seconds * 20
        second, overloaded = 0, 0
        while self.heap:
            t, _, fn, args = heapq.heappop(self.heap)
            if t > end:
                break
            if (sc.drain or sc.burst) and t > sc.seconds and self.done():
                break
            if int(t) > second:
                second = int(t)
                overloaded = overloaded + 1 if self.server_load(second) > COLLAPSE_LOAD else 0
                if overloaded >= COLLAPSE_SECONDS and not sc.drain:
                    self.collapsed_at = t
                    break
            self.now = t
            fn(t, *args)
        return self

    def server_load(self, second: int) -> float:
        """The server's load in the second before `second`: the file server's utilisation, or
        the busiest limited prefix's requests ÷ S3's limit."""
        if not self.sc.bucket:
            return self.fs.load(second)
        rates = self.s3.per_second.get(second - 1, {})
        return max((n / (PUT_LIMIT if cls == "put" else GET_LIMIT) for (_, cls), n in rates.items()), default=0.0)

    def done(self) -> bool:
        return all(j.completions for j in self.jobs)

    def new_job(self, t: float) -> Job:
        job = Job(len(self.jobs), t, self.rng.randrange(self.sc.shards),
                  self.sc.job_seconds * self.rng.uniform(0.8, 1.2))
        self.jobs.append(job)
        return job

    # ---------------------------------------------------------------- arrivals and intake

    def arrive_next(self, t: float) -> None:
        if t < self.sc.seconds or not self.sc.drain:
            self.arrive(t)
            self.at(t + self.rng.expovariate(self.sc.arrival_rate), self.arrive_next)

    def arrive(self, t: float, job: Job | None = None) -> None:
        job = job or self.new_job(t)
        self.inbox += 1
        if self.in_window(t):
            self.stats["arrived"] += 1
        if self.sc.notify:
            self.at(t + self.notify_delay(), self.notified, job)
            return
        host, seen = self.first_poller(t, job.shard)
        self.at(seen, self.intake, job, host, t)

    def notified(self, t: float, job: Job) -> None:
        """notify: the drop's event, received by a host with an idle GPU (else by any)."""
        host = self.idle_host() or self.rng.choice([h for h in self.hosts if h.alive])
        self.s3.count(t, "SQS", "sqs", 2)  # receive + delete
        self.intake(t, job, host, job.arrived)

    def notify_delay(self) -> float:
        return self.rng.expovariate(1.0 / self.sc.notify_seconds)

    def idle_host(self) -> Host | None:
        """A live host with a GPU no message waits for (SQS hands a message to one of the hosts
        long-polling): hosts tried at random, None when 32 tries find none."""
        for _ in range(32):
            h = self.rng.choice(self.hosts)
            if h.alive and h.gpus_free > len(h.messages):
                return h
        return None

    def intake_candidates(self, shard: int) -> tuple[list[Host], list[float]]:
        if self.sc.shards > 1:
            return self.shard_hosts[shard], self.shard_phases[shard]
        return self.by_phase, self.phases

    def first_poller(self, t: float, shard: int) -> tuple[Host, float]:
        """The first live host (of the drop's shard) whose turn comes after t, and when."""
        hosts, phases = self.intake_candidates(shard)
        p = self.sc.poll
        base = math.floor(t / p) * p
        i = bisect.bisect_left(phases, t - base)
        for k in range(len(hosts) * 2):
            j = (i + k) % len(hosts)
            h = hosts[j]
            if h.alive:
                wrap = (i + k) // len(hosts)
                return h, base + (wrap * p) + h.phase
        raise RuntimeError("no live host")

    def turns_between(self, shard: int, t0: float, t1: float) -> int:
        """Turns of live hosts (of the shard) strictly between t0 and t1."""
        if t1 <= t0:
            return 0
        hosts, phases = self.intake_candidates(shard)
        p, n = self.sc.poll, len(phases)
        full, rest = divmod(t1 - t0, p)
        a, b = t0 % p, (t0 % p) + rest
        count = int(full) * n + bisect.bisect_left(phases, b) - bisect.bisect_right(phases, a)
        if b > p:
            count += bisect.bisect_left(phases, b - p)
        return max(0, count)

    def intake(self, t: float, job: Job, host: Host, arrived: float) -> None:
        if not host.alive:  # its turn never came: the next live host's does
            self.inbox -= 1
            self.arrive(t, job)
            return
        if self.sc.bucket:
            self.bucket_intake(t, job, host)
        else:
            self.folder_intake(t, job, host)

    def folder_intake(self, t: float, job: Job, host: Host) -> None:
        """Seen at t: taken after stable_seconds of checks; every other host that lists the
        drop before it is gone checks it too (a stat each time)."""
        sc = self.sc
        seers = min(sc.hosts - 1, self.turns_between(job.shard, t, t + sc.stable))
        self.fs.ops_latency(t, int(seers * STATS_PER_SEER))
        self.at(t + sc.stable, self.folder_stage, job, host, t)

    def folder_stage(self, t: float, job: Job, host: Host, seen: float) -> None:
        """The rename out of inbox/: hosts that first saw the drop within the rename's time
        after the winner try theirs too, and lose."""
        if not host.alive:
            self.inbox -= 1
            self.arrive(t, job)
            return
        start = max(t, host.loop_free)
        rename = self.fs.ops_latency(start, 2, sample=True)
        lost = self.turns_between(job.shard, seen, seen + rename) if self.sc.hosts > 1 else 0
        self.fs.ops_latency(start, 2 * lost)
        self.record(t, "intake_lost", lost)
        gone = start + rename
        host.loop_free = gone
        done = self.on_loop(host, gone, self.fs.ops_latency(gone, FOLDER_OPS["accept"]) + HOST_CPU_PER_JOB / 2)
        self.at(gone, self.leave_inbox)
        self.at(done, self.accepted, job, host)

    def bucket_intake(self, t: float, job: Job, host: Host) -> None:
        s3, shard, intake = self.s3, self.shard_prefix(job.shard), self.shard_prefix(job.shard, "intake")
        steps = [("PUT", intake, "create"), ("GET", "inbox", "get"), ("GET", "inbox", "get"),
                 ("PUT", "outbox", "create"), ("COPY", "outbox", "put"), ("PUT", shard, "put"),
                 ("DELETE", "inbox", "delete"), ("DELETE", intake, "delete")]
        clock = max(t + s3.sample("list", self.inbox), host.loop_free)
        hint_at = gone = clock
        for kind, prefix, op in steps:
            clock += s3.request(clock, kind, prefix, op)
            if prefix == shard:
                hint_at = clock
            if prefix == "inbox" and kind == "DELETE":
                gone = clock
        host.loop_free = clock
        if not self.sc.notify:
            lost = self.turns_between(job.shard, t, gone)
            s3.count(t, "PUT", intake, lost)  # each: PUT If-None-Match answered 412
            self.record(t, "intake_lost", lost)
        self.at(gone, self.leave_inbox)
        self.at(hint_at, self.accepted, job, host)

    def leave_inbox(self, t: float) -> None:
        self.inbox -= 1

    def shard_prefix(self, shard: int, folder: str = "queue") -> str:
        return f"{folder}/{shard}" if self.sc.shards > 1 else folder

    def accepted(self, t: float, job: Job, host: Host) -> None:
        if not host.alive:  # died mid-accept: whoever takes it over redoes the accept
            host.orphans.append(job)
            return
        self.enqueue(t, job, host)

    # ---------------------------------------------------------------- the queue and claims

    def enqueue(self, t: float, job: Job, host: Host | None) -> None:
        q = self.queues[job.shard]
        entry = Entry(job, t, len(q))
        q.append(entry)
        self.queued[job.shard] += 1
        if self.sc.notify:
            if host is not None and host.alive and host.gpus_free > len(host.messages):
                host.messages.append(entry)
                self.try_claims(t, host)
            else:
                self.at(t + self.notify_delay(), self.deliver, entry)
            return
        if host is not None and host.view == job.shard:
            host.own.add(entry)
            host.scan_end = max(host.scan_end, entry.index + 1)
            self.try_claims(t, host)

    def deliver(self, t: float, entry: Entry) -> None:
        """notify: the queued job's event, received by a host with an idle GPU (or kept)."""
        host = self.idle_host()
        if host is None:
            self.pending_messages.append(entry)
            return
        self.s3.count(t, "SQS", "sqs", 2)
        host.messages.append(entry)
        self.try_claims(t, host)

    def poll(self, t: float, host: Host) -> None:
        if not host.alive:
            return
        sc = self.sc
        self.at(t + sc.poll, self.poll, host)
        if sc.notify:
            self.s3.list_pages(t, "hosts", sc.hosts)
            return
        view = host.shard
        if sc.shards > 1 and self.queued[view] == 0 and host.gpus_free > 0:
            view = self.rng.randrange(sc.shards)   # an idle host with an empty shard looks at another
        if sc.bucket:
            latency = (self.s3.list_pages(t, "inbox", self.inbox)
                       + self.s3.list_pages(t, self.shard_prefix(view), self.queued[view])
                       + self.s3.list_pages(t, "hosts", sc.hosts))
            if view != host.shard:
                latency += self.s3.list_pages(t, self.shard_prefix(host.shard), 0)
        else:
            latency = self.fs.ops_latency(t, 2, self.inbox + self.queued[view])
        self.record(t, "listed", self.inbox + self.queued[view] + (sc.hosts if sc.bucket else 0))
        q = self.queues[view]
        while self.heads[view] < len(q) and q[self.heads[view]].claim_time < INF:
            self.heads[view] += 1
        host.view, host.snap_t, host.cursor, host.scan_end = view, t, self.heads[view], len(q)
        host.tried.clear()
        host.own.clear()
        host.losses = 0
        self.at(self.on_loop(host, t, latency), self.try_claims, host)

    def next_entry(self, host: Host) -> Entry | None:
        """The entry the host tries next: its view of the queue's head (as listed at its last
        turn, plus what it queued itself since), the start rotated by its hash in the window."""
        if self.sc.notify:
            return host.messages.pop(0) if host.messages else None
        q, window = self.queues[host.view], []
        width = self.sc.claim_window if self.sc.bucket else 1
        j = host.cursor
        while j < host.scan_end and len(window) < width:
            e = q[j]
            skip = e.claim_time <= host.snap_t or e in host.tried
            if skip and j == host.cursor:
                host.cursor += 1
            elif not skip and (e.enq_time <= host.snap_t or e in host.own):
                window.append(e)
            j += 1
        if not window:
            return None
        entry = window[host.rot % len(window)]
        host.tried.add(entry)
        return entry

    def try_claims(self, t: float, host: Host) -> None:
        if host.claiming or not host.alive or host.gpus_free == 0 or host.losses >= MAX_LOSSES_PER_TURN:
            return
        entry = self.next_entry(host)
        if entry is None:
            if self.sc.notify and self.pending_messages:
                entry = self.pending_messages.pop(0)
                self.s3.count(t, "SQS", "sqs", 2)
            else:
                return
        host.claiming = True
        host.gpus_free -= 1
        if self.sc.bucket:
            self.bucket_claim(t, host, entry)
        else:
            start = max(t, host.loop_free)
            latency = self.fs.ops_latency(start, FOLDER_OPS["claim"], sample=True)
            host.loop_free = start + latency
            self.at(start + latency * 0.6, self.claim_applies, host, entry, start + latency, None)

    def bucket_claim(self, t: float, host: Host, entry: Entry) -> None:
        s3 = self.s3
        start = max(t, host.loop_free)
        sent = start + s3.request(start, "PUT", "active", "put")       # the intent
        get = s3.request(sent, "GET", "outbox", "get")
        read_at = sent + get / 2
        cas_sent = sent + get
        self.at(read_at, self.claim_reads, host, entry, cas_sent)

    def claim_reads(self, t: float, host: Host, entry: Entry, cas_sent: float) -> None:
        s3 = self.s3
        if entry.claim_time <= t:  # the status is past the hint: a stale hint
            done = cas_sent + s3.request(cas_sent, "DELETE", "active", "delete")
            host.loop_free = max(host.loop_free, done)
            self.at(done, self.claim_answered, host, entry, False)
            return
        cas = s3.request(cas_sent, "PUT", "outbox", "replace")
        arrives = cas_sent + cas / 2
        delay = 0.0
        if self.sc.design == BUCKET_SW:
            if arrives < entry.lock_until:   # the key is locked: answered at a retry of the lock
                delay = math.ceil((entry.lock_until - arrives) / SEAWEED_LOCK_RETRY) * SEAWEED_LOCK_RETRY
            else:
                entry.lock_until = arrives + cas / 2
        self.at(arrives + delay, self.claim_applies, host, entry, cas_sent + cas + delay, "cas")

    def claim_applies(self, t: float, host: Host, entry: Entry, answered: float, how) -> None:
        """The rename or the CAS reaches the server: the first one wins."""
        won = entry.claim_time == INF
        if won:
            entry.claim_time = t
            entry.job.owner = host
            self.queued[entry.job.shard] -= 1
        if self.sc.bucket:
            answered += self.s3.request(answered, "DELETE", self.shard_prefix(entry.job.shard) if won else "active",
                                        "delete")
        host.loop_free = max(host.loop_free, answered)
        self.at(answered, self.claim_answered, host, entry, won)

    def claim_answered(self, t: float, host: Host, entry: Entry, won: bool) -> None:
        host.claiming = False
        job = entry.job
        if not won:
            host.gpus_free += 1
            host.losses += 1
            self.record(t, "claims_lost", 1)
            self.try_claims(t, host)
            return
        host.losses = 0
        if not host.alive:  # claimed, then died: its taker requeues it
            host.orphans.append(job)
            return
        if self.sc.bucket:
            start = t
        else:
            start = self.on_loop(host, t, self.fs.ops_latency(t, FOLDER_OPS["start"]) + HOST_CPU_PER_JOB / 4)
        self.start_job(start, host, job)
        self.try_claims(t, host)

    def start_job(self, t: float, host: Host, job: Job) -> None:
        host.running.add(job)
        self.first_start = min(self.first_start, t)
        if job.started is None:
            job.started = t
            if self.in_window(job.arrived):
                self.pickups.append(t - job.arrived)
        if job.killed_at is not None:
            self.takeovers.append(t - job.killed_at)
            job.killed_at = None
        if self.in_window(t):
            self.stats["started"] += 1
        if self.sc.load is None and not self.sc.burst:
            self.arrive(t)
        job.runs += 1
        self.at(t + job.duration, self.job_ends, host, job, job.runs)

    def job_ends(self, t: float, host: Host, job: Job, attempt: int) -> None:
        if not host.alive or job.owner is not host or job.runs != attempt:
            return  # its host died: the attempt was lost with it
        sc = self.sc
        host.running.discard(job)
        host.gpus_free += 1
        if sc.bucket:
            s3 = self.s3
            clock = max(t, host.loop_free)
            for _ in range(min(3, max(1, math.ceil(job.duration / 20)))):
                s3.count(t, "PUT", "outbox")  # throttled progress CASes, spread over the run
            steps = [("PUT", "outbox", "replace")] + [("COPY", "outbox", "put")] * 3 + [
                ("PUT", "outbox", "replace"), ("DELETE", "work", "delete"), ("PUT", "outbox", "put")]
            for kind, prefix, op in steps:
                clock += s3.request(clock, kind, prefix, op)
            host.loop_free = clock
        else:
            writes = max(1, int(job.duration / PROGRESS_SECONDS))
            self.fs.ops_latency(t, writes * FOLDER_OPS["status_write"])
            clock = self.on_loop(host, t, self.fs.ops_latency(t, FOLDER_OPS["publish"]) + HOST_CPU_PER_JOB / 4)
        job.completions += 1
        self.completion_times.append(clock)
        if self.in_window(clock):
            self.stats["completed"] += 1
        self.at(clock, self.try_claims, host)

    def record(self, t: float, what: str, n: int) -> None:
        self.stats[what + "_all"] += n  # the whole run's, for a run that collapsed before its window
        if self.in_window(t):
            self.stats[what] += n

    # ---------------------------------------------------------------- a host dies

    def kill(self, t: float) -> None:
        busy = [h for h in self.hosts if h.alive and h.running]
        if not busy or sum(h.alive for h in self.hosts) < 2:
            if t < self.sc.seconds - self.sc.lease:
                self.at(t + 1.0, self.kill)  # nothing to take over yet: a second later
            return
        dead = self.rng.choice(busy)
        dead.alive = False
        for job in dead.running:
            job.killed_at = t
            job.lost_runs += 1
        for job in dead.orphans:
            job.killed_at = t
        if self.sc.notify:  # its received events come back after the visibility timeout
            for entry in dead.messages:
                self.at(t + self.sc.lease, self.deliver, entry)
            dead.messages = []
        sc = self.sc
        judge_every = sc.poll if sc.bucket else sc.heartbeat  # LIST hosts/ per turn; a folder host judges at its beat
        last_beat = t - ((t - dead.beat_phase) % sc.heartbeat)
        when = []
        for h in self.hosts:
            if not h.alive:
                continue
            phase = h.phase if sc.bucket else h.beat_phase
            seen = phase + math.ceil((last_beat - phase) / judge_every) * judge_every
            declared = phase + math.ceil((seen + sc.lease - phase) / judge_every) * judge_every
            when.append((declared, h.id))
        when.sort()
        first, taker = when[0]
        racers = sum(1 for d, _ in when[1:] if d - first < 0.05)
        self.stats["takeover_racers"] += racers
        self.at(first, self.take_over, self.hosts[taker], dead, racers)

    def take_over(self, t: float, taker: Host, dead: Host, racers: int) -> None:
        if not taker.alive:
            taker = next(h for h in self.hosts if h.alive)
        jobs = list(dead.running) + dead.orphans
        dead.running, dead.orphans = set(), []
        clock = max(t, taker.loop_free)
        if self.sc.bucket:
            clock += self.s3.list_pages(clock, "active", len(jobs))
        for job in jobs:
            if job.owner is dead:
                job.owner = None
            if self.sc.bucket:
                for kind, prefix, op in [("PUT", "active", "put"), ("GET", "outbox", "get"),
                                         ("PUT", self.shard_prefix(job.shard), "put"), ("PUT", "outbox", "replace"),
                                         ("DELETE", "active", "delete")]:
                    clock += self.s3.request(clock, kind, prefix, op)
                self.s3.count(clock, "PUT", "outbox", racers)  # the racers' CASes, answered 412
            else:
                clock += self.fs.ops_latency(clock, FOLDER_OPS["requeue"] + 3 * racers)
            self.at(clock, self.enqueue, job, taker)
        taker.loop_free = clock
        self.at(t + self.sc.poll, self.revive, dead)

    def revive(self, t: float, host: Host) -> None:
        """The dead host starts again (empty: its jobs were taken over)."""
        host.alive, host.gpus_free, host.loop_free, host.claiming = True, self.sc.gpus, t, False
        host.messages, host.losses = [], 0
        self.poll(t, host)

    # ---------------------------------------------------------------- results

    def result(self) -> dict:
        sc = self.sc
        window = max(1.0, min(sc.window_end, self.collapsed_at or INF) - sc.warmup)
        started = max(1, self.stats["started"])
        out = {"design": sc.design, "hosts": sc.hosts, "gpus": sc.gpus, "job_seconds": sc.job_seconds,
               "load": sc.load, "jobs": len(self.jobs),
               # saturated: what the GPUs could do with no protocol cost
               "offered": sc.arrival_rate or sc.hosts * sc.gpus / sc.job_seconds,
               "throughput": self.stats["completed"] / window,
               "claims_lost": self.stats["claims_lost"] / started,
               "intake_lost": self.stats["intake_lost"] / max(1, self.stats["arrived"] or started),
               "listed_per_s": (self.stats["listed"] / window if self.collapsed_at is None
                                else self.stats["listed_all"] / max(1.0, self.now)),
               "takeovers": sorted(self.takeovers),
               "completions": [j.completions for j in self.jobs], "collapsed_at": self.collapsed_at,
               "extra_runs": sum(j.runs - 1 - j.lost_runs for j in self.jobs)}
        p = sorted(self.pickups)
        out["pickup_p50"] = p[len(p) // 2] if p else None
        out["pickup_p99"] = p[min(len(p) - 1, int(len(p) * 0.99))] if p else None
        if sc.burst:
            last = max(self.completion_times) if self.completion_times else INF
            out["throughput"] = sc.burst / (last - self.first_start)
        if sc.bucket:
            out.update(self.s3_result(window, started))
        else:
            seconds = [self.fs.load(s + 1) for s in self.measured_seconds()]
            out["server_load"] = statistics.fmean(seconds) if seconds else 0.0
            out["busiest"] = "the file server"
            beat_entries = sc.hosts / sc.heartbeat * 4 * sc.hosts
            out["listed_per_s"] += beat_entries
            out["requests_per_job"] = None
        return out

    def measured_seconds(self) -> range:
        """The whole seconds of the measured window (the last few before a collapse)."""
        last = int(min(self.sc.window_end, self.collapsed_at or INF))
        return range(min(int(self.sc.warmup), max(0, last - COLLAPSE_SECONDS)), last)

    def s3_result(self, window: float, started: int) -> dict:
        sc = self.sc
        kinds = Counter()
        for (kind, _), n in self.s3.counts.items():
            kinds[kind] += n
        scale = 3600 / (self.now or 1)
        kinds["PUT"] += sc.hosts / sc.heartbeat * (self.now or 0)    # heartbeats
        if sc.notify:
            kinds["SQS"] += sc.hosts / SQS_LONG_POLL * (self.now or 0)  # idle long polls
        per_hour = {k: v * scale for k, v in kinds.items()}
        jobs_per_hour = max(1e-9, len([j for j in self.jobs if j.completions]) * scale)
        rates = Counter({("hosts", "put"): sc.hosts / sc.heartbeat})
        seconds = self.measured_seconds()
        for s in seconds:
            for key, n in self.s3.per_second.get(s, {}).items():
                rates[key] += n / len(seconds)
        (prefix, cls), rate = max(rates.items(), key=lambda kv: kv[1] / (PUT_LIMIT if kv[0][1] == "put" else GET_LIMIT))
        busiest = rate / (PUT_LIMIT if cls == "put" else GET_LIMIT)
        cost = sum(per_hour[k] * PRICE[k] for k in per_hour)
        s3_requests = sum(v for k, v in per_hour.items() if k != "SQS")
        return {"server_load": busiest, "busiest": f"{prefix}/ {cls.upper()}s", "throttled": self.s3.throttled,
                "requests_per_hour": per_hour, "cost_per_hour": cost,
                "requests_per_job": s3_requests / jobs_per_hour, "cost_per_1000_jobs": cost / jobs_per_hour * 1000}


def simulate(sc: Scenario) -> dict:
    started = time.process_time()
    out = Simulation(sc).run().result()
    out["cpu_seconds"] = time.process_time() - started
    return out


# --------------------------------------------------------------------- the tables

FULL_HOSTS = (3, 10, 30, 100, 300, 1000)
QUICK_HOSTS = (3, 10, 30)


def scenarios(hosts: tuple, quick: bool, rtt_ms: float) -> list[Scenario]:
    """60 s jobs on 8-GPU hosts at 80 %; 0.2 s jobs on 1-GPU hosts at 80 % and saturated."""
    out = []
    for n in hosts:
        for design in DESIGNS:
            secs = 160.0 if quick else 230.0
            out.append(Scenario(design, n, gpus=8, job_seconds=60.0, load=0.8, seconds=secs, warmup=50.0,
                                rtt_ms=rtt_ms, seed=n))
            rate = 0.8 * n / 0.2
            short = min(30.0, max(6.0, (4000 if quick else 8000) / rate)) + 4.0
            out.append(Scenario(design, n, gpus=1, job_seconds=0.2, load=0.8, seconds=short, warmup=4.0,
                                kills=0, rtt_ms=rtt_ms, seed=n))
            out.append(Scenario(design, n, gpus=1, job_seconds=0.2, load=None, backlog=max(100, 2 * n),
                                seconds=short, warmup=4.0, kills=0, rtt_ms=rtt_ms, seed=n))
    return out


def calibration() -> list[tuple[str, Scenario, str]]:
    """(what, scenario, the measured figure) for BENCHMARKS.md's 1- and 3-host folder runs."""
    tests = dict(poll=0.5, heartbeat=0.5, lease=4.0, stable=1.0)
    out = []
    for n, measured in ((1, "4.0 jobs/s (3.3 with the pickup)"), (3, "10.5 jobs/s (7.6 with the pickup)")):
        out.append((f"throughput, 0.2 s jobs, {n} host(s) via sshfs, 1 worker each", Scenario(
            FOLDER, n, gpus=1, job_seconds=0.2, burst=60 if n == 3 else 30, seconds=1.0, warmup=0.0, kills=0,
            **tests), measured))
    out.append(("claims lost per job, 150 instant jobs, 3 hosts", Scenario(
        FOLDER, 3, gpus=1, job_seconds=0.001, burst=150, seconds=1.0, warmup=0.0, kills=0, **tests),
        "1.6-1.8 (80-90 lost per host)"))
    for poll, stable, measured in ((2.0, 1.0, "2.07 / 3.06 s"), (0.5, 1.0, "1.30 / 1.64 s"), (2.0, 3.0, "4.26 / 5.09 s")):
        out.append((f"pickup p50 / p99, rescan {poll:g} s, stable {stable:g} s, 1 host", Scenario(
            FOLDER, 1, gpus=1, job_seconds=0.2, load=0.02, seconds=1000.0, warmup=5.0, kills=0, poll=poll,
            heartbeat=0.5, lease=4.0, stable=stable), measured))
    out.append(("takeover, lease 4 / heartbeat 0.5 / rescan 0.5, 3 hosts", Scenario(
        FOLDER, 3, gpus=1, job_seconds=30.0, load=0.2, seconds=300.0, warmup=10.0, kills=12, **tests),
        "3.60-4.42 s"))
    out.append(("takeover, defaults (lease 30 / heartbeat 3 / rescan 2), 3 hosts", Scenario(
        FOLDER, 3, gpus=1, job_seconds=60.0, load=0.2, seconds=900.0, warmup=10.0, kills=8),
        "29.0-31.2 s"))
    return out


def fmt(v, spec: str = ".2f", none: str = "–") -> str:
    return none if v is None else format(v, spec)


def print_calibration(results: list[tuple[str, dict, str]]) -> None:
    print("\nCalibration: the folder spool simulated beside BENCHMARKS.md's measured sshfs figures")
    print(f"{'figure':64} {'simulated':>18}   measured")
    for what, r, measured in results:
        if what.startswith("throughput"):
            sim = f"{r['throughput']:.1f} jobs/s"
        elif what.startswith("claims"):
            sim = f"{r['claims_lost']:.2f}"
        elif what.startswith("pickup"):
            sim = f"{r['pickup_p50']:.2f} / {r['pickup_p99']:.2f} s"
        else:
            t = r["takeovers"]
            sim = f"{t[0]:.2f}-{t[-1]:.2f} s ({len(t)})" if t else "–"
        print(f"{what:64} {sim:>18}   {measured}")


def print_tables(results: list[dict]) -> None:
    groups = defaultdict(list)
    for r in results:
        groups[(r["job_seconds"], r["gpus"], r["load"])].append(r)
    for (secs, gpus, load), rows in groups.items():
        title = f"{secs:g} s jobs, {gpus} GPU(s) per host, " + ("saturated queue" if load is None else f"{load:.0%} busy")
        print(f"\n{title}")
        print(f"{'N':>5} {'design':10} {'jobs/s':>8} {'÷offer':>6} {'pickup p50':>10} {'p99':>7} {'lost/job':>8} "
              f"{'intake':>7} {'listed/s':>9} {'load':>6} {'req/job':>7} {'$/h':>8} {'$/1k jobs':>9} "
              f"{'takeover':>13} {'cpu':>5}")
        for r in sorted(rows, key=lambda r: (r["hosts"], DESIGNS.index(r["design"]))):
            if r["collapsed_at"] is not None:
                print(f"{r['hosts']:5d} {r['design']:10}  ✗ collapsed {r['collapsed_at']:.0f} s in: {r['busiest']} at "
                      f"{r['server_load']:.0f}× capacity; listed {r['listed_per_s']:.3g} entries/s")
                continue
            t = r["takeovers"]
            offered = r["offered"] or None
            ratio = r["throughput"] / offered if offered else None
            print(f"{r['hosts']:5d} {r['design']:10} {r['throughput']:8.1f} {fmt(ratio):>6} "
                  f"{fmt(r['pickup_p50'], '.3f'):>10} {fmt(r['pickup_p99'], '.2f'):>7} {r['claims_lost']:8.2f} "
                  f"{r['intake_lost']:7.2f} {r['listed_per_s']:9.3g} {r['server_load']:5.2f}{'!' if r['server_load'] >= 1 else ' '}"
                  f"{fmt(r['requests_per_job'], '.1f'):>7} {fmt(r.get('cost_per_hour'), '.3f'):>8} "
                  f"{fmt(r.get('cost_per_1000_jobs'), '.3f'):>9} "
                  f"{(f'{t[len(t) // 2]:.1f}/{t[-1]:.1f} s' if t else '–'):>13} {r['cpu_seconds']:5.1f}")
    print("\nload: folder = the file server's utilisation (! ≥ 1: past its capacity; response times are capped "
          "at 100× service); bucket = the busiest fixed-name prefix's requests ÷ S3's per-prefix limit (! > 1: 503s).")
    print(f"✗ collapsed: the server stayed over {COLLAPSE_LOAD:g}× its capacity for {COLLAPSE_SECONDS} s, and the run "
          "stopped: the design cannot run there.")
    print("lost/job: claim attempts lost per job started (stale entries and 412s); intake: intake races lost "
          "per drop (stage renames / marker creates answered 412).")


def print_requests(results: list[dict]) -> None:
    rows = [r for r in results if r["design"] not in (FOLDER, FOLDER_NAS) and r["load"] == 0.8
            and r["collapsed_at"] is None]
    if not rows:
        return
    print("\nS3 requests per hour by kind, and their cost at AWS list prices (80 % busy)")
    kinds = ("PUT", "COPY", "LIST", "GET", "DELETE", "SQS")
    print(f"{'jobs':>6} {'N':>5} {'design':10} " + " ".join(f"{k + '/h':>9}" for k in kinds) + f" {'$/h':>8} {'$/1k jobs':>9}")
    for r in sorted(rows, key=lambda r: (r["job_seconds"], r["hosts"], DESIGNS.index(r["design"]))):
        h = r["requests_per_hour"]
        print(f"{r['job_seconds']:5g}s {r['hosts']:5d} {r['design']:10} " + " ".join(f"{h.get(k, 0):9.3g}" for k in kinds)
              + f" {r['cost_per_hour']:8.3f} {r['cost_per_1000_jobs']:9.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 3, 10, 30 and shorter runs (a test-sized run)")
    parser.add_argument("--hosts", type=int, nargs="*", help="the N to simulate (default 3 10 30 100 300 1000)")
    parser.add_argument("--rtt-ms", type=float, default=0.0,
                        help="a network round trip added to every S3 request (loopback: 0; a cloud region: ~10-20)")
    parser.add_argument("--notify-seconds", type=float, default=0.5,
                        help="notify: mean delay from a write to its event's delivery (an assumption)")
    parser.add_argument("--no-calibration", action="store_true")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write every raw figure here")
    args = parser.parse_args()
    hosts = tuple(args.hosts or (QUICK_HOSTS if args.quick else FULL_HOSTS))
    runs = [replace(sc, notify_seconds=args.notify_seconds) for sc in scenarios(hosts, args.quick, args.rtt_ms)]
    calib = [] if args.no_calibration or args.quick else calibration()
    started = time.monotonic()
    work = sorted(runs + [c[1] for c in calib], key=lambda s: -s.hosts * (s.seconds - s.warmup) / s.job_seconds ** 0.3)
    with Pool(args.processes) as pool:
        done = dict(zip(work, pool.map(simulate, work, chunksize=1)))
    results = [done[s] for s in runs]
    latencies = load_latencies()
    print(f"vidspool spool simulation: {len(work)} runs in {time.monotonic() - started:.0f} s "
          f"({args.processes} processes); S3 latencies (p50 ms) "
          + ", ".join(f"{k} {v[0] * 1000:.2f}" for k, v in latencies.items())
          + (f", + {args.rtt_ms:g} ms round trip" if args.rtt_ms else " (loopback)"))
    print_tables(results)
    print_requests(results)
    if calib:
        print_calibration([(what, done[sc], measured) for what, sc, measured in calib])
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "completions"} for r in results]
                                        + [{"calibration": w, **{k: v for k, v in done[s].items() if k != "completions"},
                                            "measured": m} for w, s, m in calib], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
