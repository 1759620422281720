"""`vidspool doctor`: checks config, tools, devices and the spool filesystem's semantics."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from daemon.config import Settings
from daemon.devices import visible_gpus, worker_devices
from daemon.fsops import create_exclusive, mkdir_exclusive, move


def filesystem_type(path: Path) -> str:
    """The type of the mount holding `path`, from /proc/mounts (longest matching prefix)."""
    path = os.path.realpath(path)
    best, fstype = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, fstype = mnt, parts[2]
    except OSError:
        pass
    return fstype


def check_spool_semantics(root: Path) -> list[tuple[bool, str]]:
    """Exercises the only primitives vidspool coordinates with: create-new, mkdir, rename."""
    results = []
    probe = root / f".doctor-{secrets.token_hex(4)}"
    try:
        os.mkdir(probe)
    except OSError as exc:
        return [(False, f"cannot create a folder in {root}: {exc}")]
    try:
        f = probe / "claim"
        first, second = create_exclusive(f, b"a"), create_exclusive(f, b"b")
        results.append((first and not second and f.read_bytes() == b"a",
                        "create-new is exclusive (second O_EXCL create refused)"))
        d = probe / "dir"
        results.append((mkdir_exclusive(d) and not mkdir_exclusive(d), "mkdir is exclusive"))
        src, dst = probe / "src", probe / "dst"
        os.mkdir(src)
        (src / "x").write_bytes(b"x")
        moved = move(src, dst)
        again = move(src, probe / "dst2")
        results.append((moved and not again and (dst / "x").exists() and not src.exists(),
                        "rename of a folder moves it once; a second rename of the same source finds it gone"))
        os.mkdir(src)
        try:
            os.rename(src, dst)  # dst is a non-empty folder: must fail
            refused = False
        except OSError as exc:
            refused = exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EPERM)
        results.append((refused, "rename onto a non-empty folder is refused"))
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return results


def run_doctor(settings: Settings, config_source: str) -> int:
    ok = True

    def report(good: bool, what: str, warn: bool = False) -> None:
        nonlocal ok
        mark = "ok  " if good else ("warn" if warn else "FAIL")
        if not good and not warn:
            ok = False
        print(f"[{mark}] {what}")

    report(True, f"config loaded from {config_source}")
    for tool in ("ffmpeg", "ffprobe", "espeak-ng"):
        path = shutil.which(tool)
        version = ""
        if path:
            out = subprocess.run([path, "-version" if tool.startswith("ff") else "--version"], capture_output=True, text=True)
            version = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""
        report(path is not None, f"{tool}: {version or 'not found (apt-get install ' + ('ffmpeg' if tool.startswith('ff') else tool) + ')'}")
    gpus = visible_gpus()
    report(True, f"GPUs: {', '.join(g['name'] + ' (' + str(g['memory_total_mb']) + ' MB)' for g in gpus) or 'none (CPU workers)'}")
    report(True, f"workers: {', '.join(worker_devices(settings.workers.devices, settings.workers.cpu_workers))}")
    for name, model in settings.models.items():
        where = model.path or model.repo
        present = bool(model.path and Path(model.path).is_dir())
        report(present or model.repo is not None, f"model {name}: {where}" + ("" if present else " (not on disk)"), warn=True)
    root = settings.spool.root
    if not root.exists():
        report(False, f"spool {root} does not exist (run: vidspool init)")
        return 1
    report(os.access(root, os.W_OK), f"spool {root.absolute()} is writable")
    report(True, f"spool filesystem: {filesystem_type(root)}")
    for good, what in check_spool_semantics(root):
        report(good, what)
    return 0 if ok else 1
