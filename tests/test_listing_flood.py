"""Listings at 20,000 ended jobs under a flood (issue 25 item 6): every listing route (Story's
/api/v1/jobs, Visualizr's assets, metrics and health, the native /api/v1/jobs with filters,
/api/v1/stats, /metrics) asked by many clients at once while the daemon keeps its heartbeat,
claims and finishes a job dropped meanwhile, and every list stays right: counts, a job ended
during the flood, one another host wrote, results deleted, folders past keep_days swept.

The 20,000 status.json files are written directly (as a long-lived spool has them) before
the daemon starts. Per-request latency and the daemon's RSS are printed (`pytest -s`).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from tests.support import Daemon, drop_json, wait_for, wait_status

JOBS = 20_000
HEARTBEAT_SECONDS = 0.5
LEASE_SECONDS = 30.0
# The heartbeat may go this long without a new counter: one beat late at most (the lease is
# 30 s; when the lists walked the outbox on the loop, a flood stopped it for over 30 s, and
# even from the index but on the loop it stopped for about 2 s here).
STALE_BOUND = 1.5
CLIENTS = 24
FLOOD_SECONDS = 10.0
STORY_LIST_MAX = 1000  # daemon/http/compat/story.py: the newest jobs its /jobs lists
KEEP_DAYS = 7
NOW = datetime.now(timezone.utc)


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def planted(i: int) -> dict:
    """Job i's status: Story's (narrated-video), Visualizr's (text-to-video) or a native probe;
    mostly completed, some failed or canceled; a few finished past keep_days."""
    family = i % 10
    old = i % 100 in (97, 99)  # a visualizr and a native job in each hundred: past keep_days
    created = NOW - (timedelta(days=30) if old else timedelta(hours=30)) + timedelta(seconds=i)
    state = "failed" if i % 25 == 3 else "canceled" if i % 50 == 11 else "completed"
    if family < 4:
        job_id, kind, model, labels = f"{i:08x}-0000-4000-8000-{i:012x}", "narrated-video", None, {"compat": "story"}
        params = {"text": f"Story number {i}. It ends well."}
        files = [("video.mp4", "video/mp4"), ("captions.srt", "application/x-subrip")]
    elif family < 8:
        model = "wan-i2v" if i % 20 == 5 else "wan-t2v"
        job_id, kind, labels = f"video_req_{i:012x}", "text-to-video", {"compat": "visualizr"}
        params = {"prompt": f"a fox, take {i}", "width": 832, "height": 480, "num_frames": 81}
        files = [("video.mp4", "video/mp4"), ("thumb.jpg", "image/jpeg"), ("preview.gif", "image/gif")]
    else:
        job_id, kind, model, labels = f"native-{i:05d}", "probe", None, {"batch": f"b{i % 7}"}
        params = {"seconds": 0}
        files = [("probe.txt", "text/plain")]
    started, finished = created + timedelta(seconds=1), created + timedelta(seconds=3 + i % 5)
    doc = {"id": job_id, "kind": kind, "state": state, "progress": 100 if state == "completed" else 40,
           "stage": "done" if state == "completed" else "encoding", "message": state, "step": None, "total_steps": None,
           "eta_seconds": None, "attempt": 1, "max_attempts": 3, "host": "elsewhere", "device": "cpu", "model": model,
           "created_at": iso(created), "started_at": iso(started), "finished_at": iso(finished), "updated_at": iso(finished),
           "error": None, "result": None, "labels": labels,
           "job": {"id": job_id, "kind": kind, "params": params, "labels": labels, "priority": 0}, "drop": f"inbox/{job_id}.json"}
    if state == "completed":
        doc["result"] = {"files": [{"name": n, "size": 1000 + i, "sha256": "0" * 64, "media_type": t,
                                    "url": f"/api/v1/jobs/{job_id}/files/{n}"} for n, t in files],
                         "video": {"duration": 3.4, "fps": 16, "width": 832, "height": 480, "codec": "h264"}}
    elif state == "failed":
        doc["error"] = {"code": "internal", "message": f"planted failure {i}", "retryable": False}
    else:
        doc["error"] = {"code": "canceled", "message": "canceled by api", "retryable": False}
    return doc


def plant(outbox: Path, doc: dict, mtime: float | None = None) -> None:
    folder = os.path.join(outbox, doc["id"])
    os.mkdir(folder)
    path = os.path.join(folder, "status.json")
    with open(path, "w") as f:
        f.write(json.dumps(doc))
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class HeartbeatWatch:
    """Polls hosts/<host>.json and keeps the longest time between two counters."""

    def __init__(self, path: Path):
        self.path = path
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last, since = None, time.monotonic()
        while not self._stop.is_set():
            try:
                counter = json.loads(self.path.read_text())["counter"]
            except (OSError, ValueError, KeyError):
                counter = last
            now = time.monotonic()
            if counter != last:
                last, since = counter, now
            self.longest = max(self.longest, now - since)
            time.sleep(0.02)

    def __enter__(self) -> "HeartbeatWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    base = tmp_path_factory.mktemp("listing-flood")
    # On tmpfs where there is one: 20,000 folders take a second there, and up to a minute on a
    # busy disk (the lists read the status files from the page cache either way).
    shm = Path("/dev/shm")
    spool_parent = Path(tempfile.mkdtemp(prefix="vidspool-flood-", dir=shm)) if os.access(shm, os.W_OK) else base
    try:
        yield from run_farm(spool_parent / "spool", base)
    finally:
        if spool_parent != base:
            shutil.rmtree(spool_parent, ignore_errors=True)


def run_farm(root: Path, logs: Path):
    """The 20,000 jobs planted, then a daemon on them: (daemon, the jobs kept past keep_days)."""
    (root / "outbox").mkdir(parents=True)
    docs = [planted(i) for i in range(JOBS)]
    started = time.monotonic()
    long_ago = time.time() - 30 * 86400
    for i, doc in enumerate(docs):
        plant(root / "outbox", doc, mtime=long_ago if i % 100 in (97, 99) else None)
    planting = time.monotonic() - started
    daemon = Daemon(root, log_dir=logs, **{
        "VIDSPOOL_SPOOL__HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
        "VIDSPOOL_SPOOL__LEASE_SECONDS": str(LEASE_SECONDS),
        "VIDSPOOL_OUTBOX__KEEP_DAYS": str(KEEP_DAYS),
        "VIDSPOOL_COMPAT": json.dumps({"story": {"listen": "127.0.0.1:0"}, "visualizr": {"listen": "127.0.0.1:0"}}),
    })
    started = time.monotonic()
    daemon.start()
    try:
        print(f"\nplanted {JOBS} status files in {planting:.1f} s; daemon ready in {time.monotonic() - started:.1f} s,"
              f" RSS {rss_mb(daemon.proc.pid):.0f} MB")
        yield daemon, [d for i, d in enumerate(docs) if i % 100 not in (97, 99)]
    finally:
        daemon.stop()


def routes(daemon: Daemon) -> dict[str, str]:
    story, visualizr, api = daemon.heartbeat["compat_urls"]["story"], daemon.heartbeat["compat_urls"]["visualizr"], daemon.api
    return {
        "story jobs": f"{story}/api/v1/jobs",
        "visualizr assets": f"{visualizr}/api/v1/assets/videos?limit=100",
        "visualizr assets by model": f"{visualizr}/api/v1/assets/videos?model=wan-i2v&offset=50&limit=100",
        "visualizr metrics": f"{visualizr}/api/v1/metrics",
        "visualizr health": f"{visualizr}/api/v1/health",
        "native failed": f"{api}/api/v1/jobs?state=failed&limit=1000",
        "native label": f"{api}/api/v1/jobs?label=batch=b3&limit=1000",
        "native kind page": f"{api}/api/v1/jobs?kind=text-to-video&limit=1000&cursor=video_req_000000001000",
        "native stats": f"{api}/api/v1/stats",
        "native /metrics": f"{api}/metrics",
    }


def flood(urls: dict[str, str], seconds: float) -> dict[str, list[tuple[int, float]]]:
    """CLIENTS threads asking the routes round-robin for `seconds`: (status, seconds) per route."""
    names = list(urls)
    seen: dict[str, list[tuple[int, float]]] = {n: [] for n in names}
    deadline = time.monotonic() + seconds

    def client(k: int) -> None:
        session = requests.Session()
        i = k
        while time.monotonic() < deadline:
            name = names[i % len(names)]
            t = time.monotonic()
            r = session.get(urls[name], timeout=60)
            seen[name].append((r.status_code, time.monotonic() - t))
            i += 1

    with ThreadPoolExecutor(CLIENTS) as pool:
        for f in [pool.submit(client, k) for k in range(CLIENTS)]:
            f.result()
    return seen


def native_all(api: str, query: str) -> list[dict]:
    """Every page of a native listing."""
    jobs, cursor = [], ""
    while True:
        body = requests.get(f"{api}/api/v1/jobs?{query}&limit=1000&cursor={cursor}", timeout=30).json()
        jobs += body["jobs"]
        if body["next_cursor"] is None:
            return jobs
        cursor = body["next_cursor"]


def newest_story(docs: list[dict]) -> list[str]:
    story = sorted((d for d in docs if d["labels"].get("compat") == "story"), key=lambda d: (d["created_at"], d["id"]))
    return [d["id"] for d in story[-STORY_LIST_MAX:]]


def videos(docs: list[dict], model: str | None = None) -> list[str]:
    found = [d for d in docs if d["labels"].get("compat") == "visualizr" and d["state"] == "completed"
             and (model is None or d["model"] == model)]
    return [d["id"].replace("video_req_", "video_", 1) for d in sorted(found, key=lambda d: d["finished_at"], reverse=True)]


def test_a_listing_flood_at_20000_jobs_keeps_the_heartbeat_claims_and_lists_right(farm):
    daemon, kept = farm
    urls = routes(daemon)
    api = daemon.api
    # The sweep of the 400 folders past keep_days runs at start; the lists are exact after it.
    wait_for(lambda: f"vidspool_retention_removed_total {float(JOBS - len(kept))}" in requests.get(f"{api}/metrics", timeout=30).text,
             timeout=30, what="the retention sweep")
    assert len(native_all(api, "kind=probe")) == sum(1 for d in kept if d["kind"] == "probe")
    before = rss_mb(daemon.proc.pid)

    drop_at: list[float] = []

    def drop_later() -> None:  # a job dropped and an other host's job written while the flood runs
        time.sleep(2.0)
        drop_at.append(time.monotonic())
        drop_json(daemon.root / "inbox", "during-flood", {"kind": "probe", "params": {"seconds": 0.2},
                                                           "labels": {"flood": "probe"}})
        other = planted(JOBS + 8)  # a native probe, "finished" by another host sharing the spool
        other.update(id="from-other-host", labels={"flood": "other-host"}, created_at=iso(datetime.now(timezone.utc)))
        tmp = daemon.root / "outbox" / ".from-other-host.tmp"
        tmp.mkdir()
        (tmp / "status.json").write_text(json.dumps(other))
        os.rename(tmp, daemon.root / "outbox" / "from-other-host")

    with HeartbeatWatch(daemon.root / "hosts" / f"{daemon.host}.json") as beat:
        dropper = threading.Thread(target=drop_later)
        dropper.start()
        seen = flood(urls, FLOOD_SECONDS)
        dropper.join()
        done = wait_status(daemon.root, "during-flood", timeout=20, daemon=daemon)
    after = rss_mb(daemon.proc.pid)

    print(f"\nheartbeat: longest without a new counter {beat.longest:.2f} s (every {HEARTBEAT_SECONDS} s, lease {LEASE_SECONDS} s)")
    print(f"daemon RSS: {before:.0f} MB before the flood, {after:.0f} MB after ({after - before:+.0f} MB)")
    for name, answers in seen.items():
        times = sorted(t for _, t in answers)
        print(f"  {name:28s} {len(times):4d} requests  median {statistics.median(times) * 1000:6.0f} ms"
              f"  p95 {times[int(len(times) * 0.95)] * 1000:6.0f} ms  max {times[-1] * 1000:6.0f} ms")
        assert {s for s, _ in answers} == {200}, (name, answers[:5])

    assert beat.longest < STALE_BOUND, f"heartbeat stale for {beat.longest:.1f} s under the flood\n{daemon.log()}"
    assert done["state"] == "completed", done
    waited = datetime.fromisoformat(done["started_at"].replace("Z", "+00:00")) - \
        datetime.fromisoformat(done["created_at"].replace("Z", "+00:00"))
    assert waited.total_seconds() < 3.0, f"claimed {waited.total_seconds():.1f} s after it was queued"
    assert after - before < 150, f"RSS grew {after - before:.0f} MB under the flood"

    # The lists are right: the jobs ended during the flood (here and on another host) are in them.
    wait_for(lambda: {j["id"] for j in native_all(api, "label=flood=other-host")} == {"from-other-host"},
             timeout=10, what="another host's job listed")
    listed = native_all(api, "label=flood=probe")
    assert [(j["id"], j["state"]) for j in listed] == [("during-flood", "completed")]
    assert len(native_all(api, "state=failed")) == sum(1 for d in kept if d["state"] == "failed")
    assert len(native_all(api, "kind=narrated-video")) == sum(1 for d in kept if d["kind"] == "narrated-video")
    assert {j["id"] for j in native_all(api, "label=batch=b3")} == {d["id"] for d in kept if d["labels"].get("batch") == "b3"}

    story = requests.get(urls["story jobs"], timeout=30).json()["jobs"]
    assert list(story) == newest_story(kept)  # the newest, oldest first, as the seed keeps them
    assert {s["status"] for s in story.values()} == {"completed", "failed"}

    visualizr = daemon.heartbeat["compat_urls"]["visualizr"]
    page = requests.get(f"{visualizr}/api/v1/assets/videos?limit=100", timeout=30).json()
    assert page["total_count"] == len(videos(kept)) and page["has_more"] is True
    assert [v["id"] for v in page["videos"]] == videos(kept)[:100]
    assert page["videos"][0]["prompt"] and page["videos"][0]["metadata"]["resolution"] == "832x480"
    by_model = requests.get(urls["visualizr assets by model"], timeout=30).json()
    assert by_model["total_count"] == len(videos(kept, "wan-i2v"))
    assert [v["id"] for v in by_model["videos"]] == videos(kept, "wan-i2v")[50:150]

    metrics = requests.get(urls["visualizr metrics"], timeout=30).json()
    assert metrics["requests"]["total"] == len(kept) + 2  # and the two jobs of the flood
    assert metrics["storage"]["total_videos"] == sum(1 for d in kept if d["state"] == "completed" and d["kind"] != "probe")

    # Results deleted: gone from Visualizr's list at once.
    newest = page["videos"][0]["id"]
    r = requests.delete(f"{visualizr}/api/v1/assets/videos/{newest}", timeout=30)
    assert r.status_code == 200, r.text
    page = requests.get(f"{visualizr}/api/v1/assets/videos?limit=100", timeout=30).json()
    assert page["total_count"] == len(videos(kept)) - 1 and page["videos"][0]["id"] == videos(kept)[1]


def test_planted_odd_status_files_neither_break_the_lists_nor_the_index(farm):
    """Whoever can write the spool can plant any status.json: odd shapes, a link, a deep
    document, another job's id. Each list still answers, and a job written after them is
    still indexed (the index's thread lives on)."""
    daemon, _ = farm
    outbox = daemon.root / "outbox"
    odd = {
        "odd-shapes": '{"id": "odd-shapes", "state": "completed", "kind": {"a": 1}, "model": [1], "labels": ["x"],'
                      ' "result": [1, 2], "progress": "lots", "error": "oops", "created_at": 5, "finished_at": "garbage"}',
        "odd-story": '{"id": "odd-story", "state": "failed", "labels": {"compat": "story"}, "progress": [1],'
                     ' "error": ["x"], "stage": {"s": 1}, "created_at": "%s", "finished_at": 7}' % iso(datetime.now(timezone.utc)),
        "odd-sizes": '{"id": "odd-sizes", "state": "completed", "labels": {"compat": "visualizr", "k": [1]},'
                     ' "result": {"files": [{"name": "video.mp4", "size": 1e999, "media_type": 7}, "x"]},'
                     ' "created_at": "2020-01-01T00:00:00Z", "finished_at": "2020-01-01T00:00:09Z", "model": "wan-t2v"}',
        "odd-id": '{"id": "someone-else", "state": "completed", "labels": {"compat": "story"}}',
        "odd-deep": '{"id": "odd-deep", "state": "completed", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
    }
    for name, text in odd.items():
        (outbox / name).mkdir()
        (outbox / name / "status.json").write_text(text)
    (outbox / "odd-link").mkdir()
    (outbox / "odd-link" / "status.json").symlink_to("/etc/passwd")
    after = planted(JOBS + 9)
    after.update(id="after-odd-ones", labels={"flood": "after-odd-ones"})
    plant(outbox, after)
    wait_for(lambda: [j["id"] for j in native_all(daemon.api, "label=flood=after-odd-ones")] == ["after-odd-ones"],
             timeout=15, what="a job written after the odd ones, indexed")
    for name, url in routes(daemon).items():
        r = requests.get(url, timeout=30)
        assert r.status_code == 200, (name, r.text[:300])
    listed = {j["id"]: j for j in native_all(daemon.api, "state=completed") if j["id"].startswith("odd-")}
    assert set(listed) == {"odd-shapes", "odd-sizes"}  # not the link, the deep one nor the one naming another id
    assert listed["odd-shapes"]["created_at"] is None and listed["odd-shapes"]["labels"] == ["x"]
    story = requests.get(routes(daemon)["story jobs"], timeout=30).json()["jobs"]
    assert story["odd-story"]["status"] == "failed" and story["odd-story"]["error"] == "failed"  # the newest
    # A refused file is read again once it changes (and only then).
    fixed = planted(JOBS + 19)
    fixed.update(id="odd-id", labels={"flood": "fixed"})
    tmp = outbox / "odd-id" / ".status.json.tmp"
    tmp.write_text(json.dumps(fixed))
    os.rename(tmp, outbox / "odd-id" / "status.json")
    wait_for(lambda: [j["id"] for j in native_all(daemon.api, "label=flood=fixed")] == ["odd-id"],
             timeout=15, what="a refused status, rewritten right, indexed")
    assert daemon.proc.poll() is None
