"""The inbox: which dropped things are complete, and how they become queued jobs.

Drop forms (SPEC §3): NAME.json (+ media beside it), a folder NAME/ with job.json, a bare
file in a preset inbox, and ID.cancel. A thing renamed into the inbox (inotify
IN_MOVED_TO) is complete at once; anything else must keep its size and mtime for
`stable_seconds` over at least 3 checks.
"""

from __future__ import annotations

import fnmatch
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from daemon.fsops import atomic_write_json, create_exclusive, move, read_json
from daemon.spool import DROP_DOC, sanitize_job_id

UNFINISHED_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".swp", "~")
MIN_CHECKS = 3
# An in-place JSON that stays unparseable this many stable periods is failed as invalid.
UNPARSEABLE_PERIODS = 5


def looks_unfinished(name: str) -> bool:
    return name.startswith((".", "~")) or name.endswith(UNFINISHED_SUFFIXES)


@dataclass
class Observation:
    """What the intake has seen of one inbox entry over time."""

    signature: tuple
    first_seen: float
    stable_since: float
    checks: int = 1
    moved_in: bool = False
    written: bool = False

    def stable_for(self, now: float) -> float:
        return now - self.stable_since


@dataclass
class Drop:
    """A complete drop, ready to be accepted."""

    form: str  # "json", "folder", "bare", "cancel"
    path: Path
    preset: str | None
    inputs: list[Path] = field(default_factory=list)


def entry_signature(path: Path) -> tuple | None:
    """Size and mtime of a file, or of every entry of a folder tree; None if gone."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return (st.st_size, st.st_mtime_ns, st.st_mode)
    sig = []
    for dirpath, dirnames, filenames in os.walk(path):
        for name in sorted(dirnames + filenames):
            try:
                s = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            sig.append((os.path.relpath(os.path.join(dirpath, name), path), s.st_size, s.st_mtime_ns))
    return (st.st_mtime_ns, tuple(sorted(sig)))


class InboxScanner:
    """Tracks inbox entries between scans and says which drops are complete."""

    def __init__(self, inbox: Path, stable_seconds: float, input_wait_seconds: float):
        self.inbox = inbox
        self.stable_seconds = stable_seconds
        self.input_wait_seconds = input_wait_seconds
        self.presets: dict[str, list[str]] = {}  # preset → accept globs
        self.seen: dict[Path, Observation] = {}
        self._moved_in: set[Path] = set()
        self._written: set[Path] = set()

    # -- hints from the watcher ------------------------------------------------
    def note_moved_in(self, path: Path) -> None:
        self._moved_in.add(path)

    def note_written(self, path: Path) -> None:
        self._written.add(path)

    @property
    def has_unsettled(self) -> bool:
        """True while some entry waits for stability (the caller checks again soon)."""
        return bool(self.seen)

    # -- scanning --------------------------------------------------------------
    def scan(self, now: float | None = None) -> list[Drop]:
        now = time.monotonic() if now is None else now
        present: set[Path] = set()
        drops: list[Drop] = []
        for folder, preset in [(self.inbox, None)] + [(self.inbox / p, p) for p in self.presets]:
            drops.extend(self._scan_folder(folder, preset, now, present))
        for gone in set(self.seen) - present:
            del self.seen[gone]
        self._moved_in &= present
        self._written &= present
        return drops

    def forget(self, path: Path) -> None:
        self.seen.pop(path, None)

    def _observe(self, path: Path, now: float) -> Observation | None:
        sig = entry_signature(path)
        if sig is None:
            return None
        obs = self.seen.get(path)
        if obs is None:
            obs = self.seen[path] = Observation(sig, now, now)
        elif sig != obs.signature:
            obs.signature, obs.stable_since, obs.checks = sig, now, 1
        else:
            obs.checks += 1
        if path in self._written:
            obs.written, obs.moved_in = True, False
            self._written.discard(path)
            self._moved_in.discard(path)
        elif path in self._moved_in and not obs.written:
            obs.moved_in = True
        return obs

    def _complete(self, obs: Observation, now: float, periods: float = 1) -> bool:
        if obs.moved_in and not obs.written:
            return True
        return obs.checks >= MIN_CHECKS and obs.stable_for(now) >= self.stable_seconds * periods

    def _scan_folder(self, folder: Path, preset: str | None, now: float, present: set[Path]) -> list[Drop]:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return []
        by_name = {e.name: e for e in entries if not looks_unfinished(e.name)}
        drops: list[Drop] = []
        claimed_inputs: set[str] = set()
        # JSON jobs first: the media they name are theirs, not bare-file jobs.
        for name in sorted(by_name):
            entry = by_name[name]
            path = folder / name
            if preset is None and name in self.presets and entry.is_dir(follow_symlinks=False):
                continue
            if name.endswith(".cancel") and entry.is_file(follow_symlinks=False):
                present.add(path)
                drops.append(Drop("cancel", path, preset))
                continue
            if name.endswith(".json") and entry.is_file(follow_symlinks=False):
                present.add(path)
                drop = self._json_drop(path, preset, by_name, now, present)
                if drop is not None:
                    claimed_inputs.update(p.name for p in drop.inputs)
                    drops.append(drop)
                else:
                    claimed_inputs.update(self._named_inputs(path))
                continue
        for name in sorted(by_name):
            entry = by_name[name]
            path = folder / name
            if path in present or name in claimed_inputs:
                continue
            if preset is None and name in self.presets:
                continue
            if entry.is_dir(follow_symlinks=False):
                present.add(path)
                obs = self._observe(path, now)
                if obs is not None and self._complete(obs, now):
                    drops.append(Drop("folder", path, preset))
            elif preset is not None and any(fnmatch.fnmatch(name, g) for g in self.presets.get(preset, [])):
                present.add(path)
                obs = self._observe(path, now)
                if obs is not None and self._complete(obs, now):
                    drops.append(Drop("bare", path, preset))
        return drops

    def _named_inputs(self, json_path: Path) -> list[str]:
        doc = read_json(json_path)
        inputs = doc.get("inputs") if doc else None
        if not isinstance(inputs, dict):
            return []
        names: list[str] = []
        for value in inputs.values():
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, str) and v and "/" not in v and v not in (".", ".."):
                    names.append(v)
        return names

    def _json_drop(self, path: Path, preset, by_name, now: float, present: set[Path]) -> Drop | None:
        obs = self._observe(path, now)
        if obs is None or not self._complete(obs, now):
            return None
        if read_json(path) is None and not obs.moved_in and not self._complete(obs, now, UNPARSEABLE_PERIODS):
            return None  # written in place and not parseable yet: maybe still being written
        inputs = []
        waited = now - obs.first_seen >= self.input_wait_seconds
        for name in self._named_inputs(path):
            ipath = path.parent / name
            present.add(ipath)
            if name not in by_name:
                if not waited:
                    return None  # the media may still be on its way
                continue
            iobs = self._observe(ipath, now)
            if iobs is None or not self._complete(iobs, now):
                return None
            inputs.append(ipath)
        return Drop("json", path, preset, inputs)


def stage_drop(drop: Drop, active: Path, inbox: Path) -> Path | None:
    """Takes a drop out of the inbox into active/<host>/.intake.<token>/payload.

    The rename of the job's main file (or folder) is the claim: if another daemon got
    there first, returns None and leaves nothing behind.
    """
    staging = active / f".intake.{secrets.token_hex(6)}"
    os.mkdir(staging)
    rel = str(drop.path.relative_to(inbox))
    atomic_write_json(
        staging / DROP_DOC,
        {"form": drop.form, "name": drop.path.name, "preset": drop.preset, "drop": f"inbox/{rel}",
         "received_at": time.time()},
        fsync=False,  # lost only with power: recovery then treats the payload as a folder drop
    )
    payload = staging / "payload"
    if drop.form == "folder":
        claimed = move(drop.path, payload)
    else:
        os.mkdir(payload)
        claimed = move(drop.path, payload / drop.path.name)
    if not claimed:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        return None
    for media in drop.inputs:
        move(media, payload / media.name)
    return staging


def drop_job_document(staging: Path, raw_limit: int) -> tuple[bytes | None, str, dict]:
    """For a staged drop: (raw bytes of its job JSON or None if it has none, default id, drop doc)."""
    info = read_json(staging / DROP_DOC) or {"form": "folder", "name": "job", "preset": None}
    payload = staging / "payload"
    name = info["name"]
    if info["form"] == "json":
        job_file = payload / name
        default_id = sanitize_job_id(name[: -len(".json")])
    elif info["form"] == "folder":
        job_file = payload / "job.json"
        default_id = sanitize_job_id(name)
    else:  # bare
        return None, sanitize_job_id(os.path.splitext(name)[0]), info
    try:
        st = os.lstat(job_file)
        if not stat.S_ISREG(st.st_mode):
            return b"", default_id, info
        with open(job_file, "rb") as f:
            return f.read(raw_limit + 1), default_id, info
    except FileNotFoundError:
        return None, default_id, info


def write_id_marker(staging: Path, job_id: str) -> None:
    create_exclusive(staging / f".id-{job_id}")


def read_id_marker(staging: Path) -> str | None:
    for name in os.listdir(staging):
        if name.startswith(".id-"):
            return name[4:]
    return None


def bare_file_job(path: Path, preset_kind: str, accept_as: str | None, kind_spec, text_limit: int) -> dict:
    """The job a preset makes of a bare file: the file becomes an input or a text param."""
    target = accept_as or (kind_spec.inputs[0].name if kind_spec.inputs else None)
    if target is None:
        return {"kind": preset_kind}
    spec = kind_spec.input_spec(target)
    if spec is not None:
        return {"kind": preset_kind, "inputs": {target: [path.name] if spec.many else path.name}}
    field_info = kind_spec.params.model_fields.get(target)
    if field_info is None:
        raise ValueError(f"preset accept_as {target!r} is neither an input nor a param of kind {kind_spec.name}")
    raw = path.read_bytes()[: text_limit + 1]
    if len(raw) > text_limit:
        raise ValueError(f"{path.name} is over the limit of {text_limit} bytes for a text drop")
    text = raw.decode("utf-8", errors="replace")
    is_list = "list" in str(field_info.annotation)
    value = [line.strip() for line in text.splitlines() if line.strip()] if is_list else text
    return {"kind": preset_kind, "params": {target: value}}

