#!/usr/bin/env python
"""Per-request latency of the S3 requests the bucket spool's claim protocol makes, against a
real SeaweedFS on loopback: the figures bench/bucket_sim.py is calibrated with.

Each request is daemon/bucket/store.py's own operation, timed one at a time (after a
warm-up), --count of each:

  put       PUT (unconditional)                 create   PUT If-None-Match: *
  replace   PUT If-Match (a compare-and-swap)   get      GET of a 300-byte status
  head      HEAD                                list     LIST of 1,000 keys (one page)
  delete    DELETE of one key

and a race: --racers threads released at once, each a PUT If-Match from the same ETag of one
key (what hosts racing for one queue entry do); the winner's and each loser's answer time,
over --races rounds. SeaweedFS serialises conditional writes to one key with a lock it
retries every second, so its losers are answered about 1 s apart.

  .venv/bin/python bench/bucket_latency.py [--count 200] [--endpoint http://127.0.0.1:8333]

Prints a table and writes bench/out/bucket_latency.json ({request: {p50_ms, p99_ms, mean_ms}},
"race": {...}), which bench/bucket_sim.py reads when present. Loopback has no network: on a
LAN or in a cloud region add the round trip to every figure (bucket_sim.py --rtt-ms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bucket_requests import STATUS, Endpoint  # noqa: E402
from daemon.bucket.store import BucketStore  # noqa: E402
from tests.s3servers import S3Bucket, S3Server, SeaweedServer  # noqa: E402

OUT = REPO / "bench" / "out" / "bucket_latency.json"
LISTED_KEYS = 1000


def timings(request, count: int, warmup: int = 20) -> dict:
    """p50, p99 and mean (ms) of `count` calls of request(i), after `warmup` calls."""
    for i in range(warmup):
        request(-1 - i)
    walls = []
    for i in range(count):
        started = time.perf_counter()
        request(i)
        walls.append((time.perf_counter() - started) * 1000)
    walls.sort()
    return {"p50_ms": statistics.median(walls), "p99_ms": walls[min(count - 1, int(count * 0.99))],
            "mean_ms": statistics.fmean(walls), "count": count}


def requests_of(store: BucketStore, count: int) -> dict:
    """name -> request(i): each one S3 request through the store."""
    store.put("lat/status", STATUS)
    for i in range(LISTED_KEYS):
        store.put(f"lat/list/{i:04d}", b"")
    for i in range(-30, count):
        store.put(f"lat/del/{i}", b"")
    etag = {"now": store.head("lat/status").etag}

    def replace(i):
        etag["now"] = store.replace("lat/status", STATUS, etag["now"])

    return {
        "put": lambda i: store.put("lat/put", STATUS),
        "create": lambda i: store.create(f"lat/create/{i}", STATUS),
        "replace": replace,
        "get": lambda i: store.get("lat/status"),
        "head": lambda i: store.head("lat/status"),
        "list": lambda i: sum(1 for _ in store.list("lat/list")),
        "delete": lambda i: store.delete([f"lat/del/{i}"]),
    }


def race(store: BucketStore, racers: int, rounds: int) -> dict:
    """Answer times (ms) of `racers` compare-and-swaps from one ETag released at once: the
    winner's, and the losers' sorted, per round."""
    winners, losers = [], []
    for r in range(rounds):
        base = store.put(f"lat/race/{r}", b"queued")
        gate, answers = threading.Barrier(racers), [None] * racers

        def run(i: int) -> None:
            gate.wait()
            started = time.perf_counter()
            won = store.replace(f"lat/race/{r}", f"running on host{i}".encode(), base) is not None
            answers[i] = (won, (time.perf_counter() - started) * 1000)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        winners += [ms for won, ms in answers if won]
        losers.append(sorted(ms for won, ms in answers if not won))
    return {"racers": racers, "rounds": rounds, "winner_ms": winners, "losers_ms": losers,
            "loser_gap_ms": statistics.median(b - a for row in losers for a, b in zip(row, row[1:]))
            if racers > 2 else None}


@contextmanager
def s3_server(endpoint: str | None) -> Iterator[S3Server]:
    """The server at `endpoint`, else a SeaweedFS started here (and stopped after)."""
    if endpoint:
        yield Endpoint(endpoint)
        return
    server = SeaweedServer(Path(tempfile.mkdtemp(prefix="vidspool-weed-"))).start()
    try:
        yield server
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--racers", type=int, default=4)
    parser.add_argument("--races", type=int, default=3)
    parser.add_argument("--endpoint", help="an S3 server to use (default: a SeaweedFS started here)")
    args = parser.parse_args()
    with s3_server(args.endpoint) as server:
        bucket = S3Bucket(server, server.new_bucket(), prefix="lat-spool")
        store = bucket.store(request_timeout_seconds=60)
        figures = {name: timings(request, args.count) for name, request in requests_of(store, args.count).items()}
        figures["race"] = race(store, args.racers, args.races)
        store.close()
    print(f"{'request':10} {'p50':>9} {'p99':>9} {'mean':>9}")
    for name, f in figures.items():
        if name != "race":
            print(f"{name:10} {f['p50_ms']:6.2f} ms {f['p99_ms']:6.2f} ms {f['mean_ms']:6.2f} ms")
    r = figures["race"]
    print(f"race of {r['racers']} CAS from one ETag, {r['rounds']} rounds: winner "
          + ", ".join(f"{ms:.0f}" for ms in r["winner_ms"]) + " ms; losers "
          + "; ".join(", ".join(f"{ms:.0f}" for ms in row) for row in r["losers_ms"]) + " ms")
    print(f"(SeaweedFS {server.endpoint} on loopback, {args.count} requests each, one at a time; "
          f"list = {LISTED_KEYS} keys)")
    figures["server"] = "seaweedfs" if isinstance(server, SeaweedServer) else args.endpoint
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=1))
    print(f"written: {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
