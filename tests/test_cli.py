"""The vidspool command line against a real daemon and a real spool."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.support import REPO, Daemon, base_env, wait_status


def vidspool(daemon_or_root, *args, timeout=120):
    root = daemon_or_root.root if isinstance(daemon_or_root, Daemon) else daemon_or_root
    env = base_env(VIDSPOOL_SPOOL__ROOT=str(root), VIDSPOOL_SPOOL__HOST="cli-host")
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_submit_wait_prints_the_final_status(daemon, tmp_path):
    job = tmp_path / "fox.json"
    job.write_text(json.dumps({"kind": "probe", "inputs": {"data": "blob.bin"}}))
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"b" * 10)
    out = vidspool(daemon, "submit", str(job), str(blob), "--wait")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.splitlines()[0]
    assert job_id == "fox"  # the job file's name, as for any drop
    doc = json.loads(out.stdout[len(job_id) + 1:])
    assert doc["state"] == "completed" and doc["id"] == job_id
    assert "completed" in out.stderr
    # the same file again gets the next free id
    again = vidspool(daemon, "submit", str(job), str(blob))
    assert again.returncode == 0 and again.stdout.strip() == "fox-2"


def test_submit_with_an_explicit_id_that_collides(daemon, tmp_path):
    job = tmp_path / "j.json"
    job.write_text(json.dumps({"id": "fixed", "kind": "probe"}))
    first = vidspool(daemon, "submit", str(job), "--wait")
    second = vidspool(daemon, "submit", str(job), "--wait")
    assert first.returncode == second.returncode == 0
    assert first.stdout.splitlines()[0] == "fixed" and second.stdout.splitlines()[0] == "fixed-2"


def test_submit_wait_exits_non_zero_for_a_failed_job(daemon, tmp_path):
    job = tmp_path / "bad.json"
    job.write_text(json.dumps({"kind": "probe", "params": {"nope": 1}}))
    out = vidspool(daemon, "submit", str(job), "--wait")
    assert out.returncode == 1 and '"invalid_job"' in out.stdout


def test_status_and_cancel(daemon, tmp_path):
    job = tmp_path / "long.json"
    job.write_text(json.dumps({"id": "long", "kind": "probe", "params": {"seconds": 30}}))
    assert vidspool(daemon, "submit", str(job)).returncode == 0
    wait_status(daemon.root, "long", {"running"}, daemon=daemon)
    summary = json.loads(vidspool(daemon, "status").stdout)
    assert summary["running"]["test-host"] == ["long"] and summary["hosts"]["test-host"]["state"] == "running"
    assert json.loads(vidspool(daemon, "status", "long").stdout)["state"] == "running"
    out = vidspool(daemon, "cancel", "long")
    assert out.returncode == 0
    assert wait_status(daemon.root, "long", timeout=10, daemon=daemon)["state"] == "canceled"
    assert vidspool(daemon, "status", "nosuchjob").returncode == 1
    assert vidspool(daemon, "cancel", "nosuchjob").returncode == 1


def test_init_and_doctor_on_a_fresh_spool(tmp_path):
    root = tmp_path / "fresh"
    out = vidspool(root, "init")
    assert out.returncode == 0 and (root / "inbox" / "slideshow").is_dir() and (root / "queue").is_dir()
    out = vidspool(root, "doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[ok  ] create-new is exclusive" in out.stdout
    assert "[ok  ] rename of a folder moves it once" in out.stdout
    assert "spool filesystem:" in out.stdout and "ffmpeg" in out.stdout
    assert not [n for n in os.listdir(root) if n.startswith(".doctor")]


def test_doctor_fails_without_a_spool(tmp_path):
    out = vidspool(tmp_path / "missing", "doctor")
    assert out.returncode == 1 and "vidspool init" in out.stdout


def test_a_second_daemon_with_the_same_host_name_is_refused(daemon):
    twin = Daemon(daemon.root, host="test-host")
    twin.start(wait=False)
    deadline = time.monotonic() + 30
    while twin.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert twin.proc.returncode == 1
    assert "daemon.host_in_use" in twin.log()
    assert daemon.proc.poll() is None


@pytest.mark.parametrize("args", [("voices",), ("voices", "--languages"), ("models", "list"), ("status",),
                                  ("normalize", "It costs 3 km.")], ids=" ".join)
def test_a_reader_that_left_ends_a_command_quietly(tmp_path, args):
    """`vidspool voices | head`: the reader goes away before the command has written all;
    the command stops as Unix tools do (SIGPIPE's status, 141), with no traceback."""
    assert vidspool(tmp_path / "spool", "init").returncode == 0
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has left before the first line
    try:
        out = subprocess.run([sys.executable, "-m", "daemon", *args], cwd=REPO, stdout=write_end, stderr=subprocess.PIPE,
                             text=True, timeout=120, env=base_env(VIDSPOOL_SPOOL__ROOT=str(tmp_path / "spool")))
    finally:
        os.close(write_end)
    assert out.stderr == "" and out.returncode == 141, (out.returncode, out.stderr)


def test_the_config_in_the_current_folder_is_the_default_and_status_names_it(tmp_path):
    here = tmp_path / "project"
    here.mkdir()
    (here / "config.toml").write_text('[spool]\nroot = "my-spool"\n')
    env = base_env()  # no VIDSPOOL_* keys: the config file alone says where the spool is

    def run(*args, cwd=here):
        return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=120)

    assert run("init").returncode == 0 and (here / "my-spool" / "inbox").is_dir()
    summary = json.loads(run("status").stdout)
    assert summary["config"] == str(here / "config.toml") and summary["spool"] == str(here / "my-spool")
    # Elsewhere: --config FILE, else the install's config (here with the spool from the environment).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    summary = json.loads(run("--config", str(here / "config.toml"), "status", cwd=elsewhere).stdout)
    assert summary["config"] == str(here / "config.toml")
    env["VIDSPOOL_SPOOL__ROOT"] = str(here / "my-spool")
    summary = json.loads(run("status", cwd=elsewhere).stdout)
    assert summary["config"] == str(REPO / "config.toml") and summary["spool"] == str(here / "my-spool")
    assert f"config loaded from {here / 'config.toml'}" in run("doctor").stdout
