"""Voices and languages: [voices.NAME] from config plus espeak-ng's, over the API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from tests.support import REPO, Daemon, base_env

NARRATOR = {"narrator": {"voice": "en-us+m3", "language": "en-us", "description": "Story narrator"}}


def get(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.loads(r.read())


def test_voices_and_languages_endpoints(tmp_path):
    d = Daemon(tmp_path / "spool", workers=["cpu"], VIDSPOOL_VOICES=json.dumps(NARRATOR)).start()
    try:
        voices = get(d.api, "/api/v1/voices")["voices"]
        assert voices[0] == {"id": "narrator", "name": "Story narrator", "language": "en-us", "engine": "espeak",
                             "gender": None, "configured": True, "cloning": False}
        espeak = [v for v in voices if v["engine"] == "espeak" and not v["configured"]]
        assert len(espeak) > 100, "every language espeak-ng has"
        german = get(d.api, "/api/v1/voices?language=de")["voices"]
        assert german and all(v["language"].split("-")[0] == "de" for v in german)
        languages = get(d.api, "/api/v1/languages")["languages"]
        codes = [lang["code"] for lang in languages]
        assert codes == sorted(codes, key=str.lower) and len(codes) > 100
        counts = {lang["code"]: lang["voices"] for lang in languages}
        assert counts["en-us"] >= 2 and counts["de"] >= 1  # the narrator speaks en-us too
        assert sum(counts.values()) == len(voices)
    finally:
        d.stop()


def test_voices_command(tmp_path):
    env = base_env(VIDSPOOL_VOICES=json.dumps(NARRATOR))
    out = subprocess.run([sys.executable, "-m", "daemon", "voices", "--language", "en"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("narrator") and "config" in lines[0]
    assert any(line.startswith("en-gb") for line in lines)
    out = subprocess.run([sys.executable, "-m", "daemon", "voices", "--languages"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and any(line.split()[0] == "fr-fr" for line in out.stdout.splitlines())
