"""The inbox: which dropped things are complete, and how they become queued jobs.

Drop forms (SPEC §3): NAME.json (+ media beside it), a folder NAME/ with job.json, a bare
file in a preset inbox, and ID.cancel. A thing renamed into the inbox (inotify
IN_MOVED_TO) is complete at once; anything else must keep its size and mtime for
`stable_seconds` over at least 3 checks.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from daemon.spool.crashpoints import NEVER, CrashPoints
from daemon.spool.fscheck import spool_fault
from daemon.spool.fsops import atomic_write_json, create_exclusive, move, read_regular_file
from daemon.lines import error_line, printable
from daemon.spool.layout import DROP_DOC

log = structlog.get_logger()

UNFINISHED_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".swp", "~")
MIN_CHECKS = 3
# An in-place JSON that stays unparseable this many stable periods is failed as invalid.
UNPARSEABLE_PERIODS = 5


def looks_unfinished(name: str) -> bool:
    return name.startswith((".", "~")) or name.endswith(UNFINISHED_SUFFIXES)


def entry_fault(exc: BaseException) -> bool:
    """Whether an error on a user's inbox entry means the spool itself is broken. EACCES and
    EPERM there are that entry's own (a folder the daemon may not read or rename), not the spool's."""
    return spool_fault(exc) is not None and exc.errno not in (errno.EACCES, errno.EPERM)




def error_kind(exc: BaseException) -> str:
    """An error in one line, an OSError without its paths (a staging name differs on each try)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__}: [Errno {exc.errno}] {exc.strerror}"
    return error_line(exc)


def plain_name(name) -> bool:
    """Whether `name` is a file name of one folder's own: a non-empty string, no '/', not . or .."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name




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

    form: str  # "json", "folder", "bare", "cancel", "link" (a link to a folder: refused)
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
    return (st.st_mtime_ns, tuple(sorted(_tree_entries(path))))


def _tree_entries(root: Path) -> list[tuple]:
    """(relative path, size, mtime) of everything below `root`. Walked with a list, not
    recursion (a folder nested thousands deep must not raise RecursionError); links not followed."""
    found: list[tuple] = []
    todo = [""]
    while todo:
        rel = todo.pop()
        try:
            with os.scandir(os.path.join(root, rel)) as it:
                children = list(it)
        except OSError as exc:
            if entry_fault(exc):
                raise
            found.append((f"{rel}/", -1, exc.errno))  # "/": not the (name, size, mtime) of the folder itself
            continue
        for child in children:
            name = os.path.join(rel, child.name)
            try:
                s = child.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:  # e.g. ENAMETOOLONG past PATH_MAX in a very deep tree
                if entry_fault(exc):
                    raise
                found.append((name, -1, exc.errno))
                continue
            found.append((name, s.st_size, s.st_mtime_ns))
            if stat.S_ISDIR(s.st_mode):
                todo.append(name)
    return found


@dataclass
class FolderScan:
    """One scan of one inbox folder."""

    folder: Path
    preset: str | None
    now: float
    present: set[Path]  # entries still there (what the scanner keeps observing)
    by_name: dict[str, os.DirEntry]
    claimed: set[str] = field(default_factory=set)  # media names that NAME.json jobs named


class InboxScanner:
    """Tracks inbox entries between scans and says which drops are complete."""

    def __init__(self, inbox: Path, stable_seconds: float, input_wait_seconds: float, json_limit: int = 1_000_000):
        self.inbox = inbox
        self.stable_seconds = stable_seconds
        self.input_wait_seconds = input_wait_seconds
        self.json_limit = json_limit  # a bigger NAME.json is not read here; accept reports its size
        self.presets: dict[str, list[str]] = {}  # preset → accept globs
        self.seen: dict[Path, Observation] = {}
        self.failing: dict[Path, tuple[float, str]] = {}  # entry → (first failure, error)
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
        for gone in set(self.failing) - present:
            del self.failing[gone]
        self._moved_in &= present
        self._written &= present
        return drops

    def forget(self, path: Path) -> None:
        self.seen.pop(path, None)
        self.failing.pop(path, None)

    def note_failure(self, path: Path, exc: BaseException, now: float | None = None) -> bool:
        """Records that handling an entry raised; True the first time (or for a new error),
        when it is worth a log line: an entry that keeps failing is not logged every scan."""
        error = error_kind(exc)
        previous = self.failing.get(path)
        if previous is not None and previous[1] == error:
            return False
        self.failing[path] = (previous[0] if previous else (time.monotonic() if now is None else now), error)
        return True

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
        scan = FolderScan(folder, preset, now, present, {e.name: e for e in entries if not looks_unfinished(e.name)})
        drops: list[Drop] = []
        # JSON jobs first: the media they name are theirs, not bare-file jobs.
        for name in sorted(scan.by_name):
            drops += self._isolated(scan, scan.by_name[name], self._first_pass)
        for name in sorted(scan.by_name):
            if folder / name in present or name in scan.claimed or (preset is None and name in self.presets):
                continue
            drops += self._isolated(scan, scan.by_name[name], self._second_pass)
        return drops

    def _isolated(self, scan: "FolderScan", entry: os.DirEntry, step) -> list[Drop]:
        """Runs one entry's part of the scan: whatever it raises (but a broken spool) concerns
        that entry only. One that keeps failing is handed on as a drop, for accept to fail it."""
        path = scan.folder / entry.name
        try:
            return step(scan, entry, path)
        except Exception as exc:  # noqa: BLE001 - one odd entry must not stop the intake
            if entry_fault(exc):
                raise
            scan.present.add(path)
            if self.note_failure(path, exc, scan.now):
                log.warning("intake.entry_failed", path=printable(str(path)), error=error_line(exc),
                            action=f"taken as a drop (accept gives it a status) if it still fails in {self.stable_seconds:g} s")
            if scan.now - self.failing[path][0] < self.stable_seconds:
                return []
            if os.path.isdir(path) and not os.path.islink(path):
                return [Drop("folder", path, scan.preset)]
            return [Drop("json", path, scan.preset)] if path.name.endswith(".json") else []

    def _first_pass(self, scan: "FolderScan", entry: os.DirEntry, path: Path) -> list[Drop]:
        """Cancels and NAME.json jobs (with the media they name)."""
        if scan.preset is None and entry.name in self.presets and entry.is_dir(follow_symlinks=False):
            return []
        if entry.name.endswith(".cancel") and entry.is_file(follow_symlinks=False):
            scan.present.add(path)
            return [Drop("cancel", path, scan.preset)]
        # A NAME.json that is a link, a FIFO… is a drop too: accept fails it, saying what it is.
        if entry.name.endswith(".json") and not entry.is_dir(follow_symlinks=False):
            scan.present.add(path)
            drop, named = self._json_drop(path, scan.preset, scan.by_name, scan.now, scan.present)
            scan.claimed.update(named)
            return [drop] if drop is not None else []
        return []

    def _second_pass(self, scan: "FolderScan", entry: os.DirEntry, path: Path) -> list[Drop]:
        """Folder drops, links to folders, and bare files in a preset inbox."""
        if entry.is_dir(follow_symlinks=False):
            form = "folder"
        elif entry.is_symlink() and scan.preset is None and os.path.isdir(path):
            form = "link"  # never followed: accept fails it, asking for the folder itself
        elif scan.preset is not None and any(fnmatch.fnmatch(entry.name, g) for g in self.presets.get(scan.preset, [])):
            form = "bare"
        else:
            return []
        scan.present.add(path)
        obs = self._observe(path, scan.now)
        return [Drop(form, path, scan.preset)] if obs is not None and self._complete(obs, scan.now) else []

    def _peek_json(self, path: Path) -> tuple[dict, bool]:
        """An inbox NAME.json's document, to find the media it names ({} if it has none), and
        whether the file is final as it is (False: it may still be being written)."""
        try:
            st, raw = read_regular_file(path, self.json_limit)
        except FileNotFoundError:  # taken away just now
            return {}, False
        if raw is None:
            return {}, True  # a link, a FIFO, too big: accept says what is wrong with it
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {}, False
        except (ValueError, RecursionError):  # too deep, a huge number: no more bytes will mend it
            return {}, True
        return (doc if isinstance(doc, dict) else {}), True

    @staticmethod
    def _named_inputs(doc: dict, json_name: str) -> list[str]:
        """The plain file names a NAME.json names as inputs (each once, never itself)."""
        inputs = doc.get("inputs")
        if not isinstance(inputs, dict):
            return []
        names: list[str] = []
        for value in inputs.values():
            for v in value if isinstance(value, list) else [value]:
                if plain_name(v) and v != json_name and v not in names:
                    names.append(v)
        return names

    def _json_drop(self, path: Path, preset, by_name, now: float, present: set[Path]) -> tuple[Drop | None, list[str]]:
        """The drop of a NAME.json if it is complete (or None), and the media names it claims."""
        obs = self._observe(path, now)
        if obs is None:
            return None, []
        doc, final = self._peek_json(path)
        named = self._named_inputs(doc, path.name)
        if not self._complete(obs, now):
            return None, named
        if not final and not obs.moved_in and not self._complete(obs, now, UNPARSEABLE_PERIODS):
            return None, named  # written in place and not parseable yet: maybe still being written
        inputs = []
        waited = now - obs.first_seen >= self.input_wait_seconds
        for name in named:
            ipath = path.parent / name
            present.add(ipath)
            if name not in by_name:
                if not waited:
                    return None, named  # the media may still be on its way
                continue
            iobs = self._observe(ipath, now)
            if iobs is None or not self._complete(iobs, now):
                return None, named
            inputs.append(ipath)
        return Drop("json", path, preset, inputs), named


def stage_drop(drop: Drop, active: Path, inbox: Path, crash: CrashPoints = NEVER) -> Path | None:
    """Takes a drop out of the inbox into active/<host>/.intake.<token>/payload.

    The rename of the job's main file (or folder) is the claim: if another daemon got
    there first, returns None and leaves nothing behind. The media a NAME.json names are
    listed in .drop.json first, so that accept fetches any a crash kept from following.
    """
    staging = active / f".intake.{secrets.token_hex(6)}"
    os.mkdir(staging)
    try:
        claimed = _claim(drop, staging, inbox, crash)
    except BaseException:
        _discard_staging(staging)
        raise
    if not claimed:
        _discard_staging(staging)
        return None
    crash.hit("stage.claimed")
    for media in drop.inputs:
        try:
            move(media, staging / "payload" / media.name)
        except OSError as exc:  # the job is claimed: a medium that cannot follow fails it, not the intake
            if entry_fault(exc):
                raise
            log.warning("intake.input_not_taken", drop=printable(drop.path.name), input=printable(media.name), error=str(exc))
        crash.hit("stage.media_moved")
    return staging


def _claim(drop: Drop, staging: Path, inbox: Path, crash: CrashPoints) -> bool:
    rel = str(drop.path.relative_to(inbox))
    atomic_write_json(
        staging / DROP_DOC,
        {"form": drop.form, "name": drop.path.name, "preset": drop.preset, "drop": f"inbox/{printable(rel)}",
         "inputs": [m.name for m in drop.inputs], "received_at": time.time()},
        fsync=False,  # lost only with power: recovery then treats the payload as a folder drop
    )
    crash.hit("stage.intake_made")
    payload = staging / "payload"
    if drop.form == "folder":
        return move(drop.path, payload)
    os.mkdir(payload)
    return move(drop.path, payload / drop.path.name)


def _discard_staging(staging: Path) -> None:
    """Removes a staging folder that holds none of the user's files (rmdir refuses one that does)."""
    try:
        os.unlink(staging / DROP_DOC)
    except FileNotFoundError:
        pass
    for folder in (staging / "payload", staging):
        try:
            os.rmdir(folder)
        except OSError:
            pass












def note_accept_failure(staging: Path) -> int:
    """Records one more failed accept of a staged drop (a marker file, so restarts count
    too); returns how many there have been."""
    n = 1
    while not create_exclusive(staging / f".accept-failed-{n}"):
        n += 1
    return n
