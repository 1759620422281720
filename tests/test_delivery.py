"""Delivery folders (SPEC §10.3): a preset's `deliver_to` gets its jobs' results, on an sshfs
share and on a share without hard links too, whole or not at all and never over a file
already there; a missing folder is reported in the status and retried while the job stays
completed; a daemon killed while it owes a delivery makes it at its next start, once."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support import Daemon, drop_folder, wait_for, wait_status

CARDS = {"width": 320, "height": 240, "fps": 10, "seconds_per_slide": 1}


def cards_preset(folder: Path, **extra) -> dict:
    """Title-card slideshows from a dropped .txt (one card per line), delivered to `folder`."""
    return {"kind": "slideshow", "accept": ["*.txt"], "accept_as": "slides", "params": CARDS,
            "deliver_to": str(folder), **extra}


def start(root: Path, log_dir: Path, **presets: dict) -> Daemon:
    return Daemon(root, log_dir=log_dir, VIDSPOOL_PRESETS=json.dumps(presets)).start()


def drop_text(inbox: Path, name: str, text: str) -> None:
    (inbox / f".{name}").write_text(text)
    os.rename(inbox / f".{name}", inbox / name)


def visible(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def outbox_files(root: Path, doc: dict) -> dict[str, dict]:
    """The job's result files as its status lists them, each checked to be intact in the outbox."""
    files = {f["name"]: f for f in doc["result"]["files"]}
    for name, f in files.items():
        assert sha256(root / "outbox" / doc["id"] / name) == f["sha256"], f"outbox copy of {name} changed"
    return files


def wait_delivery(root: Path, job_id: str, daemon: Daemon, delivered: bool = True, timeout: float = 60) -> dict:
    """The job's status once it says delivered (or, delivered=False, once it reports a delivery error)."""
    key = "delivered" if delivered else "delivery_error"
    doc = wait_status(root, job_id, timeout=timeout, daemon=daemon)
    deadline = time.monotonic() + timeout
    while not (doc.get("result") or {}).get(key) and time.monotonic() < deadline:
        time.sleep(0.05)
        doc = wait_status(root, job_id, daemon=daemon)
    assert (doc.get("result") or {}).get(key), f"{job_id}: no {key} in {doc}\n{daemon.log()}"
    return doc


def noise_pngs(n: int, width: int, height: int) -> dict[str, bytes]:
    """Images that compress badly, so that the video is megabytes and written in many pieces."""
    rng, files = np.random.default_rng(17), {}
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buf, "PNG")
        files[f"{i}.png"] = buf.getvalue()
    return files


class FolderWatcher(threading.Thread):
    """Lists a folder over and over. Each visible name is read whole the moment it first
    appears, and its size is noted on every look after: a copy that is visible before it is
    complete shows a wrong hash or more than one size."""

    def __init__(self, folder: Path):
        super().__init__(daemon=True)
        self.folder, self.stop_flag = folder, threading.Event()
        self.first_hash: dict[str, str] = {}
        self.sizes: dict[str, set[int]] = {}
        self.looks = 0

    def run(self) -> None:
        while not self.stop_flag.is_set():
            for entry in os.scandir(self.folder):
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.name not in self.first_hash:
                        self.first_hash[entry.name] = sha256(Path(entry.path))
                    self.sizes.setdefault(entry.name, set()).add(os.stat(entry.path).st_size)
                except FileNotFoundError:
                    continue
            self.looks += 1
            time.sleep(0.002)

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(5)


def test_every_result_arrives_whole_on_an_sshfs_share_named_by_the_template(ssh_export, tmp_path):
    share = ssh_export.mount("share")
    (share.path / "done").mkdir()
    on_server = ssh_export.path / "done"  # what the share's own disk holds, as sshfs writes it
    watcher = FolderWatcher(on_server)
    watcher.start()
    root = tmp_path / "spool"
    shows = {"kind": "slideshow", "params": {"width": 960, "height": 540, "fps": 10, "seconds_per_slide": 1,
                                             "transition": "crossfade"},
             "deliver_to": str(share.path / "done"), "deliver": "all", "name": "{date}_{stem}_{id}_{kind}_{result}.{ext}"}
    d = start(root, tmp_path, shows=shows)
    try:
        images = noise_pngs(3, 960, 540)
        drop_folder(root / "inbox" / "shows", "holiday", {"inputs": {"images": list(images)}}, images)
        doc = wait_delivery(root, "holiday", d)
        watcher.stop()
        assert doc["state"] == "completed" and doc["result"]["delivery_error"] is None, doc
        files = outbox_files(root, doc)
        assert set(files) == {"video.mp4", "thumb.jpg"} and files["video.mp4"]["size"] > 1_000_000
        day = datetime.fromisoformat(doc["finished_at"].replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d")
        names = {f"{day}_holiday_holiday_slideshow_video.mp4": "video.mp4", f"{day}_holiday_holiday_slideshow_thumb.jpg": "thumb.jpg"}
        assert doc["result"]["delivered"] == [f"deliver_to/{n}" for n in names]  # no host path in a status
        assert sorted(os.listdir(on_server)) == visible(on_server) == sorted(names)  # no temp left
        for name, result in names.items():
            assert sha256(on_server / name) == files[result]["sha256"]
            assert watcher.first_hash[name] == files[result]["sha256"], f"{name} was visible before it was complete"
            assert watcher.sizes[name] == {files[result]["size"]}, f"{name} was seen at sizes {watcher.sizes[name]}"
        assert watcher.looks > 10
        assert not os.listdir(root / "deliveries" / d.host)  # the marker goes once delivered
        done = [e for e in d.log_events() if e["event"] == "delivery.done"]
        assert len(done) == 1 and done[0]["bytes"] == sum(f["size"] for f in files.values()), done
    finally:
        watcher.stop()
        d.stop()


def test_a_name_already_in_the_folder_is_never_overwritten(tmp_path):
    folder = tmp_path / "done"
    folder.mkdir()
    (folder / "story.mp4").write_bytes(b"the user's own story.mp4\n")
    root = tmp_path / "spool"
    d = start(root, tmp_path, cards=cards_preset(folder))
    try:
        drop_text(root / "inbox" / "cards", "story.txt", "One\nTwo\n")
        first = wait_delivery(root, "story", d)
        drop_text(root / "inbox" / "cards", "story.txt", "Three\n")  # the same name again: job id story-2
        second = wait_delivery(root, "story-2", d)
        assert first["result"]["delivered"] == ["deliver_to/story-2.mp4"]  # main result only, "{stem}.{ext}"
        assert second["result"]["delivered"] == ["deliver_to/story-3.mp4"]
        assert (folder / "story.mp4").read_bytes() == b"the user's own story.mp4\n"
        assert sha256(folder / "story-2.mp4") == outbox_files(root, first)["video.mp4"]["sha256"]
        assert sha256(folder / "story-3.mp4") == outbox_files(root, second)["video.mp4"]["sha256"]
        assert sorted(os.listdir(folder)) == visible(folder) == ["story-2.mp4", "story-3.mp4", "story.mp4"]
    finally:
        d.stop()


def test_a_share_without_hard_links_gets_whole_files_by_rename_never_over_a_taken_name(smb_export, tmp_path):
    on_server = smb_export.path / "done"
    on_server.mkdir(parents=True)
    (on_server / "story.mp4").write_bytes(b"the user's own story.mp4\n")
    share = smb_export.mount("share")  # rclone's smb mount: link(2) answers EIO
    root = tmp_path / "spool"
    d = start(root, tmp_path, cards=cards_preset(share.path / "done"))
    try:
        drop_text(root / "inbox" / "cards", "story.txt", "One\nTwo\n")
        doc = wait_delivery(root, "story", d)
        assert doc["result"]["delivered"] == ["deliver_to/story-2.mp4"]
        assert sorted(os.listdir(on_server)) == ["story-2.mp4", "story.mp4"]  # no temp left
        assert (on_server / "story.mp4").read_bytes() == b"the user's own story.mp4\n"
        assert sha256(on_server / "story-2.mp4") == outbox_files(root, doc)["video.mp4"]["sha256"]
    finally:
        d.stop()


def metric(api: str, line_start: str) -> float | None:
    with urllib.request.urlopen(api + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(line_start + " "):
                return float(line.split()[-1])
    return None


def test_a_missing_folder_is_reported_and_retried_while_the_job_stays_completed(tmp_path):
    folder = tmp_path / "not-yet"
    root = tmp_path / "spool"
    d = start(root, tmp_path, cards=cards_preset(folder, deliver_retry_seconds=0.5))
    try:
        drop_text(root / "inbox" / "cards", "late.txt", "Late\n")
        doc = wait_delivery(root, "late", d, delivered=False)
        assert doc["state"] == "completed" and doc["error"] is None, doc
        error = doc["result"]["delivery_error"]
        assert error["message"].startswith("deliver_to does not exist"), error  # the log names the folder
        assert error["attempts"] >= 1 and error["next_attempt_at"] > doc["finished_at"], error
        assert doc["result"]["delivered"] is None
        files = outbox_files(root, doc)  # the outbox copy stays
        wait_for(lambda: (wait_status(root, "late")["result"]["delivery_error"] or {}).get("attempts", 0) >= 2, 20,
                 "a second attempt, after the back-off")
        assert (root / "deliveries" / d.host / "late.json").is_file()  # still owed, across a restart too
        failed = [e for e in d.log_events() if e["event"] == "delivery.failed"]
        assert failed and failed[0]["job_id"] == "late" and failed[0]["next_try"] and str(folder) in failed[0]["reason"], failed
        folder.mkdir()
        doc = wait_delivery(root, "late", d, timeout=30)
        assert doc["state"] == "completed" and doc["result"]["delivery_error"] is None
        assert doc["result"]["delivered"] == ["deliver_to/late.mp4"]
        assert sha256(folder / "late.mp4") == files["video.mp4"]["sha256"]
        assert outbox_files(root, doc) == files
        assert not (root / "deliveries" / d.host / "late.json").exists()
        # The rewrites are deliveries, not more ends of the job.
        assert metric(d.api, 'vidspool_jobs_total{kind="slideshow",state="completed"}') == 1
        assert metric(d.api, 'vidspool_deliveries_total{outcome="delivered"}') == 1
        assert metric(d.api, 'vidspool_deliveries_total{outcome="failed"}') >= 2
    finally:
        d.stop()


def test_a_daemon_killed_mid_copy_redoes_the_delivery_at_its_next_start_once(ssh_export, tmp_path):
    # Long attribute caching: the folder's stat is answered by the kernel, so the copy hangs
    # in creating its temp once the share stops answering.
    share = ssh_export.mount("share", extra_opts=["attr_timeout=60", "entry_timeout=60"])
    (share.path / "done").mkdir()
    on_server = ssh_export.path / "done"
    root = tmp_path / "spool"
    presets = {"cards": cards_preset(share.path / "done")}
    d = start(root, tmp_path, **presets)
    marker = root / "deliveries" / d.host / "story.json"
    os.kill(share.pid, signal.SIGSTOP)  # the share stops answering
    try:
        drop_text(root / "inbox" / "cards", "story.txt", "One\nTwo\n")
        doc = wait_status(root, "story", daemon=d)
        assert doc["state"] == "completed"
        wait_for(lambda: marker.exists() and json.loads(marker.read_text())["files"][0]["temp"], 20, "the copy to start")
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(30)
    finally:
        os.kill(share.pid, signal.SIGCONT)
    temp = Path(json.loads(marker.read_text())["files"][0]["temp"])
    assert temp.parent == share.path / "done" and temp.name.startswith(".story.mp4.part-")
    assert visible(on_server) == []  # killed before anything arrived
    (on_server / temp.name).write_bytes(b"the first bytes of the killed copy")  # what a share may keep of it
    again = start(root, tmp_path, **presets)
    try:
        doc = wait_delivery(root, "story", again)
        assert doc["result"]["delivered"] == ["deliver_to/story.mp4"]
        assert os.listdir(on_server) == ["story.mp4"]  # one copy; the killed attempt's temp removed
        assert sha256(on_server / "story.mp4") == outbox_files(root, doc)["video.mp4"]["sha256"]
        assert "delivery.resumed" in [e["event"] for e in again.log_events()]
        assert not marker.exists()
    finally:
        again.stop()


def test_a_copy_published_just_before_a_kill_is_not_delivered_twice(tmp_path):
    folder = tmp_path / "done"
    root = tmp_path / "spool"
    presets = {"cards": cards_preset(folder)}
    d = start(root, tmp_path, **presets)
    drop_text(root / "inbox" / "cards", "story.txt", "One\n")
    wait_delivery(root, "story", d, delivered=False)  # no folder yet: the delivery is owed
    d.kill()
    # What a daemon killed between giving the copy its name and recording that leaves: the
    # name linked to the temp, and the marker naming both.
    marker = root / "deliveries" / d.host / "story.json"
    plan = json.loads(marker.read_text())
    folder.mkdir()
    temp, final = folder / ".story.mp4.part-0badf00d", folder / "story.mp4"
    temp.write_bytes((root / "outbox" / "story" / "video.mp4").read_bytes())
    os.link(temp, final)
    plan["files"][0].update(temp=str(temp), final=str(final))
    marker.write_text(json.dumps(plan))
    again = start(root, tmp_path, **presets)
    try:
        doc = wait_delivery(root, "story", again)
        assert doc["result"]["delivered"] == ["deliver_to/story.mp4"] and doc["result"]["delivery_error"] is None
        assert os.listdir(folder) == ["story.mp4"]  # no story-2.mp4, and the temp is gone
        assert sha256(final) == outbox_files(root, doc)["video.mp4"]["sha256"]
        assert not marker.exists()
    finally:
        again.stop()
