"""A full or read-only spool: nothing partial is ever visible, jobs wait with the reason
in health, and everything resumes by itself when space (or write access) returns."""

import json
import os
import subprocess
import time

import pytest

from tests.support import Daemon, drop_json, health, status, wait_for, wait_status


@pytest.fixture
def small_spool(tmp_path):
    """A real 8 MB filesystem (tmpfs) holding the spool (the daemon's log stays outside)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt / "spool"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def daemon_on(spool, tmp_path) -> Daemon:
    return Daemon(spool, log_dir=tmp_path)


def fill(root, keep_bytes=0):
    """Fills the filesystem of `root` up to `keep_bytes` free; returns the filler path."""
    filler = root.parent / "filler"
    free = os.statvfs(root).f_bavail * os.statvfs(root).f_frsize
    with open(filler, "wb", buffering=0) as f:
        try:
            f.write(b"\0" * max(0, free - keep_bytes))
            while True:  # tmpfs accounts in pages: top it up until it refuses
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def no_partial_files(root):
    for dirpath, _, files in os.walk(root / "outbox"):
        for name in files:
            assert not name.endswith(".tmp"), f"temp file left visible: {dirpath}/{name}"
            if name == "status.json":
                json.loads(open(os.path.join(dirpath, name)).read())  # parses: never partial


def test_full_disk_makes_jobs_wait_then_everything_resumes(small_spool, tmp_path):
    d = daemon_on(small_spool, tmp_path).start()
    try:
        root = small_spool
        drop_json(root / "inbox", "running", {"kind": "probe", "params": {"seconds": 2}})
        wait_status(root, "running", {"running"}, daemon=d)
        (root / "inbox" / ".late.json.part").write_text(json.dumps({"kind": "probe"}))
        filler = fill(root)
        os.rename(root / "inbox" / ".late.json.part", root / "inbox" / "late.json")
        wait_for(lambda: health(d.api)[0] == 503 and "ENOSPC" in health(d.api)[1]["reason"], what="health 503 ENOSPC")
        time.sleep(3)  # the running job has finished its work and is waiting to deliver
        assert status(root, "running")["state"] == "running"
        no_partial_files(root)
        assert d.proc.poll() is None
        os.unlink(filler)
        assert wait_status(root, "running", daemon=d, timeout=20)["state"] == "completed"
        assert wait_status(root, "late", daemon=d, timeout=20)["state"] == "completed"
        assert health(d.api)[0] == 200
        events = [e["event"] for e in d.log_events()]
        assert "spool.unavailable" in events and "spool.recovered" in events
        no_partial_files(root)
    finally:
        d.stop()


def test_read_only_spool_waits_and_resumes(small_spool, tmp_path):
    d = daemon_on(small_spool, tmp_path).start()
    mnt = small_spool.parent
    try:
        drop_json(small_spool / "inbox", "ro", {"kind": "probe", "params": {"seconds": 1.5}})
        wait_status(small_spool, "ro", {"running"}, daemon=d)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        wait_for(lambda: health(d.api)[0] == 503 and "EROFS" in health(d.api)[1]["reason"], what="health 503 EROFS")
        time.sleep(2.5)
        assert status(small_spool, "ro")["state"] == "running"
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
        assert wait_status(small_spool, "ro", daemon=d, timeout=20)["state"] == "completed"
        wait_for(lambda: health(d.api)[0] == 200, what="health back to 200")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=False)
        d.stop()


def test_daemon_started_on_a_read_only_spool_comes_up_and_recovers(small_spool, tmp_path):
    small_spool.mkdir()
    daemon_on(small_spool, tmp_path).start().stop()  # lay the spool out
    mnt = small_spool.parent
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    d = daemon_on(small_spool, tmp_path)
    d.start(wait=False)
    try:
        # (its log follows the first run's: the fault is said after a start that may be slow)
        wait_for(lambda: d.proc.poll() is not None or "spool.unavailable" in [e["event"] for e in d.log_events()],
                 60, "the daemon to report its read-only spool")
        assert d.proc.poll() is None, d.log()
        assert "spool.unavailable" in [e["event"] for e in d.log_events()]
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
        d.wait_ready()
        drop_json(small_spool / "inbox", "after", {"kind": "probe"})
        assert wait_status(small_spool, "after", daemon=d)["state"] == "completed"
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=False)
        d.stop()
