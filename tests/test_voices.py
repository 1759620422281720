"""Voices and languages: [voices.NAME] from config plus espeak-ng's, over the API and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support import REPO, Daemon, base_env, drop_json, wait_status

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


def espeak_calls(log: Path, argument: str) -> int:
    return log.read_text().splitlines().count(argument) if log.exists() else 0


def test_espeak_ng_lists_its_voices_again_only_when_its_voice_folders_change(tmp_path):
    """/voices answers from a kept list: espeak-ng (behind a wrapper that logs each call,
    earlier on the daemon's PATH) runs again only when a folder of its voices changes."""
    espeak = shutil.which("espeak-ng")
    version = subprocess.run([espeak, "--version"], capture_output=True, text=True, check=True).stdout
    real = Path(version.split("Data at:")[1].strip())
    data = tmp_path / "espeak" / "espeak-ng-data"  # the real data, with a lang/ folder of our own
    data.mkdir(parents=True)
    for entry in real.iterdir():
        if entry.name == "lang":
            shutil.copytree(entry, data / "lang")
        else:
            (data / entry.name).symlink_to(entry)
    calls = tmp_path / "espeak-calls.log"
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    (wrappers / "espeak-ng").write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {espeak} "$@"\n')
    (wrappers / "espeak-ng").chmod(0o755)
    d = Daemon(tmp_path / "spool", workers=["cpu"]).start(
        env={"PATH": f"{wrappers}:{os.environ['PATH']}", "ESPEAK_DATA_PATH": str(data.parent)})
    try:
        def listed() -> list[str]:
            return [v["id"] for v in get(d.api, "/api/v1/voices")["voices"]]

        first = listed()
        assert "en-us" in first and espeak_calls(calls, "--voices") == 1, calls.read_text()
        assert listed() == first and get(d.api, "/api/v1/languages")["languages"]
        assert espeak_calls(calls, "--voices") == 1, "the second request ran espeak-ng again"
        speak = {"kind": "tts", "params": {"text": "Hello there.", "voice": "en-vidspool"}}
        drop_json(d.root / "inbox", "unknown-voice", speak)
        refused = wait_status(d.root, "unknown-voice", daemon=d)
        assert refused["error"]["code"] == "invalid_job" and "en-vidspool" in refused["error"]["message"], refused
        # A voice file copied into one of espeak-ng's voice folders: listed at the next
        # request, and a job may name it (the daemon checks voices with a list of its own).
        (data / "lang" / "art" / "en-vidspool").write_text("name Test Voice\nlanguage en-vidspool\n\nphonemes en\ndictionary en\n")
        assert "en-vidspool" in listed() and espeak_calls(calls, "--voices") >= 2
        runs = espeak_calls(calls, "--voices")
        assert "en-vidspool" in listed() and espeak_calls(calls, "--voices") == runs
        drop_json(d.root / "inbox", "new-voice", speak)
        spoken = wait_status(d.root, "new-voice", daemon=d)
        assert spoken["state"] == "completed" and spoken["result"]["speech"]["voice"] == "en-vidspool", spoken["error"]
        (data / "lang" / "art" / "en-vidspool").unlink()
        assert "en-vidspool" not in listed()
    finally:
        d.stop()
