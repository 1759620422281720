"""Model downloads from the Hugging Face hub (POST /api/v1/models/download, `vidspool models
download`, Wan's `POST /api/v1/models/download`).

Who may download: a caller with an [api] token of the submit scope (a front that requires
tokens has checked it; an open front passes the bearer on), the operator key of
`vidspool models download` (daemon/view/operator_key.py), or anyone for a repo matching
`[registry] download_allow`; the rest are refused (forbidden).

Before a download starts, the hub's file list of the revision (with sizes) is read off the
event loop, and it is refused when it is over `[registry] max_download_bytes` or does not
fit the hub cache's free disk beside what running downloads still need; at most
`max_concurrent_downloads` run (or are being measured) at once. The files fetched are those
of the commit measured, so a push in between cannot make them larger.

`huggingface_hub.snapshot_download` fetches the repo into this host's hub cache in a thread
of its own, so the event loop never waits on the network. The hub cache stays the storage:
when the snapshot is complete, a symlink `[registry] dir/ORG--NAME` → the snapshot folder
registers it as model `ORG/NAME`, its full repo id, so that no repo can take a name meaning
another (`evil/Wan2.1-T2V-1.3B-Diffusers` is never `Wan2.1-T2V-1.3B-Diffusers`); a short name
comes only from the operator's `[models.X] repo = …`, served as X without a link. The
registry scan (daemon/registry.py) lists it from then on, across restarts.

Progress is the bytes of the repo's files present in the cache's blobs (finished, or the
newest partial file of each) against the sizes in the hub's file list. The downloads' state
is this daemon's, in memory (the hub cache is per host): a failed one stays listed
`failed_downloads_keep_seconds` (only the newest `failed_downloads_kept`) and is forgotten
at restart, a finished one stays registered. No torch here.
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import hmac
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from contract.model_folders import INDEX, hub_cache_dir
from daemon.registry import registered_name
from daemon.view.operator_key import key_file, publish_key

log = structlog.get_logger()

REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")  # as [models.X] repo (fullmatch: a "$" lets "\n" in)
REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,127}")
REPO_FORM = "ORG/NAME, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers (letters, digits, '-', '_', '.')"
# The HTTP status of each refusal, on every front.
REFUSAL_STATUS = {"bad_request": 400, "forbidden": 403, "conflict": 409, "too_large": 413,
                  "too_many_downloads": 429, "offline": 503, "insufficient_storage": 507}


class DownloadRefused(ValueError):
    """A download that cannot start; `code` is one of REFUSAL_STATUS."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message

    @property
    def status(self) -> int:
        return REFUSAL_STATUS[self.code]


@dataclass
class Download:
    repo: str
    revision: str
    name: str = ""
    link: bool = True  # registered by a link in [registry] dir (False: a [models.NAME] repo entry)
    state: str = "downloading"  # downloading, downloaded, failed
    error: str | None = None
    folder: str | None = None
    bytes_total: int | None = None
    commit: str | None = None  # the commit measured, and fetched
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    blobs: dict[str, int] = field(default_factory=dict)  # blob name (etag) → size, from the hub's file list

    def describe(self) -> dict:
        return {"repo": self.repo, "revision": self.revision, "name": self.name, "state": self.state,
                "bytes_done": self.bytes_done(), "bytes_total": self.bytes_total, "error": self.error,
                "folder": self.folder, "started_at": self.started_at, "finished_at": self.finished_at}

    def bytes_done(self) -> int:
        if self.state == "downloaded":
            return self.bytes_total or 0
        try:
            names = os.listdir(storage_folder(self.repo) / "blobs")
        except OSError:
            return 0
        have: dict[str, int] = {}
        for entry in names:  # <etag> when complete, <etag>.<uuid>.incomplete while it is written
            etag = entry.split(".", 1)[0]
            if etag in self.blobs:
                try:
                    size = os.stat(storage_folder(self.repo) / "blobs" / entry).st_size
                except OSError:
                    continue
                have[etag] = max(have.get(etag, 0), min(size, self.blobs[etag]))
        return sum(have.values())

    def bytes_left(self) -> int:
        return max(0, (self.bytes_total or 0) - self.bytes_done())


def storage_folder(repo: str) -> Path:
    return hub_cache_dir() / f"models--{repo.replace('/', '--')}"


def link_name(repo: str) -> str:
    """The [registry] dir entry of a downloaded repo (a folder name holds no '/')."""
    return repo.replace("/", "--", 1)


def check_request(repo, revision) -> None:
    if not isinstance(repo, str) or not REPO_ID.fullmatch(repo) or "--" in repo or ".." in repo:
        raise DownloadRefused("bad_request", f"repo {repo!r} is not a Hugging Face model id: use {REPO_FORM}")
    if not isinstance(revision, str) or not REVISION.fullmatch(revision) or ".." in revision:
        raise DownloadRefused("bad_request", f"revision {revision!r} is not a branch, tag or commit hash")


class Downloads:
    """The downloads this daemon ran, by repo; `settings` gives the current Settings."""

    def __init__(self, settings: Callable[[], object]):
        self.settings = settings
        self._by_repo: dict[str, Download] = {}
        self._measuring = 0  # downloads whose file list is being read (they count as running)
        self._lock = threading.Lock()
        self._operator_key = self._publish_operator_key()

    def _publish_operator_key(self) -> str | None:
        from huggingface_hub import constants

        if constants.is_offline_mode():
            return None  # every download is refused: no key to hand out
        s = self.settings()
        return publish_key(key_file(s.registry.dir, s.spool.host))

    def all(self) -> list[dict]:
        with self._lock:
            self._forget_old_failures()
            return [d.describe() for d in self._by_repo.values()]

    def permits(self, repo: str, bearer: str | None) -> bool:
        """Whether a caller presenting `bearer` (or none) may download `repo` on a front
        that found no token of the submit scope in it (daemon/http/auth.py's may_submit):
        the operator key, or a repo [registry] download_allow lets anyone fetch."""
        s = self.settings()
        if bearer:
            given = bearer.encode("utf-8", "surrogateescape")
            if self._operator_key and hmac.compare_digest(given, self._operator_key.encode()):
                return True
        return any(fnmatch.fnmatchcase(repo, pattern) for pattern in s.registry.download_allow)

    async def start(self, repo, revision="main", *, bearer: str | None = None, authorized: bool = False) -> dict:
        """Starts a download (or answers the one running for this repo); `authorized`: the
        front has found a token of the submit scope. DownloadRefused names why not."""
        from huggingface_hub import constants

        check_request(repo, revision)
        if not (authorized or self.permits(repo, bearer)):
            raise forbidden(repo)
        if constants.is_offline_mode():
            raise DownloadRefused("offline", (
                "this host is offline (HF_HUB_OFFLINE=1): download the model elsewhere "
                f"(`hf download {repo}`) and copy it into [registry] dir ({self.settings().registry.dir}) with "
                "`vidspool models import FOLDER`, or start the daemon with HF_HUB_OFFLINE=0"))
        with self._lock:
            self._forget_old_failures()
            if (running := self._running(repo, revision)) is not None:
                return running.describe()
            d = Download(repo, revision)
            d.name, d.link = self._name_for(repo)
            self._take_place()
        try:
            await asyncio.to_thread(self._measure, d)  # the hub's file list: network
            with self._lock:
                if (running := self._running(d.repo, revision)) is not None:  # asked for by another spelling
                    return running.describe()
                if d.repo != repo:  # the hub's own spelling of it
                    if not (authorized or self.permits(d.repo, bearer)):
                        raise forbidden(d.repo)
                    d.name, d.link = self._name_for(d.repo)
                self._check_room(d)
                self._by_repo[d.repo] = d
        except DownloadRefused:
            raise
        except Exception as exc:  # the hub does not have it, or it is no diffusers model: listed failed
            self._failed(d, exc)
            with self._lock:
                if getattr(self._by_repo.get(d.repo), "state", None) != "downloading":
                    self._by_repo[d.repo] = d
            return d.describe()
        finally:
            with self._lock:
                self._measuring -= 1
        log.info("model.download_started", repo=d.repo, revision=revision, commit=d.commit, name=d.name,
                 bytes=d.bytes_total)
        threading.Thread(target=self._run, args=(d,), name=f"download-{d.name}", daemon=True).start()
        return d.describe()

    # -- the checks (the lock held) ---------------------------------------------------------
    def _running(self, repo: str, revision: str) -> Download | None:
        running = self._by_repo.get(repo)
        if running is None or running.state != "downloading":
            return None
        if running.revision != revision:
            raise DownloadRefused("conflict", f"{repo} is being downloaded at revision {running.revision!r}; "
                                              "ask again when that has ended")
        return running

    def _take_place(self) -> None:
        limit = self.settings().registry.max_concurrent_downloads
        busy = self._measuring + sum(d.state == "downloading" for d in self._by_repo.values())
        if busy >= limit:
            raise DownloadRefused("too_many_downloads", f"{busy} downloads are running, as many as [registry] "
                                  f"max_concurrent_downloads ({limit}) allows; ask again when one has ended")
        self._measuring += 1

    def _check_room(self, d: Download) -> None:
        """Refuses a download the hub cache's disk cannot hold (beside what the running ones
        still need), or one over [registry] max_download_bytes."""
        others = sum(o.bytes_left() for o in self._by_repo.values() if o.state == "downloading" and o is not d)
        need, free = d.bytes_left() + others, shutil.disk_usage(existing_parent(hub_cache_dir())).free
        if need > free:
            raise DownloadRefused("insufficient_storage", (
                f"{d.repo} needs {d.bytes_left()} bytes more in the hub cache"
                + (f" (and running downloads {others})" if others else "")
                + f", but its disk has {free} bytes free"))
        limit = self.settings().registry.max_download_bytes
        if (d.bytes_total or 0) > limit:
            raise DownloadRefused("too_large", f"{d.repo} is {d.bytes_total} bytes, over [registry] "
                                               f"max_download_bytes ({limit})")

    def _forget_old_failures(self) -> None:
        """Failed downloads are listed for a while, and only the newest few."""
        registry = self.settings().registry
        oldest = time.time() - registry.failed_downloads_keep_seconds
        failed = sorted((d for d in self._by_repo.values() if d.state == "failed"),
                        key=lambda d: d.finished_at or 0, reverse=True)
        for n, d in enumerate(failed):
            if n >= registry.failed_downloads_kept or (d.finished_at or 0) < oldest:
                del self._by_repo[d.repo]

    def _name_for(self, repo: str) -> tuple[str, bool]:
        """The model name this repo is registered as, and whether by a link (see the module
        docstring). DownloadRefused(conflict) when the operator has that name for another."""
        from daemon.registry import refresh_models

        settings = self.settings()
        refresh_models(settings)
        for name in sorted(settings.configured_models):
            if name in settings.models and settings.models[name].repo == repo:
                return name, False
        entry = Path(settings.registry.dir) / link_name(repo)
        if repo in settings.configured_models:
            raise DownloadRefused("conflict", f"[models.\"{repo}\"] in the config names another model; "
                                              f"set its repo = \"{repo}\" to download it")
        if os.path.lexists(entry) and registered_name(entry) != repo:
            raise DownloadRefused("conflict", f"{entry.name} in [registry] dir is another model; "
                                              f"remove it to download {repo}")
        return repo, True

    # -- off the event loop -----------------------------------------------------------------
    def _measure(self, d: Download) -> None:
        """The hub's file list of the revision: sizes, blob names, its commit and the repo's
        own spelling."""
        from huggingface_hub import HfApi, constants

        info = HfApi().model_info(d.repo, revision=d.revision, files_metadata=True,
                                  timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT)
        files = {s.rfilename: s for s in info.siblings or []}
        if INDEX not in files:
            raise NotDiffusers(f"{d.repo} is not a diffusers model: it has no {INDEX} at its top "
                               f"(its files: {', '.join(sorted(files)[:8]) or 'none'})")
        d.blobs = {(s.lfs.sha256 if s.lfs else s.blob_id): s.size or 0 for s in files.values() if s.blob_id or s.lfs}
        d.bytes_total = sum(s.size or 0 for s in files.values())
        d.commit = info.sha or d.revision
        if isinstance(info.id, str) and info.id.lower() == d.repo.lower() and REPO_ID.fullmatch(info.id):
            d.repo = info.id

    def _run(self, d: Download) -> None:
        try:
            d.folder = str(self._fetch(d))
            if d.link:
                self._register(d)
            d.finished_at, d.state = time.time(), "downloaded"
            log.info("model.downloaded", repo=d.repo, revision=d.revision, name=d.name, folder=d.folder)
        except Exception as exc:  # everything a download meets ends in its state, never the daemon
            self._failed(d, exc)

    @staticmethod
    def _failed(d: Download, exc: Exception) -> None:
        d.error, d.finished_at, d.state = describe_failure(d, exc), time.time(), "failed"
        log.warning("model.download_failed", repo=d.repo, revision=d.revision, error=d.error)

    def _fetch(self, d: Download) -> Path:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(d.repo, revision=d.commit, cache_dir=hub_cache_dir(),
                                        tqdm_class=_quiet_bars())).resolve()
        if d.revision != d.commit:  # refs/REVISION, as a download by name writes it, for [models.X] repo entries
            ref = storage_folder(d.repo) / "refs" / d.revision
            ref.parent.mkdir(parents=True, exist_ok=True)
            tmp = ref.with_name(f".{ref.name}.{secrets.token_hex(4)}")
            tmp.write_text(d.commit)
            os.replace(tmp, ref)
        return folder

    def _register(self, d: Download) -> None:
        """Links [registry] dir/ORG--NAME to the snapshot folder (replacing an older link of it)."""
        registry = Path(self.settings().registry.dir)
        registry.mkdir(parents=True, exist_ok=True)
        tmp = registry / f".download-{link_name(d.repo)}-{secrets.token_hex(4)}"
        os.symlink(d.folder, tmp, target_is_directory=True)
        try:
            os.replace(tmp, registry / link_name(d.repo))
        except OSError:
            os.unlink(tmp)
            raise


def forbidden(repo: str) -> DownloadRefused:
    return DownloadRefused("forbidden", (
        f"downloading {repo} needs an [api] token with the submit scope (Authorization: Bearer), or a repo "
        "the operator allows ([registry] download_allow); the operator's `vidspool models download` has its key"))


def existing_parent(path: Path) -> Path:
    """`path`, or its nearest folder that exists (the hub cache may not yet)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


class NotDiffusers(Exception):
    pass


def _quiet_bars():
    """A tqdm that draws nothing: the daemon's log is no terminal; progress is bytes_done."""
    from tqdm.auto import tqdm

    class Quiet(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": True})

    return Quiet


def describe_failure(d: Download, exc: Exception) -> str:
    """One line for the model list: what went wrong, in words a person can act on."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    where = constants.ENDPOINT
    if isinstance(exc, NotDiffusers):
        return str(exc)
    if isinstance(exc, GatedRepoError):
        return f"{d.repo} is gated on {where}: accept its terms there and give the daemon a token (HF_TOKEN)"
    if isinstance(exc, RepositoryNotFoundError):
        return f"{d.repo}: no such model repository on {where} (or it is private: the daemon needs a token, HF_TOKEN)"
    if isinstance(exc, RevisionNotFoundError):
        return f"{d.repo} has no revision {d.revision!r} on {where}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk of the hub cache ({hub_cache_dir()}) is full: free space and download again"
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"downloading {d.repo} from {where} failed: {type(exc).__name__}: {first[:300]}"
