"""The README's curl lines, run as printed against a real daemon (issue 26 item 1).

Every `curl …` command in the README's code blocks (continuation lines joined) and in its
inline code is run through bash with real curl. Only the host and port (`localhost:PORT`
→ the daemon's, or the personality's whose seed port the line names), job ids (`ID`) and
model names (`NAME`) are substituted; `$H` is the README's own `H="Authorization: Bearer
$T"`. Each must answer below 400, so the README cannot drift from the API again.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.hubserver import HubServer
from tests.support import REPO, Daemon, drop_json, status, wait_for, wait_status

sys.path.insert(0, str(REPO / "scripts"))

README = REPO / "README.md"
TOKEN = "readme-token-0123456789"
DOWNLOAD_REPO = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"  # the README's example: a tiny Wan by that name
SLIDES = {"kind": "slideshow", "params": {"slides": ["A"], "seconds_per_slide": 1, "width": 64, "height": 64, "fps": 5}}


def readme_curl_lines(text: str) -> list[str]:
    """Each curl command of the README: fenced blocks with continuations joined, comments
    cut, plus inline code spans that start with `curl `."""
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M):
        logical = ""
        for line in block.splitlines():
            stripped = line.rstrip()
            if stripped.endswith("\\"):
                logical += stripped[:-1] + " "
                continue
            logical += line
            command = _without_comment(logical).strip()
            logical = ""
            if command.startswith("curl "):
                commands.append(command)
    for span in re.findall(r"`(curl [^`]+)`", text):
        if "localhost:" in span and span not in commands:  # a command, not prose naming an option
            commands.append(span.strip())
    return commands


def _without_comment(line: str) -> str:
    """The line up to a `#` that starts a shell comment (outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def test_the_readme_has_curl_lines_and_they_parse():
    commands = readme_curl_lines(README.read_text())
    assert len(commands) >= 25, commands
    for command in commands:
        shlex.split(command)  # a quoting mistake in the README fails here


@pytest.fixture(scope="module")
def hub(tiny_models):
    server = HubServer({DOWNLOAD_REPO: tiny_models / "wan-t2v"}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def readme_daemon(tmp_path_factory, tiny_models, hub):
    base = tmp_path_factory.mktemp("readme")
    registry = base / "models"
    registry.mkdir()
    os.symlink(tiny_models / "wan-t2v", registry / "tiny-wan")
    d = Daemon(base / "spool", workers=["cpu", "cpu"], **{
        "VIDSPOOL_PREVIEW__EVERY_STEPS": "1",
        "VIDSPOOL_REGISTRY__DIR": str(registry),
        "VIDSPOOL_REGISTRY__DOWNLOAD_ALLOW": json.dumps(["Wan-AI/*"]),
        "HF_HOME": str(base / "hf"), "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }).start()
    yield d
    d.stop()


def jobs_for(d: Daemon) -> dict[str, str]:
    """Ids the README's `ID` stands for, by what the line does: a completed slideshow (files,
    download, status), another completed one (its results deleted), a queued one (canceled),
    a long text-to-video job that is running with a live preview."""
    inbox = d.root / "inbox"
    drop_json(inbox, "readme-done", SLIDES)
    drop_json(inbox, "readme-purge", SLIDES)
    for job_id in ("readme-done", "readme-purge"):
        assert wait_status(d.root, job_id, timeout=120, daemon=d)["state"] == "completed"
    drop_json(inbox, "readme-running", {"kind": "text-to-video", "model": "tiny-wan", "params": {
        "prompt": "a fox", "width": 16, "height": 16, "num_frames": 5, "num_inference_steps": 1000}})
    wait_for(lambda: (status(d.root, "readme-running") or {}).get("preview"), 120, "a live preview")
    paused = urllib.request.Request(d.api + "/api/v1/pause", data=b"{}", method="POST",
                                    headers={"Content-Type": "application/json"})
    urllib.request.urlopen(paused, timeout=10).close()  # obeyed at once: the next one stays queued
    drop_json(inbox, "readme-queued", SLIDES)
    wait_status(d.root, "readme-queued", {"queued"}, daemon=d)
    return {"done": "readme-done", "purge": "readme-purge", "queued": "readme-queued", "running": "readme-running"}


def substituted(command: str, api: str, ids: dict[str, str]) -> str:
    port = api.rsplit(":", 1)[1]
    command = re.sub(r"\blocalhost:8080\b", f"127.0.0.1:{port}", command)
    if re.search(r"-X DELETE \S*/jobs/ID/results", command):
        job_id = ids["purge"]
    elif re.search(r"-X DELETE \S*/jobs/ID\b", command):
        job_id = ids["queued"]
    elif "/preview.jpg" in command:
        job_id = ids["running"]
    else:
        job_id = ids["done"]
    command = re.sub(r"(?<=/jobs/)ID\b", job_id, command).replace("?job=ID", f"?job={job_id}")
    return re.sub(r"(?<=/models/)NAME\b", "tiny-wan", command)


def test_every_readme_curl_line_works_as_printed(readme_daemon, tmp_path):
    d = readme_daemon
    ids = jobs_for(d)
    (tmp_path / "examples").symlink_to(REPO / "examples")  # -d @examples/… as from the repo's root
    failures = []
    for command in readme_curl_lines(README.read_text()):
        line = substituted(command, d.api, ids)
        streaming = " -N " in f" {line} "
        run = f'H="Authorization: Bearer $T"; {line} --max-time {3 if streaming else 60} -w "\\n__HTTP_%{{http_code}}__"'
        proc = subprocess.run(["bash", "-c", run], cwd=tmp_path, env={**os.environ, "T": TOKEN},
                              capture_output=True, text=True, timeout=90)
        found = re.search(r"__HTTP_(\d{3})__", proc.stdout)
        code = int(found.group(1)) if found else 0
        ok = 200 <= code < 400 and (proc.returncode == 0 or (streaming and proc.returncode == 28))
        if not ok:
            failures.append(f"{command}\n  → exit {proc.returncode}, HTTP {code}: {proc.stdout[-300:]} {proc.stderr[-300:]}")
    assert not failures, "README curl lines that fail as printed:\n" + "\n".join(failures)
