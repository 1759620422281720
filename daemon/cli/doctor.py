"""`vidspool doctor`: checks config, tools, devices and the spool filesystem's semantics."""

from __future__ import annotations

import os
import shutil
import subprocess

from contract.errors import JobError
from daemon.config import Settings
from daemon.spool.crashpoints import ENV as CRASH_ENV
from daemon.devices import visible_gpus, worker_devices
from daemon.spool.fscheck import check_primitives, classify, visibility_lag


def accelerate_problems(name: str, options, folder) -> list[str]:
    """What a model's accelerate options cannot do on this host or with this folder."""
    from contract.acceleration import attention_problem, cache_problem
    from contract.model_folders import read_index

    problems = []
    if options.attention != "default" and (why := attention_problem(options.attention)):
        problems.append(f"attention: {why}")
    try:
        index = read_index("", folder)
    except JobError:  # a lip-sync folder has no model_index.json
        index = {}
    if why := cache_problem(options.cache, index):
        problems.append(f"cache: {why}")
    elif options.cache is not None and options.cache.kind == "magcache" and options.cache.mag_ratios is None:
        problems.append(f"cache: magcache has no mag_ratios: run `vidspool models calibrate {name}`")
    return problems


def check_bucket(settings: Settings, report) -> None:
    """A bucket spool: its credentials, and the probe of the conditional requests it needs."""
    from statistics import median

    from daemon.bucket.errors import BucketError
    from daemon.bucket.probe import probe_bucket
    from daemon.bucket.store import BucketStore

    try:
        store = BucketStore(settings.bucket, settings.s3)
    except BucketError as exc:
        report(False, f"bucket {settings.bucket}: {exc}")
        return
    report(True, f"bucket {settings.bucket} at {settings.s3.endpoint_url or 'AWS S3'} ({store.region}), "
                 f"credentials from {store.credentials.source}")
    result = probe_bucket(store, settings.spool.host)
    for check in result.checks:
        report(check.ok, f"{check.name}: {check.message}", warn=check.warning)
    report(True, "round trips: " + ", ".join(f"{kind} {median(ms):.1f} ms" for kind, ms in result.latency_ms.items()))
    store.close()


def run_doctor(settings: Settings, config_source: str) -> int:
    ok = True

    def report(good: bool, what: str, warn: bool = False) -> None:
        nonlocal ok
        mark = "ok  " if good else ("warn" if warn else "FAIL")
        if not good and not warn:
            ok = False
        print(f"[{mark}] {what}")

    report(True, f"config loaded from {config_source}")
    armed = os.environ.get(CRASH_ENV)
    report(not armed, f"{CRASH_ENV} is not set" if not armed else (
        f"{CRASH_ENV}={armed} is set: a test-only setting that makes the daemon kill itself at a "
        "crash point; unset it (never use it in production)"))
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
    from contract.errors import JobError
    from contract.model_folders import describe_folder, model_folder

    for name, model in sorted(settings.models.items()):
        try:
            config = model.model_dump(mode="json")
            folder = model_folder(name, config)
            report(True, f"model {name}: {describe_folder(name, folder, config)} in {folder}")
        except JobError as exc:
            report(False, f"{exc.code}: {exc.message}", warn=True)
            continue
        for problem in accelerate_problems(name, model.accelerate, folder):
            report(False, f"[models.{name}] accelerate.{problem}")
    if settings.compat.enabled():
        from daemon.http.compat.readiness import findings
        from pipeline.kinds import load_kinds

        for found in findings(settings, load_kinds()):
            report(found.ok, f"compat.{found.personality}: {found.message}", warn=True)
    if settings.bucket is not None:
        check_bucket(settings, report)
        return 0 if ok else 1
    root = settings.spool.root
    if not root.exists():
        report(False, f"spool {root} does not exist (run: vidspool init)")
        return 1
    report(os.access(root, os.W_OK), f"spool {root.absolute()} is writable")
    fs = classify(root)
    shared = settings.spool.shared
    report(fs.shared_ok or shared is False, f"spool filesystem: {fs.fstype} ({fs.note})"
           + ("" if fs.shared_ok else "; shared (multi-host) use is refused, single-host use works"),
           warn=not fs.shared_ok and shared == "auto")
    for good, what in check_primitives(root):
        report(good, what)
    if settings.spool.probe_path:
        lag = visibility_lag(root, settings.spool.probe_path)
        report(lag is not None and lag < settings.spool.lease_seconds / 3,
               f"a new file shows through {settings.spool.probe_path} after "
               + (f"{lag * 1000:.0f} ms" if lag is not None else "more than 60 s (never)"))
    return 0 if ok else 1
