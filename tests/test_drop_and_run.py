"""Dropping jobs into a real daemon's inbox, in each of the drop forms."""

import json
import os
import time
from datetime import datetime

from tests.support import Daemon, drop_folder, drop_json, executions, status, wait_all_final, wait_for, wait_status


def test_json_drop_by_rename_completes_with_status_log_and_inputs(daemon, spool_root, markers):
    drop_json(spool_root / "inbox", "hello", {"kind": "probe", "params": {"marker_dir": str(markers)}, "labels": {"client": "t"}})
    doc = wait_status(spool_root, "hello", daemon=daemon)
    assert doc["state"] == "completed", doc
    assert doc["progress"] == 100 and doc["attempt"] == 1 and doc["host"] == "test-host"
    assert doc["device"] in ("cpu:0", "cpu:1")
    assert doc["labels"] == {"client": "t"} and doc["job"]["params"]["marker_dir"] == str(markers)
    assert doc["created_at"] and doc["started_at"] and doc["finished_at"]
    files = {f["name"]: f for f in doc["result"]["files"]}
    out = spool_root / "outbox" / "hello"
    assert (out / "probe.txt").read_text().startswith("hello ran on cpu")
    assert files["probe.txt"]["size"] == (out / "probe.txt").stat().st_size
    assert files["probe.txt"]["url"] == "/api/v1/jobs/hello/files/probe.txt"
    # the original file is kept; nothing of the daemon's is left in input/
    assert sorted(os.listdir(out / "input")) == ["hello.json"]
    def events():
        return [json.loads(line)["event"] for line in (out / "log.jsonl").read_text().splitlines()]

    # the job.completed line follows the final status by a moment
    wait_for(lambda: "job.completed" in events(), 5, "job.completed in log.jsonl")
    assert "job.queued" in events() and "job.started" in events()
    assert not os.listdir(spool_root / "inbox" / "slideshow")
    assert executions(markers) == ["hello"]


def test_folder_drop_with_media_and_json_with_media_beside_it(daemon, spool_root):
    drop_folder(spool_root / "inbox", "withdata", {"kind": "probe", "inputs": {"data": "blob.bin"}}, {"blob.bin": b"x" * 1234})
    inbox = spool_root / "inbox"
    (inbox / ".m.part").write_bytes(b"y" * 99)
    os.rename(inbox / ".m.part", inbox / "media.bin")
    drop_json(inbox, "beside", {"kind": "probe", "inputs": {"data": "media.bin"}})
    a = wait_status(spool_root, "withdata", daemon=daemon)
    b = wait_status(spool_root, "beside", daemon=daemon)
    assert a["state"] == b["state"] == "completed", (a, b)
    assert "data: 1234 bytes" in (spool_root / "outbox" / "withdata" / "probe.txt").read_text()
    assert "data: 99 bytes" in (spool_root / "outbox" / "beside" / "probe.txt").read_text()
    assert sorted(os.listdir(spool_root / "outbox" / "beside" / "input")) == ["beside.json", "media.bin"]
    assert not (inbox / "media.bin").exists()


def test_id_from_job_and_collisions_get_suffixes(daemon, spool_root):
    for n in range(3):
        drop_json(spool_root / "inbox", f"c{n}", {"id": "same", "kind": "probe"})
    docs = wait_all_final(spool_root, ["same", "same-2", "same-3"], daemon=daemon)
    assert {d["state"] for d in docs.values()} == {"completed"}
    assert sorted(d["drop"] for d in docs.values()) == ["inbox/c0.json", "inbox/c1.json", "inbox/c2.json"]


def test_priority_then_fifo(spool_root, markers):
    d = Daemon(spool_root, workers=["cpu"])
    d.start()
    try:
        # Occupy the single worker, then queue jobs of mixed priority.
        drop_json(spool_root / "inbox", "blocker", {"kind": "probe", "params": {"seconds": 1.5}})
        wait_status(spool_root, "blocker", {"running"}, daemon=d)
        for name, prio in [("low", -5), ("mid1", 0), ("high", 10), ("mid2", 0)]:
            drop_json(spool_root / "inbox", name, {"kind": "probe", "priority": prio, "params": {"marker_dir": str(markers)}})
            time.sleep(0.05)
        wait_all_final(spool_root, ["low", "mid1", "high", "mid2"], daemon=d)
        assert executions(markers) == ["high", "mid1", "mid2", "low"]
    finally:
        d.stop()


def test_bare_file_in_preset_inbox_becomes_a_job(daemon, spool_root):
    cards = spool_root / "inbox" / "cards"
    assert cards.is_dir()
    (cards / ".x.part").write_text("Hello\n\nWorld\n")
    os.rename(cards / ".x.part", cards / "story.txt")
    doc = wait_status(spool_root, "story", daemon=daemon, timeout=120)
    assert doc["state"] == "completed", doc
    assert doc["job"]["kind"] == "slideshow" and doc["job"]["params"]["slides"] == ["Hello", "World"]
    assert doc["job"]["preset"] == "cards"
    assert (spool_root / "outbox" / "story" / "input" / "story.txt").read_text() == "Hello\n\nWorld\n"


def test_cancel_file_cancels_queued_and_running_jobs(spool_root, markers):
    d = Daemon(spool_root, workers=["cpu"]).start()
    try:
        inbox = spool_root / "inbox"
        drop_json(inbox, "long", {"kind": "probe", "params": {"seconds": 30}})
        wait_status(spool_root, "long", {"running"}, daemon=d)
        drop_json(inbox, "waiting", {"kind": "probe"})
        wait_status(spool_root, "waiting", {"queued"}, daemon=d)
        t0 = time.monotonic()
        for job_id in ("waiting", "long"):
            (inbox / f"{job_id}.cancel").touch()
        w = wait_status(spool_root, "waiting", daemon=d, timeout=10)
        r = wait_status(spool_root, "long", daemon=d, timeout=10)
        assert w["state"] == r["state"] == "canceled"
        assert r["error"]["code"] == "canceled" and time.monotonic() - t0 < 3
        # the worker stays up and runs the next job
        drop_json(inbox, "after", {"kind": "probe"})
        assert wait_status(spool_root, "after", daemon=d)["state"] == "completed"
        assert not (inbox / "long.cancel").exists()
    finally:
        d.stop()


def test_slow_writer_is_not_picked_up_before_complete(spool_root, markers):
    d = Daemon(spool_root, workers=["cpu"], VIDSPOOL_SPOOL__STABLE_SECONDS="3").start()
    try:
        inbox = spool_root / "inbox"
        media = inbox / "slow.bin"
        job = inbox / "slow.json"
        text = json.dumps({"kind": "probe", "inputs": {"data": "slow.bin"}, "params": {"marker_dir": str(markers)}})
        half = len(text) // 2
        t0 = time.monotonic()
        with open(job, "w") as jf, open(media, "wb") as mf:
            jf.write(text[:half]); jf.flush()
            for _ in range(5):  # media in pieces over 5 s, in place
                mf.write(b"z" * 1000); mf.flush()
                time.sleep(1)
                assert status(spool_root, "slow") is None, "picked up while being written"
            jf.write(text[half:])
        written = time.time()
        assert time.monotonic() - t0 >= 5
        doc = wait_status(spool_root, "slow", daemon=d, timeout=30)
        assert doc["state"] == "completed", doc
        assert "data: 5000 bytes" in (spool_root / "outbox" / "slow" / "probe.txt").read_text()
        # accepted only after stable_seconds (3) of quiet
        accepted = datetime.fromisoformat(doc["created_at"].replace("Z", "+00:00")).timestamp()
        assert accepted - written >= 2.5, (accepted, written)
    finally:
        d.stop()
