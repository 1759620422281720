"""Reading a staged drop, before any of its moves: the media a crash kept from following a
NAME.json out of the inbox, its job file (or the job a preset makes of a bare file), the
validated job, and the webhook a failed drop may still call. What is read is handed to the
one-rename moves (daemon/spool/transitions.py) as a StagedDrop; they never read a drop.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from contract.errors import MOUNT_ERRNOS, ErrorCode, JobError
from contract.kinds import KindSpec
from daemon.config import Settings
from daemon.jobs.intake import plain_name
from daemon.lines import printable
from daemon.jobs.jobfile import job_webhook, parse_job_bytes, validate_job
from daemon.spool.fsops import file_type_words, move, read_json, read_regular_file
from daemon.spool.layout import DROP_DOC, Spool, sanitize_job_id
from daemon.spool.transitions import StagedDrop


class DropReader:
    """Reads staged drops for accepting; `settings` gives the current Settings."""

    def __init__(self, spool: Spool, settings: Callable[[], Settings], kinds: Mapping[str, KindSpec]):
        self.spool = spool
        self.settings = settings
        self.kinds = kinds

    def read(self, staging: Path) -> StagedDrop | None:
        """The staged drop, read and checked as accept needs it; None when its payload is
        gone (a crash after it was queued or ended)."""
        payload = staging / "payload"
        if not payload.exists():
            return None
        settings = self.settings()
        job_file, default_id, info = staged_job_file(staging)
        self._gather_media(payload, info)
        doc, error = self._read_drop(payload, job_file, info, settings)
        drop = StagedDrop(staging, info, default_id, doc, error, webhook=self._trusted_webhook(doc, info, settings))
        if error is None:
            try:
                drop.job = validate_job(doc, payload, self.kinds, settings, info.get("preset"))
            except JobError as exc:
                drop.error = exc
            except (RecursionError, ValueError, TypeError) as exc:  # never leave a drop without a status
                drop.validation_crash = exc
                drop.error = JobError(ErrorCode.INTERNAL, f"validating the job failed: {type(exc).__name__}: {exc}")
        return drop

    def read_to_fail(self, staging: Path) -> StagedDrop | None:
        """A staged drop that accept keeps failing on, read as far as it can be (the id the
        job asked for, or the API promised); None when its payload is gone."""
        if not os.path.lexists(staging / "payload"):
            return None
        settings = self.settings()
        job_file, default_id, info = staged_job_file(staging)
        try:
            doc, _ = self._read_drop(staging / "payload", job_file, info, settings)
        except Exception:  # noqa: BLE001 - whatever broke accept may break this too
            doc = {}
        return StagedDrop(staging, info, default_id, doc, None, webhook=self._trusted_webhook(doc, info, settings))

    def _gather_media(self, payload: Path, info: dict) -> None:
        """Media a NAME.json named that a crash kept from following it out of the inbox."""
        names, drop = info.get("inputs"), info.get("drop")
        if info.get("form") != "json" or not isinstance(names, list) or not isinstance(drop, str):
            return
        folder = (self.spool.root / drop).parent
        for name in names:
            if plain_name(name) and not os.path.lexists(payload / name) and os.path.lexists(folder / name):
                move(folder / name, payload / name)

    def _read_drop(self, payload: Path, job_file: Path | None, info: dict,
                   settings: Settings) -> tuple[dict, JobError | None]:
        """The dropped job document ({} if there is none) and what is wrong with the drop."""
        limit = settings.limits.job_json_bytes
        try:
            if info["form"] == "link":
                raise link_drop_error(info)
            if info["form"] == "bare":
                return self._bare_job(payload, info, settings), None
            what = "job.json" if info["form"] == "folder" else info["name"]
            raw = read_job_file(job_file, what, limit)
            if raw is None:
                raise JobError(ErrorCode.INVALID_JOB, f"folder {info['name']} has no job.json")
            return parse_job_bytes(raw, limit, what), None
        except JobError as exc:
            return {}, exc

    def _bare_job(self, payload: Path, info: dict, settings: Settings) -> dict:
        preset = settings.presets.get(info["preset"])
        if preset is None:  # removed from the config (SIGHUP) after the file was taken
            raise JobError(ErrorCode.INVALID_JOB, f"preset {info['preset']!r} is no longer configured")
        kind = self.kinds.get(preset.kind or "")
        if kind is None:
            raise JobError(ErrorCode.INVALID_JOB, f"preset {info['preset']}: unknown kind {preset.kind!r}")
        try:
            return bare_file_job(payload / info["name"], preset.kind, preset.accept_as, kind, settings.limits.job_json_bytes)
        except ValueError as exc:
            raise JobError(ErrorCode.INVALID_JOB, str(exc)) from None

    @staticmethod
    def _trusted_webhook(doc: dict, info: dict, settings: Settings) -> dict:
        """A failed drop's webhook: its preset's, else [webhooks] default; none when its job
        file names its own (it would have replaced those, and the file is not trusted)."""
        if doc.get("webhook") is not None:
            return {}
        webhook = job_webhook(None, settings.presets.get(info.get("preset") or ""), settings)
        return {"webhook": webhook} if webhook else {}


def staged_job_file(staging: Path) -> tuple[Path | None, str, dict]:
    """For a staged drop: (its job file, None for a bare file or a link; default id; drop doc)."""
    info = read_json(staging / DROP_DOC)
    if not _sound_drop_doc(info):  # lost with power (written without fsync), or damaged
        info = {"form": "folder", "name": "job", "preset": None}
    payload = staging / "payload"
    name = info["name"]
    if info["form"] == "json":
        return payload / name, sanitize_job_id(name[: -len(".json")]), info
    if info["form"] == "folder":
        return payload / "job.json", sanitize_job_id(name), info
    if info["form"] == "link":
        return None, sanitize_job_id(name), info
    return None, sanitize_job_id(os.path.splitext(name)[0]), info  # bare


def _sound_drop_doc(info: dict | None) -> bool:
    """Whether a staging folder's drop doc is one stage_drop wrote (not lost or damaged)."""
    if not isinstance(info, dict) or info.get("form") not in ("json", "folder", "link", "bare"):
        return False
    name, preset = info.get("name"), info.get("preset")
    if not plain_name(name):
        return False
    if info["form"] == "json" and not name.endswith(".json"):
        return False
    return isinstance(preset, str) if info["form"] == "bare" else preset is None or isinstance(preset, str)


def read_job_file(path: Path, what: str, limit: int) -> bytes | None:
    """The bytes of a staged job file, None if there is none; JobError if it cannot be one."""
    try:
        st, raw = read_regular_file(path, limit)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in MOUNT_ERRNOS:
            raise
        raise JobError(ErrorCode.INVALID_JOB, f"{what} cannot be read: {exc.strerror}") from None
    if raw is not None:
        return raw
    if stat.S_ISLNK(st.st_mode):
        raise JobError(ErrorCode.INVALID_JOB, f"{what} is {link_words(path)}; drop the file itself, not a link to it")
    if stat.S_ISREG(st.st_mode):
        raise JobError(ErrorCode.INVALID_JOB, f"{what} is {st.st_size} bytes, over the limit of {limit} ([limits] job_json_bytes)")
    raise JobError(ErrorCode.INVALID_JOB, f"{what} is {file_type_words(st.st_mode)}, not a regular file")


def link_words(path: Path) -> str:
    """What a symbolic link is, in words: a loop, dangling, or pointing out of its folder."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "a symbolic link to a missing file"
    real = Path(os.path.realpath(path))
    if path.parent.resolve() not in real.parents:
        return "a symbolic link out of its folder"
    return "a symbolic link"


def link_drop_error(info: dict) -> JobError:
    return JobError(ErrorCode.INVALID_JOB, (
        f"{printable(info['name'])} is a symbolic link to a folder; drop the folder itself (copy it, then rename it in)"))


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
    st, raw = read_regular_file(path, text_limit)  # a FIFO would block, a link could read any file
    if raw is None and stat.S_ISREG(st.st_mode):
        raise ValueError(f"{printable(path.name)} is {st.st_size} bytes, over the limit of {text_limit} bytes for a text drop")
    if raw is None:
        raise ValueError(f"{printable(path.name)} is {file_type_words(st.st_mode)}, not a regular file; drop the file itself")
    text = raw.decode("utf-8", errors="replace")
    is_list = "list" in str(field_info.annotation)
    value = [line.strip() for line in text.splitlines() if line.strip()] if is_list else text
    return {"kind": preset_kind, "params": {target: value}}
