"""Delivery names and markers that a user or a spool writer chose: a dropped file named with
60 emoji (240 bytes in 60 characters) is delivered under a name cut by bytes, with room for
the temp name; a planted delivery marker naming another folder and a temp file to remove
neither writes there nor removes it: the folder and names come from the job's status and
preset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support import Daemon, wait_for
from tests.test_delivery import cards_preset, drop_text, sha256, wait_delivery

EMOJI = "\N{GRINNING FACE}" * 60


@pytest.fixture(scope="module")
def delivering(tmp_path_factory):
    base = tmp_path_factory.mktemp("delivery-hostile")
    folder = base / "done"
    folder.mkdir()
    d = Daemon(base / "spool", log_dir=base, VIDSPOOL_PRESETS=json.dumps({"cards": cards_preset(folder)})).start()
    yield d, folder
    d.stop()


def only_job(root: Path) -> str:
    wait_for(lambda: len(os.listdir(root / "outbox")) == 1, 30, "the job in the outbox")
    return os.listdir(root / "outbox")[0]


def test_a_name_of_many_multibyte_characters_is_cut_by_bytes_and_delivered(delivering):
    d, folder = delivering
    drop_text(d.root / "inbox" / "cards", f"{EMOJI}.txt", "One\n")
    doc = wait_delivery(d.root, only_job(d.root), d)
    assert doc["result"]["delivery_error"] is None, doc["result"]
    [delivered] = doc["result"]["delivered"]
    name = Path(delivered).name
    # The status names it under the preset's deliver_to, no host path (daemon/view/hostpaths.py).
    assert Path(delivered).parent == Path("deliver_to") and name.endswith(".mp4") and name.startswith("\N{GRINNING FACE}" * 40)
    assert len(name.encode()) <= 200 and len(f".{name}.part-01234567".encode()) <= 255
    assert sha256(folder / name) == {f["name"]: f for f in doc["result"]["files"]}["video.mp4"]["sha256"]
    assert [n for n in os.listdir(folder) if n.startswith(".")] == []  # no temp left


def test_a_planted_marker_chooses_no_folder_and_removes_nothing(delivering, tmp_path):
    d, folder = delivering
    job_id = only_job(d.root)
    d.stop()
    elsewhere, victim = tmp_path / "elsewhere", tmp_path / "victim.txt"
    elsewhere.mkdir()
    victim.write_text("the user's own file\n")
    marker = {"id": job_id, "preset": "cards", "folder": str(elsewhere), "retry_seconds": 1, "attempts": 0,
              "files": [{"name": "video.mp4", "sha256": None, "size": 1, "as": "../escaped.mp4",
                         "temp": str(victim), "final": str(victim), "delivered": None}]}
    markers = d.root / "deliveries" / d.host
    (markers / f"{job_id}.json").write_text(json.dumps(marker))
    (markers / "no-such-job.json").write_text(json.dumps({**marker, "id": "no-such-job"}))
    before = set(os.listdir(folder))
    d.start()
    wait_for(lambda: not (markers / f"{job_id}.json").exists() or not victim.exists(), 30, "the job's marker settled")
    assert victim.exists() and victim.read_text() == "the user's own file\n"
    assert os.listdir(elsewhere) == [] and not (tmp_path / "escaped.mp4").exists()
    added = set(os.listdir(folder)) - before  # delivered again, where the preset says, under its own name
    assert len(added) == 1 and added.pop().endswith("-2.mp4"), os.listdir(folder)
    wait_for(lambda: os.listdir(markers) == [], 10, "the marker of no job dropped")
