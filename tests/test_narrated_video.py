"""narrated-video through a real daemon: streams, captions, library clips, music ducking, bad input."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from pipeline.kinds.narrated_video import DUCKED_GAIN, MUSIC_GAIN, PEAK_LIMIT, duck_envelope, mix_music
from pipeline.speech.engine import Segment
from pipeline.speech.subtitles import parse_srt
from tests.support import Daemon, drop_folder, drop_json, wait_all_final

W, H, FPS = 320, 180, 10
TEXT = "The quick brown fox jumps over the lazy dog. Then it ran home!"
MUSIC_TEXT = "Music plays under this sentence.\n\nAnd under this one too."
SINE_HZ, SINE_AMPLITUDE = 440, 0.125  # ffmpeg's sine source: 1/8 full scale


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def clip(path, color: str) -> bytes:
    ffmpeg("-f", "lavfi", "-i", f"color=c={color}:s=160x90:r=10:d=1", "-pix_fmt", "yuv420p", str(path))
    return path.read_bytes()


def ffprobe(path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def frames(path) -> np.ndarray:
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, H, W, 3)


def audio(path, rate: int = 48000) -> np.ndarray:
    """The first channel (both carry the same mix), as decoded by the ffmpeg command line."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a", "-f", "f32le", "-ar", str(rate), "-"],
                         capture_output=True, check=True).stdout
    samples = np.frombuffer(out, "<f4")
    channels = 2 if str(path).endswith(".mp4") else 1
    return samples.reshape(-1, channels)[:, 0]


def tone_level(samples: np.ndarray, start: float, end: float, rate: int = 48000) -> float:
    """Amplitude of the SINE_HZ component in [start, end) seconds (a lock-in measurement)."""
    part = samples[int(start * rate): int(end * rate)].astype(np.float64)
    t = np.arange(len(part)) / rate
    return float(2 * abs(np.mean(part * np.exp(-2j * np.pi * SINE_HZ * t))))


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("library")
    clip(folder / "fox.mp4", "red")
    clip(folder / "ocean.mp4", "blue")
    (folder / "ocean.tags").write_text("sea, waves water")
    return folder


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, library):
    root = tmp_path_factory.mktemp("narrated") / "spool"
    d = Daemon(root, workers=["cpu", "cpu"]).start(env={"VIDSPOOL_MEDIA_LIBRARY": str(library)})
    scratch = tmp_path_factory.mktemp("inputs")
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency={SINE_HZ}:duration=30", str(scratch / "song.wav"))
    small = {"width": W, "height": H, "fps": FPS}
    inbox = root / "inbox"
    drop_json(inbox, "burn", {"kind": "narrated-video", "params": {"text": TEXT, **small}})
    drop_json(inbox, "srt", {"kind": "narrated-video", "params": {"text": TEXT, "captions": "srt", **small}})
    drop_json(inbox, "library", {"kind": "narrated-video", "params": {
        "text": "A fox runs. The ocean waves.", "background": "library", "captions": "none", **small}})
    drop_folder(inbox, "music", {"kind": "narrated-video", "inputs": {"music": "song.wav"},
                                 "params": {"text": MUSIC_TEXT, "captions": "none", **small}},
                {"song.wav": (scratch / "song.wav").read_bytes()})
    drop_json(inbox, "empty", {"kind": "narrated-video", "params": {"text": "   ", **small}})
    drop_json(inbox, "badvoice", {"kind": "narrated-video", "params": {"text": "Hello.", "voice": "xx-nope", **small}})
    drop_folder(inbox, "badmusic", {"kind": "narrated-video", "inputs": {"music": "song.mp3"},
                                    "params": {"text": "Hello there.", **small}},
                {"song.mp3": b"ID3 this is not an mp3 at all" * 10})
    drop_json(inbox, "generate", {"kind": "narrated-video", "params": {"text": "Hello.", "background": "generate", **small}})
    ids = ["burn", "srt", "library", "music", "empty", "badvoice", "badmusic", "generate"]
    done = wait_all_final(root, ids, timeout=80, daemon=d)
    yield root / "outbox", done
    d.stop()


def test_video_has_h264_aac_and_subtitles_matching_the_speech(jobs):
    outbox, done = jobs
    doc = done["burn"]
    assert doc["state"] == "completed", doc
    out = outbox / "burn"
    info = ffprobe(out / "video.mp4")
    codecs = {s["codec_type"]: s["codec_name"] for s in info["streams"]}
    assert codecs == {"video": "h264", "audio": "aac", "subtitle": "mov_text"}
    speech_seconds = doc["result"]["speech"]["duration"]
    assert abs(float(info["format"]["duration"]) - speech_seconds) <= 0.5
    assert doc["result"]["video"]["width"] == W and doc["result"]["audio"]["sample_rate"] == 48000
    assert {f["name"] for f in doc["result"]["files"]} == {"video.mp4", "speech.wav", "thumb.jpg", "captions.srt",
                                                           "captions.vtt"}
    srt = parse_srt((out / "captions.srt").read_text())
    vtt = (out / "captions.vtt").read_text()
    assert vtt.startswith("WEBVTT") and vtt.count("-->") == len(srt)
    # split_cues may cut a long sentence; every cue is a piece of one sentence, in order.
    assert len(srt) >= doc["result"]["speech"]["sentences"] == 2
    assert " ".join(c.text for c in srt) == TEXT
    assert all(a.end <= b.start for a, b in zip(srt, srt[1:])) and srt[-1].end <= speech_seconds + 0.01
    # The soft track carries the same cues.
    track = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out / "video.mp4"), "-map", "0:s", "-f", "srt", "-"],
                           capture_output=True, text=True, check=True).stdout
    assert [c.text for c in parse_srt(track)] == [c.text for c in srt]
    assert {"speech", "captions", "backgrounds", "rendering", "encoding"} <= doc["result"]["seconds"].keys()


def test_burned_captions_change_only_the_bottom(jobs):
    outbox, done = jobs
    assert done["srt"]["state"] == "completed", done["srt"]
    assert {"captions.srt", "captions.vtt"} <= {f["name"] for f in done["srt"]["result"]["files"]}
    burned, plain = frames(outbox / "burn" / "video.mp4"), frames(outbox / "srt" / "video.mp4")
    assert burned.shape == plain.shape
    cue = parse_srt((outbox / "burn" / "captions.srt").read_text())[0]
    index = int((cue.start + cue.end) / 2 * FPS)
    diff = np.abs(burned[index].astype(int) - plain[index].astype(int)).max(axis=2)
    assert diff[: H // 3].max() <= 6  # encoder noise only
    assert (diff[H // 2:] > 60).mean() > 0.02  # white text with a dark outline
    assert "subtitle" in {s["codec_type"] for s in ffprobe(outbox / "srt" / "video.mp4")["streams"]}


def test_library_background_uses_the_matching_clip(jobs):
    outbox, done = jobs
    doc = done["library"]
    assert doc["state"] == "completed", doc
    scenes = doc["result"]["scenes"]
    assert [s["source"] for s in scenes] == ["fox.mp4", "ocean.mp4"]
    assert not (outbox / "library" / "captions.srt").exists()
    assert [s["codec_type"] for s in ffprobe(outbox / "library" / "video.mp4")["streams"]] == ["video", "audio"]
    video = frames(outbox / "library" / "video.mp4")
    for scene, (r, b) in zip(scenes, ((1, 0), (0, 1))):
        first, last = int(scene["start"] * FPS) + 1, int(scene["end"] * FPS) - 1
        for frame in video[first:last]:
            mean = frame.reshape(-1, 3).mean(axis=0)
            assert (mean[0] > 150) == bool(r) and (mean[2] > 150) == bool(b) and mean[1] < 60, (scene, mean)


def test_music_ducks_under_speech(jobs):
    outbox, done = jobs
    doc = done["music"]
    assert doc["state"] == "completed", doc
    samples = audio(outbox / "music" / "video.mp4")
    assert np.abs(samples).max() <= 1.0
    srt_like = doc["result"]["scenes"]
    first_end, second_start = srt_like[0]["end"], srt_like[1]["start"]
    # The second scene starts when its sentence does; the paragraph pause (0.5 s) before it is music only.
    speech = audio(outbox / "music" / "speech.wav")
    spoken = [s for s in doc["result"]["scenes"]]
    assert len(spoken) == 2 and first_end == second_start
    pause_mid = second_start - 0.25
    open_level = tone_level(samples, pause_mid - 0.05, pause_mid + 0.05)
    ducked_level = tone_level(samples, 0.4, 1.0)
    assert ducked_level == pytest.approx(SINE_AMPLITUDE * DUCKED_GAIN, rel=0.35)
    assert open_level > 1.8 * ducked_level, (open_level, ducked_level)
    assert len(speech) > 0


def test_duck_envelope_and_peak_limit():
    rate = 1000
    segments = [Segment("a", 1.0, 2.0), Segment("b", 3.0, 4.0)]
    gain = duck_envelope(segments, 5 * rate, rate)
    assert gain[500] == pytest.approx(MUSIC_GAIN) and gain[4900] == pytest.approx(MUSIC_GAIN)
    assert gain[1000:2000].max() == pytest.approx(DUCKED_GAIN, abs=1e-3)
    ramp = np.flatnonzero((gain[:1000] < MUSIC_GAIN - 1e-3))
    assert 0.15 <= (1000 - ramp[0]) / rate <= 0.25  # ~0.2 s ramp, done when the sentence starts
    voice = np.full((2, 48000), 0.9, np.float32)
    music = np.full((2, 48000), 0.9, np.float32)
    mixed = mix_music(voice, music, [Segment("x", 0.5, 0.6)], 2.0)
    assert mixed.shape == (2, 96000) and np.abs(mixed).max() <= PEAK_LIMIT + 1e-6
    assert mixed[0, -100] > 0.3  # the music loops past its end


def test_bad_input_fails_with_a_code_and_a_message(jobs):
    _, done = jobs
    expected = {
        "empty": ("invalid_job", "nothing to speak"),
        "badvoice": ("invalid_job", "xx-nope"),
        "badmusic": ("unsupported_input", "song.mp3"),
        "generate": ("model_not_found", "text-to-video model"),
    }
    for job_id, (code, words) in expected.items():
        doc = done[job_id]
        assert doc["state"] == "failed" and doc["error"]["code"] == code, (job_id, doc)
        assert words in doc["error"]["message"], (job_id, doc["error"])
    assert done["empty"]["started_at"] is None and done["badvoice"]["started_at"] is None  # refused at accept
