"""Running under systemd: sd_notify, drain on SIGTERM, reload on SIGHUP, config errors,
no torch in the daemon, and a unit file systemd accepts."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.support import REPO, Daemon, base_env, drop_json, status, wait_status


def test_sd_notify_ready_status_watchdog_reloading_stopping(spool_root, tmp_path):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    d = Daemon(spool_root).start(env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"})
    messages: list[str] = []

    def collect(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                messages.append(sock.recv(4096).decode())
            except socket.timeout:
                pass

    try:
        collect(1.5)
        drop_json(spool_root / "inbox", "n1", {"kind": "probe"})
        wait_status(spool_root, "n1", daemon=d)
        collect(1.0)
        d.proc.send_signal(signal.SIGHUP)
        collect(1.0)
    finally:
        assert d.stop() == 0
        collect(0.5)
        sock.close()
    text = "\n".join(messages)
    assert "READY=1" in text and "WATCHDOG=1" in text
    assert any(m.startswith("STATUS=") and "queued" in m and "running" in m for m in text.splitlines())
    assert "RELOADING=1" in text and "MONOTONIC_USEC=" in text
    assert "STOPPING=1" in text
    assert text.index("READY=1") < text.index("RELOADING=1") < text.index("STOPPING=1")


def test_sigterm_lets_a_running_job_finish_within_drain(spool_root):
    d = Daemon(spool_root, VIDSPOOL_WORKERS__DRAIN_SECONDS="10").start()
    drop_json(spool_root / "inbox", "finishing", {"kind": "probe", "params": {"seconds": 1.5}})
    wait_status(spool_root, "finishing", {"running"}, daemon=d)
    assert d.stop() == 0
    assert status(spool_root, "finishing")["state"] == "completed"
    assert d.heartbeat["state"] == "stopped"


def test_sigterm_requeues_what_outlives_the_drain_and_a_restart_runs_it(spool_root):
    d = Daemon(spool_root, VIDSPOOL_WORKERS__DRAIN_SECONDS="0.5").start()
    drop_json(spool_root / "inbox", "toolong", {"kind": "probe", "params": {"seconds": 30}})
    drop_json(spool_root / "inbox", "waiting", {"kind": "probe"})
    wait_status(spool_root, "toolong", {"running"}, daemon=d)
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 8
    doc = status(spool_root, "toolong")
    assert doc["state"] == "queued" and "shutdown" in doc["message"]
    assert os.listdir(spool_root / "queue")
    d2 = Daemon(spool_root).start()
    try:
        wait_status(spool_root, "toolong", {"running"}, daemon=d2)
        assert status(spool_root, "toolong")["attempt"] == 1  # the drained attempt did not count
    finally:
        d2.stop()


def test_sighup_reloads_presets(spool_root, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[spool]\nroot = "unused"\n')
    d = Daemon(spool_root).start(env={})
    d.stop()
    d = Daemon(spool_root)
    d.proc = subprocess.Popen([sys.executable, "-m", "daemon", "--config", str(config), "run"], cwd=REPO,
                              env=base_env(**d.settings), stdout=open(d.log_path, "ab"), stderr=subprocess.STDOUT)
    try:
        d.wait_ready()
        assert not (spool_root / "inbox" / "fast").exists()
        config.write_text('[presets.fast]\nkind = "probe"\npriority = 5\nparams = { seconds = 0.1 }\n')
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not (spool_root / "inbox" / "fast").is_dir():
            assert time.monotonic() < deadline, d.log()
            time.sleep(0.05)
        drop_json(spool_root / "inbox" / "fast", "viapreset", {})
        doc = wait_status(spool_root, "viapreset", daemon=d)
        assert doc["state"] == "completed" and doc["job"]["priority"] == 5 and doc["job"]["params"]["seconds"] == 0.1
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("env, words", [
    ({"VIDSPOOL_WORKERS__CPU_WORKERS": "0"}, "workers.cpu_workers"),
    ({"VIDSPOOL_WORKERS__DEVICES": '["tpu:0"]'}, "workers.devices"),
    ({"VIDSPOOL_SPOOL__STABLE_SECONDS": "soon"}, "spool.stable_seconds"),
])
def test_bad_config_stops_start_up_with_one_clear_message(env, words, tmp_path):
    out = subprocess.run([sys.executable, "-m", "daemon", "run"], cwd=REPO, env=base_env(**env),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert words in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_unknown_key_in_config_file_is_named(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[spool]\nroot = 'x'\nstabel_seconds = 3\n")
    out = subprocess.run([sys.executable, "-m", "daemon", "--config", str(config), "doctor"], cwd=REPO,
                         env=base_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "spool.stabel_seconds: unknown key" in out.stderr


def test_daemon_process_never_loads_torch(daemon, spool_root):
    drop_json(spool_root / "inbox", "t1", {"kind": "probe"})
    drop_json(spool_root / "inbox", "t2", {"kind": "slideshow", "params": {"slides": ["hi"], "width": 160, "height": 120, "seconds_per_slide": 0.4}})
    for job_id in ("t1", "t2"):
        assert wait_status(spool_root, job_id, daemon=daemon, timeout=120)["state"] == "completed"
    maps = open(f"/proc/{daemon.proc.pid}/maps").read()
    assert "torch" not in maps and "diffusers" not in maps
    code = ("import sys, daemon.arbiter, daemon.http.api, daemon.cli.commands, pipeline.kinds as k; k.load_kinds();"
            "bad = [m for m in ('torch', 'diffusers', 'TTS', 'transformers') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=base_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is installed by scripts/test-setup.sh"
    # The unit as scripts/install-systemd.sh installs it for this checkout.
    subprocess.run(["bash", str(REPO / "scripts" / "install-systemd.sh"), "--render", str(tmp_path)], check=True)
    unit = tmp_path / "vidspool.service"
    assert str(REPO / ".venv" / "bin" / "vidspool") in unit.read_text()
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [l for l in (out.stdout + out.stderr).splitlines() if "vidspool" in l]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr
    text = unit.read_text()
    for needed in ("Type=notify", "KillMode=mixed", "WatchdogSec=", "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "/dev/nvidia"):
        assert needed in text
