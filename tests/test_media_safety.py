"""Media inputs are read only as plain files of an accepted format (issue 25, item 1).

An HLS playlist or an ffconcat list, under any name (.m3u8, .mp3, .mp4, .txt, .ts, .wav …),
naming a real media file outside the spool or a URL on an http:// canary served here on
loopback, must never be followed: FFmpeg left to guess a format reads the host's files
(Debian's ffprobe even opens a playlist named .mp4, or one behind an ID3 tag) and fetches
URLs. Every kind and every personality that takes media is fed them through a real daemon
with real FFmpeg and PyAV: each job fails `unsupported_input` naming the input (at intake,
or, for a playlist behind an ID3 tag that passes for MP3 there, when the worker opens it
with the MP3 demuxer forced), each upload a front reads itself is refused in the seed's
error shape, and the canary sees no request. Genuine files of every accepted format still
run (slideshow for images and audio, talking-head faces for video, coqui cloning from a
FLAC and from HeyGem's uploaded MP4). The workers' openers are also called directly, each
with every hostile file, and the forced demuxer is shown to hold without the sniffing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from contract.errors import ErrorCode, JobError
from contract.input_formats import FORMATS, MP3, Format, MediaRefused
from tests.support import REPO, Daemon, drop_folder, status, wait_all_final

# Names a hostile file is given, and what each payload is called in messages.
NAMES = (".m3u8", ".mp3", ".mp4", ".txt", ".ts", ".wav", ".png", ".mkv")
PAYLOAD_WORDS = {"hls-file": "is an HLS playlist, not a media file", "hls-http": "is an HLS playlist, not a media file",
                 "concat-file": "is an ffconcat list, not a media file", "concat-http": "is an ffconcat list, not a media file"}
SAY = "Hello there."


# -- the outside world: a file outside the spool, and a canary on loopback -----------------------------
class Canary:
    """An HTTP server on loopback that records every request it gets (serving the secret)."""

    def __init__(self, body: bytes):
        requests_seen: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                requests_seen.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.requests = requests_seen
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """Real media outside any spool: what a playlist would make the host read."""
    folder = tmp_path_factory.mktemp("outside")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-f", "lavfi", "-i", "sine=frequency=300",
           "-t", "1", "-c:v", "mpeg2video", "-c:a", "aac", "-f", "mpegts", str(folder / "secret.ts"))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300", "-t", "1", str(folder / "secret.wav"))
    return folder


@pytest.fixture(scope="module")
def canary(outside):
    server = Canary((outside / "secret.ts").read_bytes())
    yield server
    server.stop()


def payloads(outside: Path, canary: Canary) -> dict[str, bytes]:
    def hls(segment: str) -> bytes:
        return (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
                f"#EXTINF:1.0,\n{segment}\n#EXT-X-ENDLIST\n").encode()

    return {"hls-file": hls(str(outside / "secret.ts")), "hls-http": hls(f"{canary.url}/secret.ts"),
            "concat-file": f"ffconcat version 1.0\nfile '{outside / 'secret.wav'}'\n".encode(),
            "concat-http": f"ffconcat version 1.0\nfile '{canary.url}/secret.wav'\n".encode()}


def id3_playlist(outside: Path) -> bytes:
    """A playlist behind an empty ID3v2 tag: the sniffing takes it for MP3, Debian's FFmpeg
    (probing past the tag) for HLS; only the forced MP3 demuxer stops it."""
    return b"ID3\x04\x00\x00\x00\x00\x00\x00" + payloads_hls_file(outside)


def payloads_hls_file(outside: Path) -> bytes:
    return (f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n{outside / 'secret.ts'}\n#EXT-X-ENDLIST\n").encode()


# -- genuine media of every accepted format -------------------------------------------------------------
@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> dict[str, bytes]:
    """A face photo in every image format, the face as a short video in every video
    container, a second of tone in every audio format."""
    from skimage import data

    folder = tmp_path_factory.mktemp("genuine")
    face = Image.fromarray(np.ascontiguousarray(data.astronaut()[20:340, 100:420])).resize((192, 192))
    for ext, fmt in (("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"), ("bmp", "BMP"), ("gif", "GIF")):
        face.save(folder / f"face.{ext}", format=fmt)
    video = {"mp4": ["-c:v", "libx264"], "mov": ["-c:v", "libx264"], "mkv": ["-c:v", "libx264"],
             "webm": ["-c:v", "libvpx", "-b:v", "200k"], "avi": ["-c:v", "mpeg4"], "ts": ["-c:v", "mpeg2video"]}
    for ext, codec in video.items():
        ffmpeg("-loop", "1", "-framerate", "10", "-i", str(folder / "face.png"), "-f", "lavfi", "-i", "sine=frequency=220",
               "-t", "0.8", *codec, "-pix_fmt", "yuv420p", "-c:a", "libvorbis" if ext == "webm" else "aac",
               str(folder / f"face.{ext}"))
    audio = {"mp3": [], "wav": [], "flac": [], "ogg": [], "aac": [], "m4a": [], "weba": ["-c:a", "libopus", "-f", "webm"]}
    for ext, codec in audio.items():
        ffmpeg("-f", "lavfi", "-i", "sine=frequency=440", "-t", "1", *codec, str(folder / f"tone.{ext}"))
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def yourtts(tmp_path_factory) -> Path:
    """The tiny random-weight coqui YourTTS folder (a speaker encoder: it clones)."""
    root = tmp_path_factory.mktemp("tts")
    subprocess.run([sys.executable, str(REPO / "scripts" / "tiny_tts_models.py"), str(root)], check=True,
                   capture_output=True)
    return root / "yourtts"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, tiny_models, yourtts):
    """One daemon for the module: tiny Wan models for image- and video-to-video, a coqui
    voice that clones, and the four personalities that take media on loopback."""
    base = tmp_path_factory.mktemp("media-safety")
    models = {"tiny-wan-t2v": {"path": str(tiny_models / "wan-t2v")}, "tiny-wan-i2v": {"path": str(tiny_models / "wan-i2v")}}
    kinds = {"image-to-video": {"model": "tiny-wan-i2v"}, "video-to-video": {"model": "tiny-wan-t2v"}}
    presets = {"wan-tiny": {"kind": "video-to-video", "params": {"width": 32, "height": 32, "num_inference_steps": 2}}}
    d = Daemon(base / "spool", workers=["cpu", "cpu"], VIDSPOOL_MODELS=json.dumps(models),
               VIDSPOOL_KINDS=json.dumps(kinds), VIDSPOOL_PRESETS=json.dumps(presets),
               VIDSPOOL_VOICES=json.dumps({"cloner": {"engine": "coqui", "model": str(yourtts)}}),
               VIDSPOOL_COMPAT__HEYGEM__LISTEN="127.0.0.1:0", VIDSPOOL_COMPAT__HEYGEM__VOICE="cloner",
               VIDSPOOL_COMPAT__PAKSATALKER__LISTEN="127.0.0.1:0", VIDSPOOL_COMPAT__VISUALIZR__LISTEN="127.0.0.1:0",
               VIDSPOOL_COMPAT__WAN__LISTEN="127.0.0.1:0", VIDSPOOL_COMPAT__WAN__PRESET="wan-tiny").start()
    yield d
    d.stop()


def urls(d: Daemon) -> dict[str, str]:
    return d.heartbeat["compat_urls"]


# -- native jobs: every kind's every media input ------------------------------------------------------------
# (kind, the hostile input, params, the genuine inputs beside it, the extension a hostile file may not have)
MEDIA_INPUTS = [
    ("image-to-video", "image", {"prompt": "a fox", "width": 32, "height": 32, "num_frames": 5, "num_inference_steps": 1}, {}),
    ("video-to-video", "video", {"prompt": "a fox", "num_inference_steps": 1}, {}),
    ("tts", "reference_audio", {"text": SAY, "voice": "cloner"}, {}),
    ("narrated-video", "images", {"text": SAY, "background": "images", "width": 64, "height": 36, "fps": 5}, {}),
    ("narrated-video", "music", {"text": SAY, "width": 64, "height": 36, "fps": 5, "captions": "none"}, {}),
    ("talking-head", "face", {"text": SAY, "lipsync": "none"}, {}),
    ("talking-head", "audio", {"lipsync": "none"}, {"face": "face.png"}),
    ("talking-head", "reference_audio", {"text": SAY, "voice": "cloner", "lipsync": "none"}, {"face": "face.png"}),
    ("slideshow", "images", {"width": 64, "height": 36, "fps": 5}, {}),
    ("slideshow", "audio", {"width": 64, "height": 36, "fps": 5}, {"images": ["face.png"]}),
]
LISTS = ("images",)  # inputs that take a list of files
AUDIO_INPUTS = ("reference_audio", "music", "audio")


@pytest.fixture(scope="module")
def hostile_jobs(daemon, outside, canary, genuine) -> dict[str, tuple[str, str, dict]]:
    """Every media input of every kind fed every payload (names rotating over NAMES) and
    the playlist behind an ID3 tag; all dropped at once. job id -> (input, file, final status)."""
    inbox = daemon.root / "inbox"
    hostile = {**payloads(outside, canary), "id3-hls": id3_playlist(outside)}
    dropped: dict[str, tuple[str, str, str]] = {}
    for i, (kind, name, params, beside) in enumerate(MEDIA_INPUTS):
        for j, (payload, content) in enumerate(hostile.items()):
            file = f"{name}{NAMES[(i + j) % len(NAMES)]}"
            job_id = f"h{i}-{payload}"
            inputs = {**beside, name: [file] if name in LISTS else file}
            files = {file: content, **{n: genuine[n] for v in beside.values() for n in ([v] if isinstance(v, str) else v)}}
            drop_folder(inbox, job_id, {"kind": kind, "params": params, "inputs": inputs}, files)
            dropped[job_id] = (name, file, payload)
    done = wait_all_final(daemon.root, list(dropped), timeout=240, daemon=daemon)
    return {job_id: (name, file, payload, done[job_id]) for job_id, (name, file, payload) in dropped.items()}


def test_every_kind_refuses_playlists_and_lists_at_intake(hostile_jobs, canary, daemon):
    for job_id, (name, file, payload, doc) in hostile_jobs.items():
        if payload == "id3-hls":
            continue
        assert doc["state"] == "failed" and doc["error"]["code"] == "unsupported_input", (job_id, doc)
        assert doc["error"]["message"] == f"inputs.{name}: {file!r} {PAYLOAD_WORDS[payload]}", (job_id, doc["error"])
        assert "started_at" not in doc or doc["started_at"] is None, doc  # refused before any worker saw it
        assert (daemon.root / "outbox" / job_id / "input" / file).is_file()  # kept, the user's
    assert canary.requests == []


def test_a_playlist_behind_an_id3_tag_stops_at_the_forced_demuxer(hostile_jobs, canary):
    """It passes for MP3 at intake; the worker opens it with the MP3 demuxer forced, which
    reads no playlist. (Guessing, Debian's FFmpeg follows it, see the next test; so did coqui's
    loader, given the reference recording by name: the tts job completed in the secret's voice.)"""
    for job_id, (name, file, payload, doc) in hostile_jobs.items():
        if payload != "id3-hls":
            continue
        assert doc["state"] == "failed" and doc["error"]["code"] == "unsupported_input", (job_id, doc)
        message = doc["error"]["message"]
        if name in AUDIO_INPUTS:  # decoded by the worker, and refused there
            assert message.startswith(f"{file}: not readable audio ("), (job_id, message)
            assert doc["started_at"], doc
        else:  # MP3 is no image or video
            assert message.startswith(f"inputs.{name}: {file!r} is not a readable "), (job_id, message)
            assert "(it is MP3; vidspool accepts " in message, message
    assert canary.requests == []


def test_debian_ffprobe_would_have_followed_them(outside, tmp_path):
    """The defect, on this machine's FFmpeg: guessing, it opens each as a playlist."""
    for name, content in (("speech.mp4", payloads_hls_file(outside)), ("voice.mp3", id3_playlist(outside))):
        (tmp_path / name).write_bytes(content)
        out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=format_name", "-of", "json",
                              str(tmp_path / name)], capture_output=True, text=True)
        assert json.loads(out.stdout or "{}").get("format", {}).get("format_name") == "hls", out


# -- genuine files of every accepted format still run --------------------------------------------------------
@pytest.fixture(scope="module")
def genuine_jobs(daemon, genuine) -> dict[str, dict]:
    inbox = daemon.root / "inbox"
    jobs: dict[str, tuple[dict, dict]] = {}
    images = ["face.png", "face.jpg", "face.webp", "face.bmp", "face.gif"]
    for ext in ("mp3", "wav", "flac", "ogg", "aac", "m4a", "weba"):
        shown = {"images": images if ext == "wav" else ["face.png"], "audio": f"tone.{ext}"}
        jobs[f"g-audio-{ext}"] = ({"kind": "slideshow", "params": {"width": 64, "height": 36, "fps": 5}, "inputs": shown},
                                  {n: genuine[n] for n in [*shown["images"], shown["audio"]]})
    for ext in ("mp4", "mov", "mkv", "webm", "avi", "ts"):
        jobs[f"g-video-{ext}"] = ({"kind": "talking-head", "params": {"text": "Hi.", "lipsync": "none"},
                                   "inputs": {"face": f"face.{ext}"}}, {f"face.{ext}": genuine[f"face.{ext}"]})
    jobs["g-clone-flac"] = ({"kind": "tts", "params": {"text": SAY, "voice": "cloner"},
                             "inputs": {"reference_audio": "me.flac"}}, {"me.flac": genuine["tone.flac"]})
    for job_id, (doc, files) in jobs.items():
        drop_folder(inbox, job_id, doc, files)
    return wait_all_final(daemon.root, list(jobs), timeout=300, daemon=daemon)


def test_every_accepted_format_still_runs(genuine_jobs):
    for job_id, doc in genuine_jobs.items():
        assert doc["state"] == "completed", (job_id, doc.get("error"))
    for ext in ("mp3", "wav", "flac", "ogg", "aac", "m4a", "weba"):
        assert genuine_jobs[f"g-audio-{ext}"]["result"]["audio"] is not None, ext
    assert genuine_jobs["g-audio-wav"]["result"]["video"]["duration"] >= 0.9
    for ext in ("mp4", "mov", "mkv", "webm", "avi", "ts"):
        face = genuine_jobs[f"g-video-{ext}"]["result"]["face"]
        assert face["source_frames"] > 1, (ext, face)  # read as a video, every container
    assert genuine_jobs["g-clone-flac"]["result"]["speech"]["voice"] == "cloned"


# -- the personalities ----------------------------------------------------------------------------------------
def test_heygem_refuses_a_playlist_upload_with_a_400(daemon, outside, canary, genuine):
    url = urls(daemon)["heygem"]
    hostile = {**payloads(outside, canary), "id3-hls": id3_playlist(outside)}
    for i, (payload, content) in enumerate(hostile.items()):
        name = f"my_video{('.mp4', '.mkv', '.mov', '.avi')[i % 4]}"
        r = requests.post(f"{url}/api/generate", data={"text": SAY}, files={"video": (name, content)}, timeout=30)
        assert r.status_code == 400, (payload, r.text)
        body = r.json()
        assert body["success"] is False and body["error"].startswith("video: video."), body
        assert PAYLOAD_WORDS.get(payload, "(it is MP3; vidspool accepts MP4/MOV/M4A") in body["error"], body
    assert canary.requests == []
    assert not [p for p in (daemon.root / "inbox").iterdir() if p.name.startswith(".api-")]  # staging removed


def test_heygem_clones_the_voice_of_a_genuine_upload(daemon, genuine):
    """The upload's sound, extracted by ffmpeg reading it as daemon.http.compat.ffmpeg_input does, is the
    reference recording; coqui gets it as the plain WAV the worker writes."""
    url = urls(daemon)["heygem"]
    r = requests.post(f"{url}/api/generate", data={"text": SAY}, files={"video": ("my_video.mp4", genuine["face.mp4"])},
                      timeout=30)
    assert r.status_code == 200, r.text
    task_id = r.json()["task_id"]
    doc = wait_all_final(daemon.root, [task_id], timeout=240, daemon=daemon)[task_id]
    assert doc["state"] == "completed", doc.get("error")
    assert doc["job"]["inputs"]["reference_audio"] == "reference_audio.wav", doc["job"]
    assert doc["result"]["speech"]["voice"] == "cloned"


def test_paksatalker_refuses_images_and_audio(daemon, outside, canary, genuine):
    """A hostile image or audio is refused 415 before any job (the daemon's intake check, made
    by the front); the ID3-wrapped playlist, which sniffs as MP3, fails its job."""
    url = urls(daemon)["paksatalker"] + "/api/v1/generate/fusion-video"
    face = ("face.png", genuine["face.png"])
    for i, (payload, content) in enumerate(payloads(outside, canary).items()):
        name = NAMES[i]
        r = requests.post(url, files={"image": (f"photo{name}", content), "audio": ("speech.wav", genuine["tone.wav"])},
                          timeout=30)
        assert r.status_code == 415, (payload, r.text)
        assert r.json()["detail"].startswith("image: image") and PAYLOAD_WORDS[payload] in r.json()["detail"], r.json()
        r = requests.post(url, files={"image": face, "audio": (f"speech{name}", content)}, timeout=30)
        assert r.status_code == 415, (payload, r.text)
        assert r.json()["detail"].startswith("inputs.audio: 'audio.") and PAYLOAD_WORDS[payload] in r.json()["detail"]
    r = requests.post(url, files={"image": face, "audio": ("speech.mp3", id3_playlist(outside))}, timeout=30)
    task_id = r.json()["task_id"]
    done = wait_all_final(daemon.root, [task_id], timeout=120, daemon=daemon)[task_id]
    assert done["state"] == "failed" and done["error"]["code"] == "unsupported_input", done["error"]
    assert done["error"]["message"].startswith("audio.mp3: not readable audio ("), done["error"]
    assert canary.requests == []


def test_visualizr_refuses_a_playlist_image(daemon, outside, canary):
    url = urls(daemon)["visualizr"] + "/api/v1/generate/video/from-image"
    for i, (payload, content) in enumerate(payloads(outside, canary).items()):
        r = requests.post(url, files={"image": (f"photo{NAMES[i]}", content)}, timeout=30)
        assert r.status_code == 400, (payload, r.text)
        error = r.json()["error"]
        assert error["code"] == "INVALID_PARAMETERS", error
        assert error["message"].startswith("inputs.image: 'image.") and PAYLOAD_WORDS[payload] in error["message"], error
    assert canary.requests == []


def test_wan_refuses_playlist_images_and_videos(daemon, outside, canary, genuine):
    base = urls(daemon)["wan"] + "/api/v1/generate"
    for i, (payload, content) in enumerate(payloads(outside, canary).items()):
        r = requests.post(f"{base}/image-to-video", files={"image": (f"photo{NAMES[i]}", content)},
                          data={"prompt": "a fox"}, timeout=30)
        assert r.status_code == 400, (payload, r.text)
        assert r.json()["error"].startswith("Invalid request: inputs.image: 'image.") and PAYLOAD_WORDS[payload] in r.text
        # video-to-video: ffprobe would read it in the front; it never starts for one
        r = requests.post(f"{base}/video-to-video", files={"video": (f"clip{NAMES[-1 - i]}", content)},
                          data={"prompt": "a fox"}, timeout=30)
        assert r.status_code == 400, (payload, r.text)
        assert r.json() == {"error": f"Invalid request: video: video{NAMES[-1 - i]} {PAYLOAD_WORDS[payload]}"}, r.json()
    assert canary.requests == []


def test_wan_still_probes_a_genuine_video(daemon, genuine):
    """ffprobe reads the upload through the descriptor, its demuxer forced (a 200: a video it
    could not read is a 400); the MP4's 8 frames are fitted to Wan2.1's 4k+1 in the notes."""
    base = urls(daemon)["wan"]
    for ext in ("mp4", "mkv", "avi", "ts"):
        r = requests.post(f"{base}/api/v1/generate/video-to-video", files={"video": (f"clip.{ext}", genuine[f"face.{ext}"])},
                          data={"prompt": "a fox"}, timeout=30)
        assert r.status_code == 200, (ext, r.text)
        job_id = r.json()["job_id"]
        requests.delete(f"{daemon.api}/api/v1/jobs/{job_id}", timeout=10)  # its run is not what is tested
        if ext == "mp4":
            labels = requests.get(f"{daemon.api}/api/v1/jobs/{job_id}", timeout=10).json()["labels"]
            assert "video frames 8→5" in labels.get("compat_adjusted", ""), labels


# -- the workers' openers, called directly -------------------------------------------------------------------
def openers():
    from pipeline import backgrounds, media
    from pipeline.faces.source import load_face_source

    return {"load_audio": lambda p: media.load_audio(p), "load_image": lambda p: media.load_image(p),
            "read_video_frames": lambda p: media.read_video_frames(p, 3), "probe": media.probe,
            "clip_loop": lambda p: backgrounds.ClipLoop(p, 32, 32, 10).frame(0),
            "face": lambda p: load_face_source(p, 3)}


def test_every_opener_refuses_every_hostile_file(outside, canary, tmp_path):
    hostile = payloads(outside, canary)
    for opener, open_it in openers().items():
        for i, (payload, content) in enumerate(hostile.items()):
            for name in (f"in{NAMES[i]}", f"in{NAMES[i + 4]}"):
                path = tmp_path / name
                path.write_bytes(content)
                with pytest.raises(JobError) as caught:
                    open_it(path)
                assert caught.value.code == ErrorCode.UNSUPPORTED_INPUT, (opener, name)
                assert f"{name} {PAYLOAD_WORDS[payload]}" in caught.value.message, (opener, caught.value.message)
    assert canary.requests == []


def test_the_openers_read_every_accepted_format(genuine, tmp_path):
    from pipeline import media
    from pipeline.faces.source import load_face_source

    for name, content in genuine.items():
        (tmp_path / name).write_bytes(content)
    for ext in ("mp3", "wav", "flac", "ogg", "aac", "m4a", "weba"):
        assert media.load_audio(tmp_path / f"tone.{ext}").shape[1] > 40_000, ext
    for ext in ("png", "jpg", "webp", "bmp", "gif"):
        assert media.load_image(tmp_path / f"face.{ext}").size == (192, 192), ext
        assert not load_face_source(tmp_path / f"face.{ext}", 3).is_video
    for ext in ("mp4", "mov", "mkv", "webm", "avi", "ts"):
        assert len(media.read_video_frames(tmp_path / f"face.{ext}", 3)[0]) == 3, ext
        assert load_face_source(tmp_path / f"face.{ext}", 3).is_video, ext
        assert media.probe(tmp_path / f"face.{ext}")["video"]["width"] == 192, ext


def test_a_link_or_a_fifo_is_not_opened(genuine, tmp_path):
    from pipeline import media

    (tmp_path / "tone.wav").write_bytes(genuine["tone.wav"])
    (tmp_path / "link.wav").symlink_to(tmp_path / "tone.wav")
    os.mkfifo(tmp_path / "pipe.wav")
    for name, words in (("link.wav", "is a symbolic link"), ("pipe.wav", "is not a regular file")):
        with pytest.raises(JobError) as caught:
            media.load_audio(tmp_path / name)
        assert caught.value.message.startswith(f"{name} {words}"), caught.value.message


def test_the_forced_demuxer_holds_without_the_sniffing(outside, canary, tmp_path):
    """Past the first-bytes check, a forced demuxer reads no playlist, and even a demuxer
    that names other files (HLS, forced here on purpose) gets none opened."""
    import av

    from pipeline.media import demux_file

    behind_id3 = tmp_path / "voice.mp3"
    behind_id3.write_bytes(id3_playlist(outside))
    with open(behind_id3, "rb") as file, pytest.raises(av.FFmpegError):
        demux_file(file, MP3)
    hls = Format("HLS", frozenset({"audio"}), demuxer="hls")
    for payload in ("hls-file", "hls-http"):
        path = tmp_path / f"{payload}.m3u8"
        path.write_bytes(payloads(outside, canary)[payload])
        with open(path, "rb") as file, pytest.raises(av.PermissionError, match="never one it names"):
            with demux_file(file, hls) as container:
                list(container.decode(audio=0))
    assert canary.requests == []


def test_ffmpeg_command_line_reads_only_the_checked_file(outside, canary, genuine, tmp_path):
    from daemon.http.compat.ffmpeg_input import run_on_file

    async def probe(path: Path):
        return await run_on_file("ffprobe", path, ("video",), ["-v", "error"],
                                 ["-show_entries", "format=format_name", "-of", "json"], 30)

    for i, (payload, content) in enumerate(payloads(outside, canary).items()):
        path = tmp_path / f"upload{NAMES[i]}"
        path.write_bytes(content)
        with pytest.raises(MediaRefused) as caught:
            asyncio.run(probe(path))
        assert caught.value.reason == PAYLOAD_WORDS[payload]
    names = {"mp4": "mov,mp4,m4a,3gp,3g2,mj2", "mkv": "matroska,webm", "avi": "avi", "ts": "mpegts"}
    for ext, format_name in names.items():
        (tmp_path / f"face.{ext}").write_bytes(genuine[f"face.{ext}"])
        code, out, _ = asyncio.run(probe(tmp_path / f"face.{ext}"))
        assert code == 0 and json.loads(out)["format"]["format_name"] == format_name, (ext, out)
    assert canary.requests == []


def test_the_format_list_is_what_the_readme_says():
    readme = (REPO / "README.md").read_text()
    for media in ("image", "video", "audio"):
        labels = ", ".join(f.label for f in FORMATS if media in f.media)
        assert labels in readme, (media, labels)


def test_pillow_reads_only_the_listed_image_formats(tmp_path):
    """Pillow knows some 40 formats, EPS among them (it runs Ghostscript where installed):
    an image input is one of five, whatever its name."""
    from pipeline import media

    picture = Image.new("RGB", (16, 16), "red")
    for fmt in ("EPS", "TIFF", "PPM", "TGA"):
        path = tmp_path / f"{fmt.lower()}.png"
        picture.save(path, format=fmt)
        with pytest.raises(JobError) as caught:
            media.load_image(path)
        assert caught.value.message.startswith(f"{path.name} is not a readable image ("), caught.value.message
