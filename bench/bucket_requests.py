#!/usr/bin/env python
"""Per-request latency and CPU of the bucket spool's S3 requests (issue 28's calibration and
the README's library table): each primitive of daemon/bucket/store.py against a real
SeaweedFS on loopback (tests/s3servers.py starts one, or --endpoint names one), done with
obstore (the store itself) and the same request with boto3, one request at a time.

  latency  wall time of one request, median and p99 over --count requests after a warm-up;
  CPU      this process's CPU time (all its threads: obstore's Tokio runtime, botocore's
           pool) per request; the server's CPU is not counted (another process).

Requests: create (PUT If-None-Match: *), replace (PUT If-Match), put, get (a 300-byte
status), head, get_range (4 KiB), list (100 keys, one page), delete_if (DELETE If-Match),
delete (a bulk DELETE of 10 keys, per request), copy (server-side). delete_if and a copy
with a condition are botocore's in the store; both columns show what each library costs.

  .venv/bin/python bench/bucket_requests.py [--count 300] [--endpoint http://127.0.0.1:8333]

Other sessions on this 2-core machine skew latency; CPU per request is the steadier figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from daemon.bucket.store import BucketStore  # noqa: E402
from tests.s3servers import CREDENTIALS, S3Bucket, S3Server, SeaweedServer  # noqa: E402

STATUS = b'{"id": "j1", "state": "running", "progress": 0.5, "lease": {"host": "gpu-7", "epoch": 3, "seq": 41}}'.ljust(300)
RANGE = 4096


class Endpoint(S3Server):
    name = "given"

    def __init__(self, url: str):
        self.url = url
        self.port = int(url.rsplit(":", 1)[1].strip("/"))

    @property
    def endpoint(self) -> str:
        return self.url


def measure(request, count: int, warmup: int = 20) -> tuple[float, float, float]:
    """(median ms, p99 ms, CPU ms per request) of `count` calls of request(i)."""
    for i in range(warmup):
        request(-1 - i)
    walls = []
    cpu0 = time.process_time()
    for i in range(count):
        t = time.perf_counter()
        request(i)
        walls.append((time.perf_counter() - t) * 1000)
    cpu = (time.process_time() - cpu0) * 1000 / count
    walls.sort()
    return statistics.median(walls), walls[min(len(walls) - 1, int(len(walls) * 0.99))], cpu


def obstore_requests(store: BucketStore, count: int) -> dict:
    """name -> request(i), each one S3 request through the store."""
    etags = {}
    store.put("bench/range", b"x" * (1024 * 1024))
    for i in range(100):
        store.put(f"bench/list/{i:03d}", b"x")
    store.put("bench/status", STATUS)

    def replace(i):
        etags["s"] = store.replace("bench/status", STATUS, etags.get("s") or store.head("bench/status").etag)

    def delete_if(i):
        store.delete_if(f"bench/del/{i}", '"0"')  # a refused condition: one DELETE, the key stays absent

    def delete(i):
        store.delete([f"bench/bulk/{i}/{n}" for n in range(10)])

    return {
        "create": lambda i: store.create(f"bench/create/{i}", STATUS),
        "replace": replace,
        "put": lambda i: store.put("bench/put", STATUS),
        "get": lambda i: store.get("bench/status"),
        "head": lambda i: store.head("bench/status"),
        "get_range": lambda i: store.get_range("bench/range", 0, RANGE),
        "list": lambda i: list(store.list("bench/list")),
        "delete_if": delete_if,
        "delete": delete,
        "copy": lambda i: store.copy("bench/status", "bench/copied"),
    }


def boto3_requests(bucket: S3Bucket) -> dict:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=bucket.server.endpoint, region_name="us-east-1",
                          aws_access_key_id=CREDENTIALS.access_key_id,
                          aws_secret_access_key=CREDENTIALS.secret_access_key,
                          config=Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"},
                                        request_checksum_calculation="when_required",
                                        response_checksum_validation="when_required"))
    b, p = bucket.name, bucket.prefix
    etags = {}

    def replace(i):
        etag = etags.get("s") or client.head_object(Bucket=b, Key=f"{p}/bench/status")["ETag"]
        etags["s"] = client.put_object(Bucket=b, Key=f"{p}/bench/status", Body=STATUS, IfMatch=etag)["ETag"]

    def delete_if(i):
        try:
            client.delete_object(Bucket=b, Key=f"{p}/bench/del/{i}", IfMatch='"0"')
        except client.exceptions.ClientError:
            pass

    return {
        "create": lambda i: client.put_object(Bucket=b, Key=f"{p}/bench/create-boto/{i}", Body=STATUS, IfNoneMatch="*"),
        "replace": replace,
        "put": lambda i: client.put_object(Bucket=b, Key=f"{p}/bench/put", Body=STATUS),
        "get": lambda i: client.get_object(Bucket=b, Key=f"{p}/bench/status")["Body"].read(),
        "head": lambda i: client.head_object(Bucket=b, Key=f"{p}/bench/status"),
        "get_range": lambda i: client.get_object(Bucket=b, Key=f"{p}/bench/range", Range=f"bytes=0-{RANGE - 1}")["Body"].read(),
        "list": lambda i: client.list_objects_v2(Bucket=b, Prefix=f"{p}/bench/list/")["Contents"],
        "delete_if": delete_if,
        "delete": lambda i: client.delete_objects(Bucket=b, Delete={"Objects": [
            {"Key": f"{p}/bench/bulk/{i}/{n}"} for n in range(10)]}),
        "copy": lambda i: client.copy_object(Bucket=b, Key=f"{p}/bench/copied-boto",
                                             CopySource={"Bucket": b, "Key": f"{p}/bench/status"}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--endpoint", help="an S3 server to use (default: a SeaweedFS started here)")
    args = parser.parse_args()
    server = Endpoint(args.endpoint) if args.endpoint else SeaweedServer(Path(tempfile.mkdtemp(prefix="vidspool-weed-"))).start()
    try:
        bucket = S3Bucket(server, server.new_bucket(), prefix="bench-spool")
        store = bucket.store()
        ours, theirs = obstore_requests(store, args.count), boto3_requests(bucket)
        print(f"{'request':10} {'obstore p50':>12} {'p99':>8} {'CPU':>8}   {'boto3 p50':>10} {'p99':>8} {'CPU':>8}   CPU ratio")
        for name in ours:
            a, b = measure(ours[name], args.count), measure(theirs[name], args.count)
            print(f"{name:10} {a[0]:9.2f} ms {a[1]:5.2f} ms {a[2]:5.3f} ms   {b[0]:7.2f} ms {b[1]:5.2f} ms {b[2]:5.3f} ms"
                  f"   {b[2] / a[2]:5.1f}x")
        print(f"(SeaweedFS {server.endpoint}, {args.count} requests each, one at a time; ms per request)")
        store.close()
    finally:
        if isinstance(server, SeaweedServer):
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
