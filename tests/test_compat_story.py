"""The Story personality (seed 001) through a real daemon: the document's four curl lines
run by the shell and its Python example run with `requests`, as written (only the base URL
and the example job id changed), ending in MP4s checked with ffprobe; the progress stages
while polling; every documented error; /jobs.

For speed the personality's preset makes tiny videos (160×90 at 5 fps).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.support import Daemon

SEED_BASE = "http://localhost:5000/api/v1"
EXAMPLE_ID = "550e8400-e29b-41d4-a716-446655440000"
# The usage examples of the seed's document, as written.
CURL_GENERATE = """curl -X POST http://localhost:5000/api/v1/generate \\
  -H "Content-Type: application/json" \\
  -d '{"text": "Once upon a time, in a faraway land..."}'"""
CURL_STATUS = "curl http://localhost:5000/api/v1/status/550e8400-e29b-41d4-a716-446655440000"
CURL_DOWNLOAD = """curl http://localhost:5000/api/v1/download/550e8400-e29b-41d4-a716-446655440000 \\
  --output video.mp4"""
CURL_JOBS = "curl http://localhost:5000/api/v1/jobs"
PYTHON_EXAMPLE = """import requests
import time

# Start video generation
response = requests.post(
    'http://localhost:5000/api/v1/generate',
    json={'text': 'Once upon a time, in a faraway land...'}
)
job_id = response.json()['job_id']

# Poll for status
while True:
    status_response = requests.get(f'http://localhost:5000/api/v1/status/{job_id}')
    status_data = status_response.json()

    if status_data['status'] in ['completed', 'failed']:
        break

    print(f"Progress: {status_data['progress']}% - {status_data['message']}")
    time.sleep(2)

# Download video if completed
if status_data['status'] == 'completed':
    video_response = requests.get(f'http://localhost:5000/api/v1/download/{job_id}')
    with open('output_video.mp4', 'wb') as f:
        f.write(video_response.content)
"""
# The document's progress stages and, for each, the message its status shows.
STAGES = {0: "Job queued", 20: "Generating audio...", 40: "Generating captions...",
          60: "Generating video search queries...", 80: "Fetching background videos...", 90: "Rendering video...",
          100: "Video generation completed"}
STORY = ("The fox woke early. It ran across the snowy field. A crow watched from the old oak. "
         "Then the fox went home to sleep.")


def streams(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    return {s["codec_type"]: s for s in json.loads(out.stdout)["streams"]}


def curl(line: str, url: str, cwd: Path, job_id: str | None = None) -> str:
    line = line.replace(SEED_BASE, url)
    if job_id:
        line = line.replace(EXAMPLE_ID, job_id)
    return subprocess.run(line, shell=True, cwd=cwd, capture_output=True, text=True, timeout=60, check=True).stdout


def wait_done(url: str, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = requests.get(f"{url}/status/{job_id}", timeout=10).json()
        if doc["status"] in ("completed", "failed"):
            return doc
        time.sleep(0.1)
    raise AssertionError(f"{job_id} not done: {doc}")


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    presets = {"tiny-story": {"kind": "narrated-video", "params": {"width": 160, "height": 90, "fps": 5}}}
    d = Daemon(tmp_path_factory.mktemp("story") / "spool", VIDSPOOL_PRESETS=json.dumps(presets),
               VIDSPOOL_COMPAT__STORY__LISTEN="127.0.0.1:0", VIDSPOOL_COMPAT__STORY__PRESET="tiny-story").start()
    yield d, d.heartbeat["compat_urls"]["story"] + "/api/v1"
    d.stop()


@pytest.fixture(scope="module")
def curled(story, tmp_path_factory):
    """The four curl lines as written: generate, status until completed, download, jobs."""
    d, url = story
    cwd = tmp_path_factory.mktemp("story-curl")
    answer = json.loads(curl(CURL_GENERATE, url, cwd))
    job_id = answer["job_id"]
    deadline = time.monotonic() + 180
    while (status := json.loads(curl(CURL_STATUS, url, cwd, job_id)))["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    curl(CURL_DOWNLOAD, url, cwd, job_id)
    jobs = json.loads(curl(CURL_JOBS, url, cwd))
    return {"answer": answer, "status": status, "video": cwd / "video.mp4", "jobs": jobs, "daemon": d}


def test_the_documented_curl_lines(curled):
    answer = curled["answer"]
    assert set(answer) == {"job_id", "status", "message"}
    assert answer["status"] == "queued" and answer["message"] == "Video generation started"
    assert str(uuid.UUID(answer["job_id"])) == answer["job_id"]
    status = curled["status"]
    assert status["status"] == "completed", (status, curled["daemon"].log())
    assert status["progress"] == 100 and status["message"] == "Video generation completed"
    assert isinstance(status["created_at"], int) and abs(status["created_at"] - time.time()) < 600
    probed = streams(curled["video"])
    assert probed["video"]["codec_name"] == "h264" and probed["audio"]["codec_name"] == "aac"
    assert (int(probed["video"]["width"]), int(probed["video"]["height"])) == (160, 90)  # the preset's size


def test_jobs_is_keyed_by_id_with_output_file(curled):
    job_id = curled["answer"]["job_id"]
    jobs = curled["jobs"]
    assert set(jobs) == {"jobs"} and isinstance(jobs["jobs"], dict)
    entry = jobs["jobs"][job_id]
    assert {"status", "progress", "message", "created_at", "logs", "output_file"} <= set(entry)
    assert entry["status"] == "completed" and entry["output_file"] == f"output/video_{job_id}.mp4"
    assert entry["logs"][:2] == ["Starting audio generation...", "Audio generation completed"]


def test_the_python_example_as_written(story, tmp_path):
    d, url = story
    script = PYTHON_EXAMPLE.replace(SEED_BASE, url)
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    for line in run.stdout.splitlines():
        assert re.fullmatch(r"Progress: (\d+)% - (.+)", line) and STAGES[int(line.split()[1][:-1])] in line, line
    probed = streams(tmp_path / "output_video.mp4")
    assert probed["video"]["codec_name"] == "h264" and probed["audio"]["codec_name"] == "aac"


def test_download_names_the_file(curled, story):
    d, url = story
    job_id = curled["answer"]["job_id"]
    r = requests.get(f"{url}/download/{job_id}", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "video/mp4"
    assert r.headers["Content-Disposition"] == f'attachment; filename="generated_video_{job_id}.mp4"'
    assert r.content == curled["video"].read_bytes()


def test_progress_stages_in_order_and_logs_growing(story):
    d, url = story
    r = requests.post(f"{url}/generate", json={"text": STORY}, timeout=10)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    seen = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        doc = requests.get(f"{url}/status/{job_id}", timeout=10).json()
        seen.append(doc)
        if doc["status"] in ("completed", "failed"):
            break
        time.sleep(0.02)
    assert seen[-1]["status"] == "completed", seen[-1]
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress), progress
    assert set(progress) <= set(STAGES), progress
    for s in seen:
        assert s["message"] == STAGES[s["progress"]], s
        assert set(s) >= {"status", "progress", "message", "created_at", "logs"}
        assert s["status"] == ("queued" if s["progress"] == 0 else "completed" if s["progress"] == 100 else "processing"), s
    assert len(set(progress) - {0, 100}) >= 2, f"polling every 20 ms saw too few stages: {sorted(set(progress))}"
    # Each poll's logs extend the previous ones: lines are only ever added.
    for before, after in zip(seen, seen[1:]):
        assert after["logs"][:len(before["logs"])] == before["logs"], (before["logs"], after["logs"])
    assert len(seen[-1]["logs"]) > len(seen[0]["logs"])
    assert seen[-1]["logs"][-1] == "Video generation completed"


def test_errors(story):
    d, url = story
    no_text = {"error": "No text provided in request body"}
    for body in ({}, {"text": ""}, {"text": "   "}, {"story": "hi"}):
        r = requests.post(f"{url}/generate", json=body, timeout=10)
        assert (r.status_code, r.json()) == (400, no_text), body
    r = requests.post(f"{url}/generate", data=b"", headers={"Content-Type": "application/json"}, timeout=10)
    assert (r.status_code, r.json()) == (400, no_text)
    unknown = str(uuid.uuid4())
    for path in (f"/status/{unknown}", f"/download/{unknown}"):
        r = requests.get(url + path, timeout=10)
        assert (r.status_code, r.json()) == (404, {"error": "Job not found"}), path
    # Two jobs back to back on one worker: the second is still waiting when asked for.
    first = requests.post(f"{url}/generate", json={"text": "One."}, timeout=10).json()["job_id"]
    second = requests.post(f"{url}/generate", json={"text": "Two."}, timeout=10).json()["job_id"]
    r = requests.get(f"{url}/download/{second}", timeout=10)
    assert (r.status_code, r.json()) == (400, {"error": "Video not ready for download"})
    for job_id in (first, second):
        assert wait_done(url, job_id)["status"] == "completed"
    assert requests.get(f"{url}/download/{second}", timeout=10).status_code == 200
