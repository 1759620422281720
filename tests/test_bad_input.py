"""Bad input gets a failed status with the right code; the inputs are kept; the daemon lives."""

import json
import os

import pytest

from tests.support import Daemon, drop_folder, drop_json, wait_all_final, wait_status


@pytest.fixture(scope="module")
def bad_daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "spool"
    d = Daemon(root, workers=["cpu"], VIDSPOOL_LIMITS__INPUT_BYTES="1000").start()
    yield d
    d.stop()


def _rename_in(folder, name, data: bytes):
    tmp = folder / f".{name}.part"
    tmp.write_bytes(data)
    os.rename(tmp, folder / name)


def test_invalid_json(bad_daemon):
    root = bad_daemon.root
    _rename_in(root / "inbox", "broken.json", b'{"kind": "probe", ')
    doc = wait_status(root, "broken", daemon=bad_daemon)
    assert doc["state"] == "failed" and doc["error"]["code"] == "invalid_job"
    assert "not valid JSON" in doc["error"]["message"] and doc["error"]["retryable"] is False
    assert (root / "outbox" / "broken" / "input" / "broken.json").read_bytes() == b'{"kind": "probe", '


@pytest.mark.parametrize("name, doc, code, words", [
    ("unknownkind", {"kind": "teleport"}, "invalid_job", "unknown kind 'teleport'"),
    ("unknownkey", {"kind": "probe", "colour": "red"}, "invalid_job", "colour: unknown key"),
    ("unknownparam", {"kind": "probe", "params": {"speed": 2}}, "invalid_job", "params.speed: unknown key"),
    ("badtype", {"kind": "probe", "params": {"seconds": "soon"}}, "invalid_job", "params.seconds"),
    ("dotdot", {"kind": "probe", "inputs": {"data": "../secret"}}, "invalid_job", "must not contain '..'"),
    ("absolute", {"kind": "probe", "inputs": {"data": "/etc/passwd"}}, "invalid_job", "relative file name"),
    ("missing", {"kind": "probe", "inputs": {"data": "nothere.bin"}}, "missing_input", "was not found"),
    ("badinput", {"kind": "probe", "inputs": {"video": "x.mp4"}}, "invalid_job", "inputs.video: unknown input"),
    ("badid", {"kind": "probe", "id": "../../etc"}, "invalid_job", "id:"),
    ("notobject", [1, 2], "invalid_job", "must hold a JSON object"),
    ("huge", {"kind": "slideshow", "params": {"slides": ["a"], "seconds_per_slide": 3600, "width": 3840, "height": 2160, "fps": 60}},
     "invalid_job", "max_frame_pixels"),
    ("nothing", {"kind": "slideshow"}, "invalid_job", "needs input 'images' and/or params 'slides'"),
    ("oddsize", {"kind": "slideshow", "params": {"slides": ["a"], "width": 321}}, "invalid_job", "params.width: Value error, must be even"),
])
def test_invalid_jobs(bad_daemon, name, doc, code, words):
    root = bad_daemon.root
    drop_folder(root / "inbox", name, doc)
    st = wait_status(root, name, daemon=bad_daemon)
    assert st["state"] == "failed", st
    assert st["error"]["code"] == code and words in st["error"]["message"], st["error"]
    assert json.loads((root / "outbox" / name / "input" / "job.json").read_text()) == doc


def test_symlink_out_of_the_job_folder(bad_daemon, tmp_path):
    root = bad_daemon.root
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    tmp = root / "inbox" / ".link.part"
    tmp.mkdir()
    (tmp / "job.json").write_text(json.dumps({"kind": "probe", "inputs": {"data": "leak.txt"}}))
    os.symlink(secret, tmp / "leak.txt")
    os.rename(tmp, root / "inbox" / "link")
    st = wait_status(root, "link", daemon=bad_daemon)
    assert st["error"]["code"] == "invalid_job" and "leaves the job folder" in st["error"]["message"]
    assert os.path.islink(root / "outbox" / "link" / "input" / "leak.txt")


@pytest.mark.parametrize("name, make, words", [
    ("empty", lambda p: p.write_bytes(b""), "is empty"),
    ("toobig", lambda p: p.write_bytes(b"x" * 5000), "over the limit of 1000"),
    ("fifo", lambda p: os.mkfifo(p), "is a FIFO"),
])
def test_unsupported_input_files(bad_daemon, name, make, words):
    root = bad_daemon.root
    tmp = root / "inbox" / f".{name}.part"
    tmp.mkdir()
    (tmp / "job.json").write_text(json.dumps({"kind": "probe", "inputs": {"data": "in.bin"}}))
    make(tmp / "in.bin")
    os.rename(tmp, root / "inbox" / name)
    st = wait_status(root, name, daemon=bad_daemon)
    assert st["error"]["code"] == "unsupported_input" and words in st["error"]["message"], st["error"]
    assert os.path.lexists(root / "outbox" / name / "input" / "in.bin")


def test_zero_byte_job_file_and_folder_without_job_json(bad_daemon):
    root = bad_daemon.root
    _rename_in(root / "inbox", "zero.json", b"")
    tmp = root / "inbox" / ".nojob.part"
    tmp.mkdir()
    (tmp / "notes.txt").write_text("hi")
    os.rename(tmp, root / "inbox" / "nojob")
    docs = wait_all_final(root, ["zero", "nojob"], daemon=bad_daemon)
    assert docs["zero"]["error"]["code"] == "invalid_job" and "empty" in docs["zero"]["error"]["message"]
    assert "no job.json" in docs["nojob"]["error"]["message"]
    assert (root / "outbox" / "nojob" / "input" / "notes.txt").read_text() == "hi"


def test_daemon_still_runs_jobs_after_bad_input(bad_daemon):
    drop_json(bad_daemon.root / "inbox", "fine", {"kind": "probe"})
    assert wait_status(bad_daemon.root, "fine", daemon=bad_daemon)["state"] == "completed"
    assert bad_daemon.proc.poll() is None


def test_kind_error_fails_the_job_with_its_code(bad_daemon):
    drop_json(bad_daemon.root / "inbox", "failing", {"kind": "probe", "params": {"fail": "unsupported_input"}})
    st = wait_status(bad_daemon.root, "failing", daemon=bad_daemon)
    assert st["state"] == "failed" and st["error"]["code"] == "unsupported_input"
