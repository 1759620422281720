#!/usr/bin/env python
"""Talking-head benchmark (`make bench`): a photo and 10 s of speech at 512×512, 25 fps,
through a real daemon with one CPU worker, with `lipsync` wav2lip (random weights of the
real size: the published network, 36.3 M parameters) and `none` (the rest of the job alone).

Reports frames per second of the `lipsync` stage, the whole job's speed against real time
and the worker's peak memory (ru_maxrss of the worker process, from /proc). MuseTalk at its
real size is a GPU model (seconds per frame on 2 CPU cores) and is not run here.

Prints a table and writes bench/out/talking_head.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from tests.support import Daemon, drop_folder, wait_status  # noqa: E402

SECONDS = 10.0
SIZE, FPS = 512, 25


def face_png() -> bytes:
    from PIL import Image
    from skimage import data

    buf = BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="PNG")
    return buf.getvalue()


def voice_wav(path: Path) -> bytes:
    # espeak-ng reading a text would do too; a fixed-length recording keeps the frame count exact.
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=frequency=180:duration={SECONDS}",
                    "-ac", "1", str(path)], check=True)
    return path.read_bytes()


def run(d: Daemon, job_id: str, lipsync: str, files: dict[str, bytes]) -> dict:
    drop_folder(d.root / "inbox", job_id, {"kind": "talking-head", "inputs": {"face": "face.png", "audio": "voice.wav"},
                                          "params": {"lipsync": lipsync, "width": SIZE, "height": SIZE, "fps": FPS}}, files)
    doc = wait_status(d.root, job_id, timeout=900, daemon=d)
    if doc["state"] != "completed":
        raise SystemExit(f"{job_id}: {doc['state']} {doc['error']}")
    return doc


def main() -> int:
    import tiny_wav2lip

    work = Path(tempfile.mkdtemp(prefix="vidspool-headbench-"))
    registry = work / "models"
    tiny_wav2lip.build(registry / "wav2lip")
    files = {"face.png": face_png(), "voice.wav": voice_wav(work / "voice.wav")}
    d = Daemon(work / "spool", host="bench-host", workers=["cpu"], VIDSPOOL_REGISTRY__DIR=str(registry)).start()
    results: dict = {"size": SIZE, "fps": FPS, "speech_seconds": SECONDS}
    try:
        run(d, "warm", "wav2lip", files)  # loads the model once: the runs below find it warm
        for lipsync in ("wav2lip", "none"):
            doc = run(d, f"run-{lipsync}", lipsync, files)
            seconds = doc["result"]["seconds"]
            frames = doc["result"]["video"]["frames"]
            total = seconds["run"]  # the worker's whole run of the job
            results[lipsync] = {"frames": frames, "stage_seconds": seconds,
                                "lipsync_fps": round(frames / seconds["lipsync"], 1),
                                "job_speed_x": round(SECONDS / total, 2)}
        results["worker_max_rss_mb"] = worker_peak_rss_mb(d)
    finally:
        d.stop()
        shutil.rmtree(work, ignore_errors=True)
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "talking_head.json").write_text(json.dumps(results, indent=1))
    for lipsync in ("wav2lip", "none"):
        r = results[lipsync]
        print(f"talking-head {SIZE}x{SIZE} {FPS} fps, {SECONDS:.0f} s, lipsync {lipsync}: {r['frames']} frames, "
              f"lipsync stage {r['lipsync_fps']} frames/s (lip sync + paste + encode), whole job {r['job_speed_x']}x real time; "
              f"stages {json.dumps(r['stage_seconds'])}")
    print(f"worker peak RSS: {results['worker_max_rss_mb']} MB")
    return 0


def worker_peak_rss_mb(d: Daemon) -> float | None:
    """The largest VmHWM among the daemon's child processes: its worker (the others, such
    as multiprocessing's resource tracker, are small)."""
    peaks = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            status = (pid_dir / "status").read_text()
        except OSError:
            continue
        if f"PPid:\t{d.proc.pid}\n" in status:
            peaks += [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")]
    return round(max(peaks) / 1024, 1) if peaks else None


if __name__ == "__main__":
    sys.exit(main())
