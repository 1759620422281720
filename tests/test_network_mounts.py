"""The spool over real network mounts: a mount that dies under a daemon, an rclone SMB
mount that cannot give exclusive claims, and slow writers over sshfs and SMB."""

import json
import os
import subprocess
import sys
import time

from tests.support import REPO, Daemon, assert_exactly_once, base_env, drop_json, health, status, wait_for, wait_status

SHARED = {"VIDSPOOL_SPOOL__LEASE_SECONDS": "4", "VIDSPOOL_SPOOL__HEARTBEAT_SECONDS": "0.5",
          "VIDSPOOL_SPOOL__RESCAN_SECONDS": "0.5"}


def test_a_killed_mount_is_reported_its_jobs_taken_over_never_published_twice(ssh_export, tmp_path):
    local = ssh_export.path / "spool"
    mount = ssh_export.mount("b")
    b = Daemon(mount.path / "spool", host="host-b", log_dir=tmp_path, **SHARED).start()
    b_api = b.api
    a = None
    markers = tmp_path / "markers"
    markers.mkdir()
    try:
        drop_json(local / "inbox", "victim", {"kind": "probe", "params": {"seconds": 6, "marker_dir": str(markers)}})
        wait_status(local, "victim", {"running"}, daemon=b)
        a = Daemon(local, host="host-a", log_dir=tmp_path, **SHARED).start()
        mount.kill()  # sshfs dies: every operation on the mount fails with ENOTCONN
        killed = time.monotonic()
        wait_for(lambda: "spool unavailable: ENOTCONN" in health(b_api)[1].get("reason", ""), 10, "host-b reports its dead spool")
        doc = wait_status(local, "victim", timeout=40, daemon=a)
        assert doc["state"] == "completed" and doc["host"] == "host-a" and doc["attempt"] == 2, doc
        assert time.monotonic() - killed >= 4  # not before host-b's lease ran out
        time.sleep(2)  # host-b's own attempt has finished by now and waits to deliver
        mount.remount()
        wait_for(lambda: health(b_api)[0] == 200, 20, "host-b recovers after the remount")
        wait_for(lambda: "job.lost" in [e["event"] for e in b.log_events()], 10, "host-b drops the lost job")
        final = status(local, "victim")
        assert final["host"] == "host-a" and final["state"] == "completed"
        # host-b, cut off, may run its attempt to the end beside host-a's: only host-a's is published
        runs = assert_exactly_once(local, ["victim"], [a, b], journal=markers / "runs.jsonl", cut_off_hosts=("host-b",))
        assert [(r.host, r.attempt) for r in runs["victim"]] == [("host-b", 1), ("host-a", 2)], runs["victim"]
        assert b.proc.poll() is None
        # host-b carries on: it runs new work again
        for i in range(6):
            drop_json(local / "inbox", f"after{i}", {"kind": "probe", "params": {"seconds": 0.5}})
        docs = [wait_status(local, f"after{i}", timeout=30, daemon=a) for i in range(6)]
        assert {d["state"] for d in docs} == {"completed"}
        assert "host-b" in {d["host"] for d in docs}
    finally:
        b.stop()
        if a:
            a.stop()


def test_a_mount_point_left_empty_is_not_an_empty_queue(ssh_export, tmp_path):
    """sshfs that loses its server unmounts itself: the path becomes an empty local folder."""
    mount = ssh_export.mount("b")
    b = Daemon(mount.path / "spool", host="host-b", log_dir=tmp_path, **SHARED).start()
    try:
        api = b.api
        mount.unmount()
        wait_for(lambda: "not mounted there any more" in health(api)[1].get("reason", ""), 10, "the daemon notices the mount is gone")
        assert not (mount.path / "spool").exists()  # nothing was created on the bare mount point
        mount.mount()
        wait_for(lambda: health(api)[0] == 200, 20, "back when the mount returns")
        drop_json(ssh_export.path / "spool" / "inbox", "back", {"kind": "probe"})
        assert wait_status(ssh_export.path / "spool", "back", daemon=b)["host"] == "host-b"
    finally:
        b.stop()


def _vidspool(root, *args, env=None):
    e = base_env(VIDSPOOL_SPOOL__ROOT=str(root), **(env or {}))
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=REPO, env=e, capture_output=True, text=True, timeout=120)


def test_rclone_smb_spool_is_refused_for_shared_use_but_works_single_host(smb_export, tmp_path):
    r1 = smb_export.mount("r1")
    root = r1.path / "spool"
    out = _vidspool(root, "init")
    assert out.returncode == 0, out.stderr
    doctor = _vidspool(root, "doctor", env={"VIDSPOOL_SPOOL__SHARED": "true"})
    assert doctor.returncode == 1
    assert "[FAIL] spool filesystem: fuse.rclone" in doctor.stdout and "both win a rename race" in doctor.stdout
    refused = subprocess.run([sys.executable, "-m", "daemon", "run"], cwd=REPO, capture_output=True, text=True, timeout=120,
                             env=base_env(VIDSPOOL_SPOOL__ROOT=str(root), VIDSPOOL_SPOOL__SHARED="true", VIDSPOOL_API__PORT="0"))
    assert refused.returncode == 2 and "spool.refused" in refused.stderr and "rclone" in refused.stderr
    # One daemon alone (shared = auto) works; a second one on another rclone mount is refused.
    solo = Daemon(root, host="solo", log_dir=tmp_path, VIDSPOOL_SPOOL__STABLE_SECONDS="2", **SHARED).start()
    try:
        drop_json(root / "inbox", "single", {"kind": "probe"})
        # read on the server: rclone answers EIO to a reader racing a replace of status.json
        assert wait_status(smb_export.path / "spool", "single", timeout=60, daemon=solo)["state"] == "completed"
        r2 = smb_export.mount("r2")
        second = subprocess.run([sys.executable, "-m", "daemon", "run"], cwd=REPO, capture_output=True, text=True, timeout=120,
                                env=base_env(VIDSPOOL_SPOOL__ROOT=str(r2.path / "spool"), VIDSPOOL_SPOOL__HOST="second",
                                             VIDSPOOL_API__PORT="0"))
        assert second.returncode == 2 and "other daemons (solo)" in second.stderr, second.stderr[-2000:]
    finally:
        solo.stop()


def test_slow_writer_over_sshfs_is_not_picked_up_early(ssh_export, tmp_path):
    local = ssh_export.path / "spool"
    d = Daemon(local, host="host-a", log_dir=tmp_path, VIDSPOOL_SPOOL__STABLE_SECONDS="3").start()
    try:
        m = ssh_export.mount("writer")
        inbox = m.path / "spool" / "inbox"
        text = json.dumps({"kind": "probe", "inputs": {"data": "slow.bin"}})
        with open(inbox / "slow.json", "w") as jf, open(inbox / "slow.bin", "wb") as mf:
            jf.write(text[:10]); jf.flush()
            for _ in range(5):  # in place, through sshfs, in pieces over 5 s
                mf.write(b"s" * 4000); mf.flush(); os.fsync(mf.fileno())
                time.sleep(1)
                assert status(local, "slow") is None, "picked up while being written"
            jf.write(text[10:])
        doc = wait_status(local, "slow", timeout=30, daemon=d)
        assert doc["state"] == "completed" and "data: 20000 bytes" in (local / "outbox" / "slow" / "probe.txt").read_text()
    finally:
        d.stop()


def test_slow_writer_over_smb_is_not_picked_up_early(smb_export, tmp_path):
    local = smb_export.path / "spool"
    d = Daemon(local, host="host-a", log_dir=tmp_path, VIDSPOOL_SPOOL__STABLE_SECONDS="3").start()
    try:
        blob = tmp_path / "blob.bin"
        blob.write_bytes(os.urandom(40960))
        drop_json(local / "inbox", "smbjob", {"kind": "probe", "inputs": {"data": "blob.bin"}})
        put = smb_export.server  # the upload lands in spool/inbox/ through Samba, in 5 pieces over 5 s
        from tests.netfs import PiecewisePut
        upload = PiecewisePut(put, blob, "spool/inbox/blob.bin", pieces=5, seconds=5)
        upload.start()
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline:
            assert status(local, "smbjob") is None, "picked up while the upload was running"
            time.sleep(0.1)
        upload.join_checked(30)
        doc = wait_status(local, "smbjob", timeout=40, daemon=d)
        assert doc["state"] == "completed", doc
        assert "data: 40960 bytes" in (local / "outbox" / "smbjob" / "probe.txt").read_text()
    finally:
        d.stop()


def test_doctor_measures_visibility_through_a_second_mount(ssh_export):
    root = ssh_export.path / "spool"
    assert _vidspool(root, "init").returncode == 0
    m = ssh_export.mount("probe")
    out = _vidspool(root, "doctor", env={"VIDSPOOL_SPOOL__PROBE_PATH": str(m.path / "spool")})
    assert out.returncode == 0, out.stdout + out.stderr
    line = next(l for l in out.stdout.splitlines() if "a new file shows through" in l)
    assert line.startswith("[ok  ]") and " ms" in line
    # the same check through a mount with sshfs's default directory cache is slow: doctor says so
    cached = ssh_export.mount("cached", dir_cache=True)
    os.listdir(cached.path / "spool")  # fill the cache
    out = _vidspool(root, "doctor", env={"VIDSPOOL_SPOOL__PROBE_PATH": str(cached.path / "spool"),
                                         "VIDSPOOL_SPOOL__LEASE_SECONDS": "6"})
    assert out.returncode == 1 and "[FAIL] a new file shows through" in out.stdout, out.stdout


def test_an_attempt_that_ends_while_the_mount_is_dead_is_never_written_after_takeover(ssh_export, tmp_path):
    local = ssh_export.path / "spool"
    mount = ssh_export.mount("b")
    b = Daemon(mount.path / "spool", host="host-b", log_dir=tmp_path, **SHARED).start()
    a = None
    try:
        # host-a is up before the job (however long it takes to start) but paused, so host-b runs it
        (local / "hosts").mkdir(parents=True, exist_ok=True)
        (local / "hosts" / "host-a.pause").write_text("{}")
        a = Daemon(local, host="host-a", log_dir=tmp_path, **SHARED).start()
        # fails after 3 s, i.e. while host-b's mount is dead: its end state cannot be written
        drop_json(local / "inbox", "ends", {"kind": "probe", "params": {"seconds": 3, "fail": "unsupported_input"}})
        wait_status(local, "ends", {"running"}, daemon=b)
        mount.kill()
        (local / "hosts" / "host-a.pause").unlink()
        doc = wait_status(local, "ends", timeout=40, daemon=a)
        assert doc["host"] == "host-a" and doc["state"] == "failed" and doc["attempt"] == 2, doc
        mount.remount()
        wait_for(lambda: health(b.api)[0] == 200, 20, "host-b recovers")
        time.sleep(2)  # several turns of host-b after its recovery
        after = status(local, "ends")
        assert (after["host"], after["state"], after["attempt"]) == ("host-a", "failed", 2), after
    finally:
        b.stop()
        if a:
            a.stop()
