"""`vidspool models list|load|unload|import|download`: the registry from the command line.

list works without a daemon (it reads the config and looks at the folders); load, unload
and download ask the running daemon through its API with a token of the config (download:
from the Hugging Face hub into the hub cache, registered when complete; without a token it
presents the operator key, daemon/view/operator_key.py); import copies a downloaded model folder
into `[registry] dir`, where the running daemon finds it without a reload.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

from daemon.http.auth import load_tokens
from daemon.config import Settings
from daemon.view.operator_key import key_file, read_key
from daemon.registry import served_kinds
from daemon.view.modelview import model_entries
from contract.errors import JobError


def run(settings: Settings, args) -> int:
    return {"list": _list, "load": _load, "unload": _unload, "import": _import,
            "download": _download, "calibrate": _calibrate}[args.models_command](settings, args)


def api_call(settings: Settings, method: str, path: str, timeout: float = 5.0, body: dict | None = None,
             operator: bool = False) -> dict:
    """`operator`: with no token of the scope in the config, present the operator key
    (daemon/view/operator_key.py; downloads)."""
    host = "127.0.0.1" if settings.api.host in ("0.0.0.0", "::", "") else settings.api.host
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{host}:{settings.api.port}/api/v1{path}", data=data, method=method,
                                     headers={} if body is None else {"Content-Type": "application/json"})
    bearer = config_token(settings, "read" if method in ("GET", "HEAD") else "submit")
    if bearer is None and operator:
        bearer = _operator_key(settings)
    if bearer is not None:
        request.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        raise SystemExit(f"vidspool: {body.get('error', {}).get('message') or exc}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"the daemon's API at {host}:{settings.api.port} is not reachable ({exc})") from None


def config_token(settings: Settings, scope: str) -> str | None:
    """A token of `scope` from [api] tokens or tokens_file (when this user may read it)."""
    try:
        tokens = load_tokens(settings.api.tokens, settings.api.tokens_file)
    except (OSError, ValueError):
        tokens = load_tokens(settings.api.tokens, None)
    return next((t.secret.decode() for t in tokens if scope in t.scopes), None)


def _operator_key(settings: Settings) -> str | None:
    path = key_file(settings.registry.dir, settings.spool.host)
    try:
        return read_key(path)
    except PermissionError:
        print(f"vidspool: cannot read the operator key {path}: run this as the daemon's user "
              "(e.g. sudo -u vidspool vidspool …), or give an [api] token with the submit scope", file=sys.stderr)
        return None


def _list(settings: Settings, args) -> int:
    try:
        models = api_call(settings, "GET", "/models")["models"]
    except ConnectionError:
        models = model_entries(settings)  # no daemon: what the folders hold
    if not models:
        print(f"no models: add [models.NAME] to the config, or put model folders in {settings.registry.dir}/")
        return 0
    here = {m["name"]: m for m in model_entries(settings)}  # the API shows folders relative; the operator sees where
    for m in models:
        local = here.get(m["name"], m)
        where = local["folder"] or local["problem"]
        loaded = ", ".join(m.get("loaded_on") or []) or "-"
        kinds = ",".join(served_kinds(m)) or "not set (a job of any kind may name it)"
        print(f"{m['name']:<28} {'ok' if m['available'] else 'MISSING':<8} kinds={kinds} "
              f"loaded_on={loaded}\n    {where}")
    return 0 if all(m["available"] for m in models) else 1


def _load(settings: Settings, args) -> int:
    try:
        answer = api_call(settings, "POST", f"/models/{quote(args.name, safe='')}/load")
        print(f"{args.name}: loading on {answer['device']}")
        if not args.wait:
            return 0
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            view = {m["name"]: m for m in api_call(settings, "GET", "/models")["models"]}[args.name]
            if view["loaded_on"]:
                print(f"{args.name}: loaded on {', '.join(view['loaded_on'])}")
                return 0
            if not view["loading_on"]:
                print(f"vidspool: {args.name} did not load (see the daemon's log: model.load_failed)", file=sys.stderr)
                return 1
            time.sleep(0.5)
        print(f"vidspool: {args.name} still loading after {args.timeout:g} s", file=sys.stderr)
        return 1
    except ConnectionError as exc:
        print(f"vidspool: {exc}", file=sys.stderr)
        return 1


def _unload(settings: Settings, args) -> int:
    try:
        answer = api_call(settings, "POST", f"/models/{quote(args.name, safe='')}/unload")
    except ConnectionError as exc:
        print(f"vidspool: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name}: unloading on {', '.join(answer['devices']) or 'no worker (it was not loaded)'}")
    return 0


def _download(settings: Settings, args) -> int:
    """Asks the daemon to download a hub repo; --wait: until it is registered or has failed."""
    try:
        d = api_call(settings, "POST", "/models/download", body={"repo": args.repo, "revision": args.revision},
                     timeout=60, operator=True)
        if d["state"] == "failed":
            print(f"vidspool: {d['error']}", file=sys.stderr)
            return 1
        print(f"{d['repo']}@{d['revision']}: downloading as model {d['name']} (vidspool models list shows it)")
        repo, deadline = d["repo"], time.monotonic() + args.timeout
        while args.wait and time.monotonic() < deadline:
            d = next((m["download"] for m in api_call(settings, "GET", "/models")["models"]
                      if (m.get("download") or {}).get("repo") == repo), None)
            if d is None:
                print(f"vidspool: the daemon no longer knows the download of {args.repo} (restarted?)", file=sys.stderr)
                return 1
            if d["state"] == "downloaded":
                print(f"{d['repo']}: downloaded into {d['folder']}; jobs may name model {d['name']!r}")
                return 0
            if d["state"] == "failed":
                print(f"vidspool: {d['error']}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    except ConnectionError as exc:
        print(f"vidspool: {exc}", file=sys.stderr)
        return 1
    if args.wait:
        print(f"vidspool: {args.repo} still downloading after {args.timeout:g} s", file=sys.stderr)
        return 1
    return 0


def _calibrate(settings: Settings, args) -> int:
    """Runs the model once in a worker-like child process (pipeline/calibrate.py) and writes
    MagCache's ratios beside the config, where load_settings attaches them."""
    import os
    import subprocess

    from contract.acceleration import calibration_file
    from daemon.config import DEFAULT_CONFIG
    from daemon.devices import visible_gpus, worker_env

    entry = settings.models.get(args.name)
    if entry is None:
        print(f"vidspool: no model {args.name!r} in the registry (vidspool models list)", file=sys.stderr)
        return 2
    config = entry.model_dump(mode="json")
    config["accelerate"] = {}  # measured without skipping anything
    steps = args.steps or (entry.defaults or {}).get("num_inference_steps") or 50
    device = args.device or ("cuda:0" if visible_gpus() else "cpu")
    print(f"{args.name}: calibrating MagCache on {device}, {steps} steps at its default size")
    out = subprocess.run([sys.executable, "-m", "pipeline.calibrate"], capture_output=True, text=True,
                         input=json.dumps({"name": args.name, "config": config, "steps": steps, "device": device}),
                         env={**os.environ, **worker_env(device)}, cwd=Path(__file__).resolve().parents[2])
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        print(f"vidspool: calibrating {args.name} failed: {(out.stderr.strip().splitlines() or ['no output'])[-1]}",
              file=sys.stderr)
        return 1
    answer = json.loads(lines[-1])
    if "error" in answer:
        print(f"vidspool: {answer['error']}", file=sys.stderr)
        return 1
    path = calibration_file(Path(args.config).resolve().parent if args.config else DEFAULT_CONFIG.parent, args.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_text(json.dumps({"model": args.name, "device": device, **answer}, indent=1) + "\n", encoding="utf-8")
    tmp.rename(path)
    print(f"{args.name}: {len(answer['mag_ratios'])} ratios in {answer['seconds']:.1f} s, written to {path}; "
          "a running daemon uses them after a reload (SIGHUP)")
    return 0


def _import(settings: Settings, args) -> int:
    """Copies a model folder into [registry] dir under a temporary name, then renames it."""
    from contract.lipsync_folders import BACKEND_CLASS
    from contract.families import kinds_of
    from contract.model_folders import describe_folder

    src = args.folder.expanduser()
    name = args.name or src.resolve().name
    if not src.is_dir():
        print(f"vidspool: {src} is not a folder", file=sys.stderr)
        return 2
    try:
        class_name = describe_folder(name, src, {})  # a diffusers folder or a lip-sync layout
    except JobError as exc:
        print(f"vidspool: {exc.message}", file=sys.stderr)
        return 2
    dest_root = Path(settings.registry.dir)
    dest = dest_root / name
    if dest.exists() or name in settings.models:
        print(f"vidspool: a model named {name!r} exists already ({dest}); choose another --name", file=sys.stderr)
        return 2
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = dest_root / f".import-{name}-{secrets.token_hex(4)}"
    try:
        shutil.copytree(src, tmp, symlinks=False)  # hub snapshots are symlinks into blobs: copy the files
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    kinds = ["talking-head"] if class_name in BACKEND_CLASS.values() else kinds_of(class_name)
    print(f"imported {name} ({class_name}) into {dest}; kinds: {', '.join(kinds) or 'name them in [models.' + name + '] kinds'}")
    print("the running daemon serves it from its next job or models list (no reload needed)")
    return 0
