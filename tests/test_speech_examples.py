"""The speech examples in examples/ run on a fresh machine: tts, a narrated story on colour
cards, and a narrated story on the generated media library."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from tests.support import REPO, Daemon, wait_all_final


def test_speech_examples_run(tmp_path):
    library = tmp_path / "library"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_media_library.py"), str(library)], check=True,
                   capture_output=True)
    d = Daemon(tmp_path / "spool", workers=["cpu"], VIDSPOOL_MEDIA_LIBRARY=str(library)).start()
    try:
        names = ["tts-hello", "narrated-story", "narrated-library"]
        for name in names:
            job = json.loads((REPO / "examples" / f"{name}.json").read_text())
            if name == "narrated-story":  # the example is 1280×720 30 fps; smaller here for time
                job["params"].update(width=320, height=180, fps=10)
            tmp = d.root / "inbox" / f".{name}.json.part"
            tmp.write_text(json.dumps(job))
            tmp.rename(d.root / "inbox" / f"{name}.json")
        docs = wait_all_final(d.root, names, timeout=180, daemon=d)
    finally:
        d.stop()
    for name in names:
        assert docs[name]["state"] == "completed", (name, docs[name]["error"])
    tts = docs["tts-hello"]["result"]
    assert tts["audio"]["codec"] == "mp3" and tts["audio"]["duration"] > 3
    assert "seventeen point five kilometers per hour" in tts["speech"]["normalized_text"]
    sources = [s["source"] for s in docs["narrated-library"]["result"]["scenes"]]
    assert sources == ["fox.mp4", "river.mp4", "night.mp4"], sources
    shutil.rmtree(library)
