"""A slideshow dropped into a real daemon: the MP4 checked with ffprobe."""

import json
import os
import subprocess

from PIL import Image

from tests.support import wait_status


def ffprobe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _folder(inbox, name, job, files):
    tmp = inbox / f".{name}.part"
    tmp.mkdir()
    (tmp / "job.json").write_text(json.dumps(job))
    for fname, write in files.items():
        write(tmp / fname)
    os.rename(tmp, inbox / name)


def test_slideshow_with_images_cards_and_music(daemon, spool_root):
    def photo(color):
        return lambda p: Image.new("RGB", (400, 300), color).save(p)

    def music(p):
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=10", str(p)], check=True)

    job = {"kind": "slideshow", "inputs": {"images": ["a.png", "b.jpg"], "audio": "song.wav"},
           "params": {"slides": ["Holiday 2026"], "seconds_per_slide": 1.2, "width": 320, "height": 240, "fps": 10}}
    _folder(spool_root / "inbox", "holiday", job, {"a.png": photo("red"), "b.jpg": photo("blue"), "song.wav": music})
    doc = wait_status(spool_root, "holiday", timeout=120, daemon=daemon)
    assert doc["state"] == "completed", doc
    out = spool_root / "outbox" / "holiday"
    info = ffprobe(out / "video.mp4")
    streams = {s["codec_type"]: s for s in info["streams"]}
    v, a = streams["video"], streams["audio"]
    assert v["codec_name"] == "h264" and v["pix_fmt"] == "yuv420p"
    assert (v["width"], v["height"]) == (320, 240) and v["avg_frame_rate"] == "10/1"
    assert int(v["nb_frames"]) == 36
    assert abs(float(info["format"]["duration"]) - 3.6) < 0.15
    assert a["codec_name"] == "aac" and int(a["channels"]) == 2
    assert doc["result"]["video"]["width"] == 320 and doc["result"]["video"]["codec"] == "h264"
    assert abs(doc["result"]["video"]["duration"] - 3.6) < 0.15 and doc["result"]["audio"]["sample_rate"] == 48000
    names = {f["name"] for f in doc["result"]["files"]}
    assert names == {"video.mp4", "thumb.jpg"}
    assert Image.open(out / "thumb.jpg").format == "JPEG"
    assert sorted(os.listdir(out / "input")) == ["a.png", "b.jpg", "job.json", "song.wav"]


def test_title_cards_only_have_no_audio_stream(daemon, spool_root):
    job = {"kind": "slideshow", "params": {"slides": ["One", "Two"], "seconds_per_slide": 1, "transition": "cut",
                                             "width": 160, "height": 90, "fps": 5}}
    _folder(spool_root / "inbox", "titles", job, {})
    doc = wait_status(spool_root, "titles", timeout=120, daemon=daemon)
    assert doc["state"] == "completed", doc
    info = ffprobe(spool_root / "outbox" / "titles" / "video.mp4")
    assert [s["codec_type"] for s in info["streams"]] == ["video"]
    assert doc["result"]["audio"] is None


def test_a_broken_image_fails_with_unsupported_input(daemon, spool_root):
    job = {"kind": "slideshow", "inputs": {"images": ["bad.png"]}, "params": {"width": 160, "height": 90}}
    _folder(spool_root / "inbox", "broken", job, {"bad.png": lambda p: p.write_bytes(b"not a png at all")})
    doc = wait_status(spool_root, "broken", timeout=60, daemon=daemon)
    assert doc["state"] == "failed" and doc["error"]["code"] == "unsupported_input"
    assert "bad.png" in doc["error"]["message"]
    assert (spool_root / "outbox" / "broken" / "input" / "bad.png").read_bytes() == b"not a png at all"
