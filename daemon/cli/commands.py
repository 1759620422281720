"""The `vidspool` command line (SPEC §7)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from daemon.config import ConfigError, Settings, find_config, load_settings
from daemon.spool.fsops import move, read_json
from daemon.spool.layout import Spool, candidate_ids, is_valid_job_id, sanitize_job_id
from contract.status import FINAL_STATES


# Commands that need a folder spool (the bucket spool's backend comes with issue 28).
FOLDER_COMMANDS = frozenset({"run", "init", "submit", "status", "cancel", "pause", "resume", "purge"})


def main(argv: list[str] | None = None) -> int:
    try:
        code = run_command(argv)
        sys.stdout.flush()  # a reader that left shows here, not in the interpreter's last flush
        return code
    except BrokenPipeError:
        # `vidspool voices | head`: the reader has what it wanted; stop quietly, as Unix tools
        # do (they die of SIGPIPE: 128 + 13), with nothing more for the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def run_command(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="vidspool", description="Spool-folder video job daemon.")
    parser.add_argument("--config", type=Path, help="config file (default: ./config.toml, else the install's)")
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
    p = sub.add_parser("purge", help="delete ended jobs' result files (their status, log and inputs stay); "
                       "--older-than: remove old ended jobs' whole outbox folders")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--older-than", type=float, metavar="DAYS", help="remove the folders of jobs that ended over DAYS ago")
    p.add_argument("--state", action="append", choices=sorted(FINAL_STATES), help="only jobs that ended so (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="list what --older-than would remove; remove nothing")
    p = sub.add_parser("pause", help="stop claiming new jobs (every host sharing the spool, or --host); drops still queue")
    p.add_argument("--host", help="pause only this host (hosts/<host>.pause)")
    p.add_argument("--now", action="store_true", help="also requeue running jobs at their next step (attempt not counted)")
    p.add_argument("--free-memory", action="store_true", help="idle workers unload their models")
    p.add_argument("--reason", help="shown by health, the queue and the page")
    p = sub.add_parser("resume", help="lift the pause (every pause; or only --host's)")
    p.add_argument("--host", help="lift only this host's pause")
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
    q = msub.add_parser("download", help="download a model from the Hugging Face hub in the running daemon")
    q.add_argument("repo", help="ORG/NAME, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    q.add_argument("--revision", default="main", help="a branch, tag or commit (default: main)")
    q.add_argument("--wait", action="store_true", help="wait until it is downloaded and registered, or failed")
    q.add_argument("--timeout", type=float, default=24 * 3600)
    q = msub.add_parser("calibrate", help="measure a model's MagCache ratios (one run, no daemon needed) and keep them beside the config")
    q.add_argument("name")
    q.add_argument("--steps", type=int, help="denoising steps of the run (default: the model's num_inference_steps, else 50)")
    q.add_argument("--device", help="cpu or cuda:N (default: cuda:0 when there is a GPU)")
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

    args.config = find_config(args.config)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"vidspool: {exc}", file=sys.stderr)
        return 2
    if settings.bucket is not None and args.command in FOLDER_COMMANDS:
        print(f"vidspool: [spool] root {settings.bucket} is a bucket spool: `vidspool doctor` probes it; "
              f"`vidspool {args.command}` works on a folder spool only in this version", file=sys.stderr)
        return 2
    handler = {
        "run": cmd_run, "init": cmd_init, "submit": cmd_submit, "status": cmd_status,
        "cancel": cmd_cancel, "pause": cmd_pause, "resume": cmd_resume, "purge": cmd_purge, "doctor": cmd_doctor, "models": cmd_models, "voices": cmd_voices,
    }[args.command]
    return handler(settings, args)


def _spool(settings: Settings) -> Spool:
    return Spool(settings.spool.root, settings.spool.host)


def cmd_run(settings: Settings, args) -> int:
    from daemon.arbiter import Arbiter
    from daemon.logs import configure_logging

    spool = _spool(settings)
    configure_logging(settings.log.level, settings.log.format, spool.outbox)
    try:
        arbiter = Arbiter(settings, args.config)
    except ValueError as exc:  # a bad VIDSPOOL_TEST_CRASH_AT
        print(f"vidspool: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(arbiter.run())


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


class SubmitError(Exception):
    """What is wrong with a submit's arguments, said before anything is dropped."""


def cmd_submit(settings: Settings, args) -> int:
    spool = _existing_spool(settings)
    if spool is None:
        return 2
    try:
        doc = _read_job_file(args.job, settings.limits.job_json_bytes)
        _check_media(args.files)
        inbox = _submit_inbox(spool, settings, args.preset)
    except SubmitError as exc:
        print(f"vidspool: {exc}", file=sys.stderr)
        return 2
    given = doc.get("id")
    given = given if isinstance(given, str) and is_valid_job_id(given) else None
    name = _drop_name(args.job.stem)
    tmp = inbox / f".{name}-{secrets.token_hex(4)}.part"
    try:
        _stage(tmp, args.job, args.files)
        drop_name, wanted, taken = _rename_into_inbox(tmp, inbox, name, spool, given)
    except OSError as exc:
        print(f"vidspool: could not drop the job into {inbox}: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a no-op once renamed: nothing is left behind
    rel = f"inbox/{args.preset + '/' if args.preset else ''}{drop_name}"
    print(f"dropped {rel}", file=sys.stderr)
    job_id = _wait_for_id(spool, wanted, rel, taken, 30 if not args.wait else args.timeout)
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


def _read_job_file(path: Path, limit: int) -> dict:
    """The job file's JSON object; SubmitError naming the file if it is not one."""
    from daemon.jobs.jobfile import parse_job_bytes
    from contract.errors import JobError

    if not path.is_file():
        raise SubmitError(f"job file {path} {'is not a file' if path.exists() else 'does not exist'}")
    try:
        return parse_job_bytes(path.read_bytes(), limit, f"job file {path}")
    except OSError as exc:
        raise SubmitError(f"cannot read job file {path}: {exc.strerror}") from None
    except JobError as exc:
        raise SubmitError(exc.message) from None


def _check_media(files: list[Path]) -> None:
    """Every media file exists, is a file, and has a name of its own in the drop."""
    seen: dict[str, Path] = {}
    for f in files:
        if not f.is_file():
            raise SubmitError(f"media file {f} {'is not a file' if f.exists() else 'does not exist'}")
        if f.name == "job.json":
            raise SubmitError(f"media file {f}: job.json is the job file's name in the drop; rename the file")
        if f.name in seen:
            raise SubmitError(f"media files {seen[f.name]} and {f} have the same name {f.name!r}")
        seen[f.name] = f


def _submit_inbox(spool: Spool, settings: Settings, preset: str | None) -> Path:
    if preset is None:
        return spool.inbox
    if preset not in settings.presets or not (spool.inbox / preset).is_dir():
        known = ", ".join(sorted(settings.presets)) or "none"
        raise SubmitError(f"no preset {preset!r} (presets: {known})")
    return spool.inbox / preset


def _drop_name(stem: str) -> str:
    """The drop's folder name, which the daemon makes the job's id: the job file's stem."""
    from daemon.jobs.intake import looks_unfinished

    name = sanitize_job_id(stem)
    return f"{name}_" if looks_unfinished(name) else name  # "x.part" would be ignored forever


def _stage(tmp: Path, job: Path, files: list[Path]) -> None:
    """The job (as job.json) and its files copied into `tmp`, a dot-folder the daemon ignores."""
    tmp.mkdir()
    shutil.copyfile(job, tmp / "job.json")
    for f in files:
        shutil.copyfile(f, tmp / f.name)


def _rename_into_inbox(tmp: Path, inbox: Path, name: str, spool: Spool, given: str | None) -> tuple[str, str, set[str]]:
    """Renames the staged folder to `name` (name-2 … while the inbox holds that name) and
    returns (drop name, the id the daemon starts from, the ids of that name taken before)."""
    n = 1
    while True:
        candidate = name if n == 1 else f"{name}-{n}"
        wanted = given or sanitize_job_id(candidate)
        taken = _taken_ids(spool, wanted)  # just before the rename: older jobs of this name
        try:
            move(tmp, inbox / candidate)
            return candidate, wanted, taken
        except FileExistsError:
            n += 1


def _taken_ids(spool: Spool, wanted: str) -> set[str]:
    """`wanted`, wanted-2 … that are in the outbox already."""
    taken: set[str] = set()
    for candidate in candidate_ids(wanted):
        if not spool.job_outbox(candidate).exists():
            return taken
        taken.add(candidate)


def _wait_for_id(spool: Spool, wanted: str, drop: str, taken: set[str], timeout: float) -> str | None:
    """The id the daemon gave our drop: `wanted`, or wanted-2, -3 … on a collision; `taken`
    ids were there before the drop (an earlier drop of the same name)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for candidate in candidate_ids(wanted):
            if not spool.job_outbox(candidate).exists():
                break
            doc = read_json(spool.status_path(candidate)) if candidate not in taken else None
            if doc and doc.get("drop") == drop:
                return candidate
        time.sleep(0.1)
    return None


def _existing_spool(settings: Settings) -> Spool | None:
    """The configured spool, or None after saying there is none (exit non-zero then)."""
    spool = _spool(settings)
    if not spool.inbox.is_dir():
        print(f"vidspool: no spool at {spool.root} (run: vidspool init, or give --config)", file=sys.stderr)
        return None
    return spool


def cmd_status(settings: Settings, args) -> int:
    spool = _existing_spool(settings)
    if spool is None:
        return 2
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
                hosts[name[:-5]] = {"state": doc.get("state"), "updated_at": doc.get("updated_at"), "api_url": doc.get("api_url"),
                                    "paused": doc.get("paused")}
    from daemon.spool.pause import read_pause

    paused = read_pause(spool, spool.host)
    summary = {"config": config_words(args.config), "spool": str(spool.root),
               "paused": paused.describe() if paused and paused.scope == "all" else None,
               "queued": queued, "running": running, "hosts": hosts}
    print(json.dumps(summary, indent=1))
    return 0


def cmd_cancel(settings: Settings, args) -> int:
    spool = _existing_spool(settings)
    if spool is None:
        return 2
    if not is_valid_job_id(args.id):
        print(f"vidspool: {args.id!r} is not a job id", file=sys.stderr)
        return 2
    doc = read_json(spool.status_path(args.id))
    if doc is None:
        print(f"vidspool: no job {args.id!r}", file=sys.stderr)
        return 1
    if doc.get("state") in FINAL_STATES:  # the API's 409: nothing to cancel
        print(f"vidspool: job {args.id!r} has already ended (state {doc['state']})", file=sys.stderr)
        return 1
    tmp = spool.inbox / f".{args.id}.cancel.part"
    tmp.touch()
    os.rename(tmp, spool.inbox / f"{args.id}.cancel")
    print(f"cancel requested for {args.id} (state {doc.get('state')})")
    return 0


def cmd_pause(settings: Settings, args) -> int:
    """Writes the pause file: daemons see it within a turn (no daemon needs to run)."""
    from daemon.spool.pause import pause

    spool = _existing_spool(settings)
    if spool is None:
        return 2
    if args.host is not None and not is_valid_job_id(args.host):  # the same characters as a host name
        print(f"vidspool: {args.host!r} is not a host name", file=sys.stderr)
        return 2
    paused = pause(spool, args.host, now=args.now, free_memory=args.free_memory,
                   by=f"cli {getpass.getuser()}@{socket.gethostname()}", reason=args.reason)
    extra = [w for w, on in (("running jobs requeued at their next step", paused.now),
                             ("idle workers unload their models", paused.free_memory)) if on]
    print(f"{paused.words()}: no new claims, drops still queue" + "".join(f"; {e}" for e in extra))
    return 0


def cmd_resume(settings: Settings, args) -> int:
    from daemon.spool.pause import resume

    spool = _existing_spool(settings)
    if spool is None:
        return 2
    removed = resume(spool, args.host)
    print(f"resumed: removed {', '.join(removed)}" if removed else "not paused: nothing to resume")
    return 0


def cmd_purge(settings: Settings, args) -> int:
    """Works on the spool itself (no daemon needed), safe beside daemons on other hosts."""
    from daemon.outbox.results import delete_results

    if bool(args.ids) == (args.older_than is not None) or (args.older_than is None and (args.state or args.dry_run)):
        print("vidspool: purge takes job ids, or --older-than DAYS [--state S] [--dry-run]", file=sys.stderr)
        return 2
    if args.older_than is not None and args.older_than < 0:
        print("vidspool: --older-than must be 0 or more days", file=sys.stderr)
        return 2
    spool = _existing_spool(settings)
    if spool is None:
        return 2
    if args.older_than is not None:
        return _purge_older_than(spool, args.older_than, args.state, args.dry_run)
    failed = 0
    for job_id in args.ids:
        outcome, freed = delete_results(spool, job_id, by=f"cli@{spool.host}")
        message = {
            "deleted": f"{job_id}: results deleted, {freed} bytes freed",
            "already_deleted": f"{job_id}: results were already deleted",
            "not_found": f"vidspool: no job {job_id!r}",
            "not_ended": f"vidspool: job {job_id!r} has not ended; cancel it first",
            "busy": f"vidspool: the results of {job_id!r} are being deleted by someone else",
        }[outcome]
        if outcome in ("deleted", "already_deleted"):
            print(message)
        else:
            print(message, file=sys.stderr)
            failed = 1
    return failed


def _purge_older_than(spool: Spool, days: float, states: list[str] | None, dry_run: bool) -> int:
    """The selection a daemon's retention sweep makes (daemon/outbox/retention.py), by the same
    rename into trash/: safe beside sweeping daemons (each folder goes once)."""
    from daemon.outbox.retention import Selection, remove_job_folder, tree_bytes

    selection = Selection.older_than(days, states)
    verb = "would remove" if dry_run else "removed"
    count = total = 0
    for job in selection.jobs(spool):
        freed = tree_bytes(spool.job_outbox(job.job_id)) if dry_run else remove_job_folder(spool, job, selection)
        if freed is not None:
            print(f"{verb} {job.job_id} ({job.state}, finished {job.finished_at}): {freed} bytes")
            count, total = count + 1, total + freed
    print(f"{verb} {count} job folder{'s' * (count != 1)} that ended over {days:g} days ago: {total} bytes"
          + (" (dry run: nothing removed)" if dry_run else ""))
    return 0


def cmd_doctor(settings: Settings, args) -> int:
    from daemon.cli.doctor import run_doctor

    return run_doctor(settings, config_words(args.config))


def config_words(path: Path | None) -> str:
    """The config file a command read, as status and doctor name it."""
    return os.path.abspath(path) if path is not None else "none (no config file: defaults and the environment)"


if __name__ == "__main__":
    sys.exit(main())


def cmd_models(settings: Settings, args) -> int:
    from daemon.cli import models as modelcli

    return modelcli.run(settings, args)


def cmd_normalize(args) -> int:
    """Text normalization is the workers' (pipeline/speech): run as their tool, in a process
    of its own, as everything of the pipeline side runs."""
    import subprocess

    # Its output passes through here, where a closed pipe ends the command quietly.
    out = subprocess.run([sys.executable, "-m", "pipeline.speech.normalize", args.text, "--language", args.language],
                         stdout=subprocess.PIPE, text=True)
    print(out.stdout, end="")
    return out.returncode


def cmd_voices(settings: Settings, args) -> int:
    from contract.voices import base_language, catalog, language_counts

    book = settings.voice_book()
    if args.languages:
        for lang in language_counts(book):
            print(f"{lang['code']:<12} {lang['voices']} voice{'s' if lang['voices'] != 1 else ''}")
        return 0
    voices = catalog(book, args.language)
    if not voices:
        known = ", ".join(sorted({base_language(lang["code"]) for lang in language_counts(book)}))
        print(f"vidspool: no voices for language {args.language!r} (known languages: {known})", file=sys.stderr)
        return 1
    for v in voices:
        tag = f"[{v['engine']}{', cloning' if v['cloning'] else ''}{', config' if v['configured'] else ''}]"
        print(f"{v['id']:<20} {v['language']:<10} {v['name']:<28} {tag}")
    return 0
