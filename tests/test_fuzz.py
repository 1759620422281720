"""Fuzzing the intake with hypothesis: generated job files that are wrong in every way,
and corrupt media. Every one must end `failed` with a code, its files kept, the daemon alive."""

import json
import os
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.support import Daemon, wait_all_final

CODES = {"invalid_job", "missing_input", "unsupported_input"}
TOP_KEYS = {"version", "id", "kind", "model", "priority", "params", "inputs", "max_attempts", "labels"}
SLIDESHOW_PARAMS = {"slides", "seconds_per_slide", "transition", "transition_seconds", "width", "height", "fps",
                    "background", "text_color"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
odd_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)


def valid_job():
    return {"kind": "slideshow", "params": {"slides": ["ok"], "width": 64, "height": 64, "seconds_per_slide": 0.2, "fps": 5}}


@st.composite
def broken_jobs(draw):
    """A job document (or raw bytes) that is wrong in at least one way, and the files beside it."""
    how = draw(st.sampled_from(["random_object", "extra_key", "bad_param", "bad_type", "path_trick",
                                "not_json", "too_big", "deep", "wrong_top", "bad_id"]))
    job = valid_job()
    files: dict[str, bytes] = {}
    if how == "random_object":
        job = draw(st.dictionaries(odd_text, json_values, max_size=6))
        job["x-fuzz-" + draw(odd_text)] = draw(json_values)  # always one unknown key
    elif how == "extra_key":
        key = draw(odd_text.filter(lambda k: k not in TOP_KEYS))
        job[key] = draw(json_values)
    elif how == "bad_param":
        key = draw(odd_text.filter(lambda k: k not in SLIDESHOW_PARAMS))
        job["params"][key] = draw(json_values)
    elif how == "bad_type":
        field, value = draw(st.sampled_from([
            ("priority", st.text(min_size=1) | st.floats(min_value=101, max_value=1e300) | st.lists(st.integers(), min_size=1)),
            ("max_attempts", st.integers(max_value=0) | st.text(min_size=1)),
            ("labels", st.dictionaries(odd_text, st.lists(st.integers(), min_size=1) | st.integers(), min_size=1)),
            ("params", st.lists(json_values, min_size=1) | st.text(min_size=1) | st.integers()),
            ("inputs", st.lists(json_values, min_size=1) | st.integers()),
            ("kind", st.integers() | st.lists(st.text(), min_size=1) | st.none()),
        ]))
        job[field] = draw(value)
    elif how == "path_trick":
        name = draw(st.sampled_from(["../escape.png", "/etc/passwd", "a/../../b.png", "..", "./../x", "x\x00y",
                                     "//double", "\\\\server\\share", "../" * 40 + "etc/shadow", "missing-" + "é" * 30]))
        job["inputs"] = {"images": [name]}
        files["decoy.png"] = b"\x89PNG not really"
    elif how == "not_json":
        return draw(st.binary(min_size=1, max_size=200).filter(lambda b: not _parses_to_object(b))), files
    elif how == "too_big":
        job["params"]["slides"] = ["x" * 1_100_000]
    elif how == "deep":
        depth = draw(st.integers(min_value=2_000, max_value=50_000))
        return ("[" * depth + "]" * depth).encode(), files
    elif how == "wrong_top":
        return json.dumps(draw(st.lists(json_values) | st.text() | st.integers() | st.none())).encode(), files
    elif how == "bad_id":
        job["id"] = draw(st.sampled_from(["..", ".hidden", "a/b", "", "x" * 65, "évil", "../../etc"]))
    return json.dumps(job).encode(), files


def _parses_to_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, RecursionError):
        return False


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "spool"
    d = Daemon(root, workers=["cpu", "cpu"]).start()
    yield d
    d.stop()


def _drop_folder(inbox, name, raw: bytes, files: dict[str, bytes]) -> None:
    tmp = inbox / f".{name}.part"
    tmp.mkdir()
    (tmp / "job.json").write_bytes(raw)
    for fname, data in files.items():
        (tmp / fname).write_bytes(data)
    os.rename(tmp, inbox / name)


def _check_failed_and_kept(root, dropped: dict[str, tuple[bytes, dict]], daemon, timeout=240):
    docs = wait_all_final(root, list(dropped), timeout=timeout, daemon=daemon)
    for job_id, doc in docs.items():
        raw, files = dropped[job_id]
        assert doc["state"] == "failed", (job_id, raw[:200], doc)
        assert doc["error"]["code"] in CODES and doc["error"]["message"], doc["error"]
        kept = root / "outbox" / job_id / "input"
        assert (kept / "job.json").read_bytes() == raw
        for fname, data in files.items():
            assert (kept / fname).read_bytes() == data
    assert daemon.proc.poll() is None


def test_a_thousand_broken_job_files(fuzz_daemon):
    root = fuzz_daemon.root
    dropped: dict[str, tuple[bytes, dict]] = {}

    @settings(max_examples=1000, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(broken_jobs())
    def drop(case):
        raw, files = case
        name = f"fz{len(dropped):04d}"
        _drop_folder(root / "inbox", name, raw, files)
        dropped[name] = (raw, files)

    drop()
    assert len(dropped) >= 1000
    # A generated "id" may rename a job: map the folder names to what the daemon called them.
    _check_failed_and_kept(root, _by_drop(root, dropped), fuzz_daemon)


def _by_drop(root, dropped):
    """Job id → (raw, files) for each drop, found through status.drop."""
    wanted = {f"inbox/{name}": value for name, value in dropped.items()}
    found = {}
    deadline = time.monotonic() + 240
    while len(found) < len(wanted) and time.monotonic() < deadline:
        for job_id in os.listdir(root / "outbox"):
            if job_id in found:
                continue
            try:
                doc = json.loads((root / "outbox" / job_id / "status.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            if doc.get("drop") in wanted:
                found[job_id] = wanted[doc["drop"]]
        time.sleep(0.2)
    assert len(found) == len(wanted), f"{len(wanted) - len(found)} drops never got a status"
    return found


# -- corrupt media ---------------------------------------------------------------

@pytest.fixture(scope="module")
def media_samples(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    Image.new("RGB", (64, 48), "red").save(d / "ok.png")
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", str(d / "ok.wav")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:duration=1", "-c:v", "libx264",
                    "-movflags", "+faststart", str(d / "ok.mp4")], check=True)
    return {ext: (d / f"ok.{ext}").read_bytes() for ext in ("png", "wav", "mp4")}


def _moov_end(mp4: bytes) -> int:
    """Where the moov box ends (faststart: before the media data)."""
    pos = 0
    while pos + 8 <= len(mp4):
        size = int.from_bytes(mp4[pos:pos + 4], "big")
        if mp4[pos + 4:pos + 8] == b"moov":
            return pos + size
        pos += size
    raise AssertionError("no moov box")


def _idat_middle(png: bytes) -> int:
    """The offset halfway through a PNG's first IDAT chunk's data: a file cut there lacks rows."""
    at = png.index(b"IDAT")
    return at + 4 + int.from_bytes(png[at - 4:at], "big") // 2


def test_corrupt_media_fails_with_unsupported_input(fuzz_daemon, media_samples):
    root = fuzz_daemon.root
    png, wav, mp4 = media_samples["png"], media_samples["wav"], media_samples["mp4"]
    dropped: dict[str, tuple[bytes, dict]] = {}

    @settings(max_examples=40, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(["png", "wav_as_audio", "mp4_as_audio", "mp4_as_image", "garbage"]), st.data())
    def drop(what, data):
        job = valid_job()
        if what == "png":  # cut inside the pixel data (a cut after it, before IEND, still decodes)
            files = {"in.png": png[: data.draw(st.integers(min_value=1, max_value=_idat_middle(png)))]}
            job["inputs"] = {"images": ["in.png"]}
        elif what == "wav_as_audio":  # cut inside the 44-byte header
            files = {"in.wav": wav[: data.draw(st.integers(min_value=1, max_value=43))]}
            job["inputs"] = {"audio": "in.wav"}
        elif what == "mp4_as_audio":  # cut inside ftyp/moov: no index
            files = {"in.mp4": mp4[: data.draw(st.integers(min_value=1, max_value=_moov_end(mp4) - 1))]}
            job["inputs"] = {"audio": "in.mp4"}
        elif what == "mp4_as_image":
            files = {"in.png": mp4}
            job["inputs"] = {"images": ["in.png"]}
        else:
            files = {"in.png": data.draw(st.binary(min_size=1, max_size=300))}
            job["inputs"] = {"images": ["in.png"]}
        raw = json.dumps(job).encode()
        name = f"media{len(dropped):03d}"
        _drop_folder(root / "inbox", name, raw, files)
        dropped[name] = (raw, files)

    drop()
    _check_failed_and_kept(root, dropped, fuzz_daemon)
    for job_id in dropped:
        assert json.loads((root / "outbox" / job_id / "status.json").read_text())["error"]["code"] == "unsupported_input"


def test_device_files_and_hard_links_are_refused(fuzz_daemon, tmp_path):
    root = fuzz_daemon.root
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    cases = {}
    for name, make, words in [
        ("chardev", lambda p: os.mknod(p, 0o600 | 0o020000, os.makedev(1, 3)), "a character device"),
        ("hardlink", lambda p: os.link(outside, p), "hard link"),
        ("symlink-dev", lambda p: os.symlink("/dev/zero", p), "leaves the job folder"),
    ]:
        tmp = root / "inbox" / f".{name}.part"
        tmp.mkdir()
        job = valid_job()
        job["inputs"] = {"images": ["in.png"]}
        (tmp / "job.json").write_text(json.dumps(job))
        make(tmp / "in.png")
        os.rename(tmp, root / "inbox" / name)
        cases[name] = words
    docs = wait_all_final(root, list(cases), daemon=fuzz_daemon)
    for name, words in cases.items():
        assert docs[name]["state"] == "failed" and words in docs[name]["error"]["message"], docs[name]
        assert os.path.lexists(root / "outbox" / name / "input" / "in.png")
