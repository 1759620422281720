#!/usr/bin/env python
"""Speech benchmarks (`make bench`): espeak-ng's real-time factor and narrated-video render
speed, both through a real daemon (tests/support.py `Daemon`) on this machine.

  tts            a 200-word text, speed 1, wav: seconds of audio per second of synthesis
  narrated-video 1280×720, 30 fps, burned captions, colour background: seconds of video
                 per second of rendering (the `rendering` + `encoding` stages), and of the
                 whole job; and the same with the `images` background (pan and zoom over five
                 real photos at 1920×1080)

Prints a table and writes bench/out/speech.json.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import Daemon, drop_folder, drop_json, wait_status  # noqa: E402

STORY = (
    "Once upon a time, a small fox lived at the edge of a great forest. Every morning it ran down to the "
    "river to watch the fish jump in the cold water. The birds in the tall trees sang to the rising sun, and "
    "the fox listened for a while before going on. One day the river was gone, and only dry stones were left "
    "where the water had been. The fox was worried, so it set out to find where the river had gone. It walked "
    "for three days through fields, villages and hills, asking every animal it met. At last an old heron told "
    "it that a beaver family had built a dam far upstream. The fox thanked the heron and hurried on. When it "
    "reached the dam, it found the beavers busy and proud of their new home. The fox explained that the whole "
    "valley below was thirsty, and the beavers agreed to open a gate in their dam. The river came back, the "
    "fish returned, and every morning after that the fox and the beavers met at the water to talk."
)
RENDER_TARGET = 4.0


def pictures() -> dict[str, bytes]:
    """Five real photos (scikit-image's public-domain samples) as 1920×1080 JPEGs."""
    from io import BytesIO

    from PIL import Image
    from skimage import data

    out = {}
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"):
        image = Image.fromarray(getattr(data, name)()).convert("RGB").resize((1920, 1080), Image.Resampling.BICUBIC)
        buf = BytesIO()
        image.save(buf, format="JPEG", quality=90)
        out[f"{name}.jpg"] = buf.getvalue()
    return out


def run_job(d: Daemon, job_id: str, job: dict, files: dict[str, bytes] | None = None) -> dict:
    if files:
        drop_folder(d.root / "inbox", job_id, job, files)
    else:
        drop_json(d.root / "inbox", job_id, job)
    doc = wait_status(d.root, job_id, timeout=600, daemon=d)
    if doc["state"] != "completed":
        raise SystemExit(f"{job_id}: {doc['state']} {doc['error']}")
    return doc


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="vidspool-speechbench-"))
    d = Daemon(work / "spool", host="bench-host", workers=["cpu"]).start()
    try:
        words = len(STORY.split())
        run_job(d, "warm", {"kind": "tts", "params": {"text": "Warming up."}})
        tts = run_job(d, "tts", {"kind": "tts", "params": {"text": STORY}})
        audio = tts["result"]["audio"]["duration"]
        synthesis = tts["result"]["seconds"]["synthesis"]
        video = run_job(d, "story", {"kind": "narrated-video", "params": {
            "text": STORY, "width": 1280, "height": 720, "fps": 30, "captions": "both", "background": "color"}})
        seconds = video["result"]["seconds"]
        length = video["result"]["video"]["duration"]
        render = seconds.get("rendering", 0) + seconds.get("encoding", 0)
        total = video["result"]["seconds"].get("run") or sum(v for v in seconds.values() if isinstance(v, (int, float)))
        photos = pictures()
        images = run_job(d, "images", {"kind": "narrated-video", "inputs": {"images": sorted(photos)}, "params": {
            "text": STORY, "width": 1280, "height": 720, "fps": 30, "captions": "both", "background": "images"}}, photos)
        image_seconds = images["result"]["seconds"]
        image_render = image_seconds.get("rendering", 0) + image_seconds.get("encoding", 0)
    finally:
        d.stop()
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "words": words, "tts_audio_s": audio, "tts_synthesis_s": synthesis, "espeak_realtime_factor": round(audio / synthesis, 1),
        "video_s": length, "stage_seconds": seconds, "render_s": round(render, 3),
        "render_speed_x": round(length / render, 2), "job_speed_x": round(length / total, 2),
        "render_target_x": RENDER_TARGET,
        "images_stage_seconds": image_seconds, "images_render_speed_x": round(images["result"]["video"]["duration"] / image_render, 2),
    }
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "speech.json").write_text(json.dumps(results, indent=1))
    print(f"espeak-ng, {words} words: {audio:.1f} s of audio in {synthesis:.2f} s = {results['espeak_realtime_factor']}x real time")
    verdict = "PASS" if results["render_speed_x"] >= RENDER_TARGET else "MISS"
    print(f"narrated-video 1280x720 30 fps, burned captions, colour: {length:.1f} s of video; rendering+encoding "
          f"{render:.2f} s = {results['render_speed_x']}x real time (target >= {RENDER_TARGET}x: {verdict}); "
          f"whole job {results['job_speed_x']}x")
    print(f"stages: {json.dumps(seconds)}")
    print(f"same with background 'images' (pan and zoom): rendering+encoding {image_render:.2f} s = "
          f"{results['images_render_speed_x']}x real time; stages: {json.dumps(image_seconds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
