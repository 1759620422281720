"""The `vidspool` command line (SPEC §7)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import sys
import time
from pathlib import Path

from daemon.config import ConfigError, Settings, load_settings
from daemon.fsops import read_json
from daemon.spool import Spool, is_valid_job_id
from daemon.status import FINAL_STATES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vidspool", description="Spool-folder video job daemon.")
    parser.add_argument("--config", type=Path, help="config file (default: config.toml of the install)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the daemon in the foreground")
    p = sub.add_parser("init", help="create a spool (shared: group-writable, setgid folders)")
    p.add_argument("--root", type=Path)
    p.add_argument("--group", help="group that may drop jobs (shared spools)")
    p = sub.add_parser("submit", help="drop a job safely (temp folder, then rename)")
    p.add_argument("job", type=Path)
    p.add_argument("files", nargs="*", type=Path)
    p.add_argument("--preset", help="drop into inbox/<preset>/")
    p.add_argument("--wait", action="store_true", help="wait for the job to end; exit 0 if completed")
    p.add_argument("--timeout", type=float, default=3600)
    p = sub.add_parser("status", help="a job's status, or a summary of the spool")
    p.add_argument("id", nargs="?")
    p = sub.add_parser("cancel", help="cancel a job (drops ID.cancel)")
    p.add_argument("id")
    sub.add_parser("doctor", help="check config, tools, GPUs, models and the spool filesystem")
    p = sub.add_parser("models", help="the model registry: list, load/unload in the running daemon, import a folder")
    msub = p.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list", help="registered models, where they are, which workers hold them")
    for verb in ("load", "unload"):
        q = msub.add_parser(verb, help=f"{verb} a model in the running daemon's workers")
        q.add_argument("name")
        if verb == "load":
            q.add_argument("--wait", action="store_true", help="wait until a worker holds it")
            q.add_argument("--timeout", type=float, default=1800)
    q = msub.add_parser("import", help="copy a downloaded diffusers model folder into [registry] dir")
    q.add_argument("folder", type=Path)
    q.add_argument("--name", help="model name (default: the folder's name)")
    p = sub.add_parser("voices", help="the voices jobs may name ([voices.*] and espeak-ng's), or languages")
    p.add_argument("--language", help="only voices of this language, e.g. de")
    p.add_argument("--languages", action="store_true", help="list languages with their voice counts")
    p = sub.add_parser("normalize", help="print the spoken form of a text (numbers, units, math, LaTeX → words)")
    p.add_argument("text")
    p.add_argument("--language", default="en", help="e.g. en, de, fr (default: en)")
    args = parser.parse_args(argv)
    if args.command == "normalize":  # needs no config
        return cmd_normalize(args)

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"vidspool: {exc}", file=sys.stderr)
        return 2
    handler = {
        "run": cmd_run, "init": cmd_init, "submit": cmd_submit, "status": cmd_status,
        "cancel": cmd_cancel, "doctor": cmd_doctor, "models": cmd_models, "voices": cmd_voices,
    }[args.command]
    return handler(settings, args)


def _spool(settings: Settings) -> Spool:
    return Spool(settings.spool.root, settings.spool.host)


def cmd_run(settings: Settings, args) -> int:
    from daemon.arbiter import Arbiter
    from daemon.logs import configure_logging

    spool = _spool(settings)
    configure_logging(settings.log.level, settings.log.format, spool.outbox)
    return asyncio.run(Arbiter(settings, args.config).run())


def cmd_init(settings: Settings, args) -> int:
    root = args.root or settings.spool.root
    spool = Spool(root, settings.spool.host)
    spool.create(list(settings.presets))
    group = args.group or settings.spool.group
    if group:
        import grp

        gid = grp.getgrnam(group).gr_gid
        for d in [spool.root, spool.inbox, *[spool.inbox / p for p in settings.presets]]:
            os.chown(d, -1, gid)
            os.chmod(d, 0o2775)
    print(f"spool ready at {spool.root}")
    return 0


def cmd_submit(settings: Settings, args) -> int:
    spool = _spool(settings)
    if not spool.inbox.is_dir():
        print(f"vidspool: no spool at {spool.root} (run: vidspool init)", file=sys.stderr)
        return 2
    try:
        doc = json.loads(args.job.read_bytes())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"vidspool: cannot read {args.job}: {exc}", file=sys.stderr)
        return 2
    inbox = spool.inbox / args.preset if args.preset else spool.inbox
    stem = args.job.stem if is_valid_job_id(args.job.stem) else "job"
    drop_name = f"{stem}-{secrets.token_hex(4)}"
    tmp = inbox / f".{drop_name}.part"
    tmp.mkdir()
    shutil.copyfile(args.job, tmp / "job.json")
    for f in args.files:
        shutil.copyfile(f, tmp / f.name)
    os.rename(tmp, inbox / drop_name)
    rel = f"inbox/{args.preset + '/' if args.preset else ''}{drop_name}"
    wanted = doc.get("id") if isinstance(doc.get("id"), str) else drop_name
    print(f"dropped {rel}", file=sys.stderr)
    job_id = _wait_for_id(spool, wanted, rel, 30 if not args.wait else args.timeout)
    if job_id is None:
        print(f"vidspool: no daemon accepted {rel} yet (is `vidspool run` up?)", file=sys.stderr)
        return 1 if args.wait else 0
    print(job_id)
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    last = None
    while time.monotonic() < deadline:
        doc = read_json(spool.status_path(job_id)) or {}
        line = f"{doc.get('state')} {doc.get('progress')}% {doc.get('stage') or ''} {doc.get('message') or ''}".strip()
        if line != last:
            print(line, file=sys.stderr)
            last = line
        if doc.get("state") in FINAL_STATES:
            print(json.dumps(doc, indent=1))
            return 0 if doc["state"] == "completed" else 1
        time.sleep(0.2)
    print(f"vidspool: timed out waiting for {job_id}", file=sys.stderr)
    return 1


def _wait_for_id(spool: Spool, wanted: str, drop: str, timeout: float) -> str | None:
    """The id the daemon gave our drop: `wanted`, or wanted-2, -3 … on a collision."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = 1
        while True:
            candidate = wanted if n == 1 else f"{wanted}-{n}"
            if not spool.job_outbox(candidate).exists():
                break
            doc = read_json(spool.status_path(candidate))
            if doc and doc.get("drop") == drop:
                return candidate
            n += 1
        time.sleep(0.1)
    return None


def cmd_status(settings: Settings, args) -> int:
    spool = _spool(settings)
    if args.id:
        doc = read_json(spool.status_path(args.id)) if is_valid_job_id(args.id) else None
        if doc is None:
            print(f"vidspool: no job {args.id!r}", file=sys.stderr)
            return 1
        print(json.dumps(doc, indent=1))
        return 0
    queued = len(spool.queued_names()) if spool.queue.is_dir() else 0
    running = {}
    if spool.active_root.is_dir():
        for host in sorted(os.listdir(spool.active_root)):
            running[host] = [n for n in os.listdir(spool.active_root / host) if not n.startswith(".")]
    hosts = {}
    if spool.hosts.is_dir():
        for name in sorted(os.listdir(spool.hosts)):
            if name.endswith(".json") and not name.startswith("."):
                doc = read_json(spool.hosts / name) or {}
                hosts[name[:-5]] = {"state": doc.get("state"), "updated_at": doc.get("updated_at"), "api_url": doc.get("api_url")}
    print(json.dumps({"spool": str(spool.root), "queued": queued, "running": running, "hosts": hosts}, indent=1))
    return 0


def cmd_cancel(settings: Settings, args) -> int:
    spool = _spool(settings)
    if not is_valid_job_id(args.id):
        print(f"vidspool: {args.id!r} is not a job id", file=sys.stderr)
        return 2
    if not spool.status_path(args.id).exists():
        print(f"vidspool: no job {args.id!r}", file=sys.stderr)
        return 1
    tmp = spool.inbox / f".{args.id}.cancel.part"
    tmp.touch()
    os.rename(tmp, spool.inbox / f"{args.id}.cancel")
    print(f"cancel requested for {args.id}")
    return 0


def cmd_doctor(settings: Settings, args) -> int:
    from daemon.doctor import run_doctor

    return run_doctor(settings, str(args.config or "config.toml"))


if __name__ == "__main__":
    sys.exit(main())


def cmd_models(settings: Settings, args) -> int:
    from daemon import modelcli

    return modelcli.run(settings, args)


def cmd_normalize(args) -> int:
    from pipeline.speech.normalize import normalize

    try:
        print(normalize(args.text, args.language))
    except ValueError as exc:
        print(f"vidspool: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_voices(settings: Settings, args) -> int:
    from pipeline.speech.voices import catalog, configure, language_counts

    configure({name: v.model_dump(mode="json") for name, v in settings.voices.items()}, [str(settings.registry.dir)])
    if args.languages:
        for lang in language_counts():
            print(f"{lang['code']:<12} {lang['voices']} voice{'s' if lang['voices'] != 1 else ''}")
        return 0
    for v in catalog(args.language):
        tag = f"[{v['engine']}{', cloning' if v['cloning'] else ''}{', config' if v['configured'] else ''}]"
        print(f"{v['id']:<20} {v['language']:<10} {v['name']:<28} {tag}")
    return 0
