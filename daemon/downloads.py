"""Model downloads from the Hugging Face hub (POST /api/v1/models/download, `vidspool models
download`, Wan's `POST /api/v1/models/download`).

`huggingface_hub.snapshot_download` fetches the repo into this host's hub cache in a thread
of its own, so the event loop never waits on the network. The hub cache stays the storage:
when the snapshot is complete, a symlink `[registry] dir/NAME` → the snapshot folder
registers it, and the registry scan (daemon/registry.py) lists it from then on, across
restarts, like a folder copied in. NAME is the repo's last part (`Wan-AI/Wan2.1-T2V-1.3B-Diffusers`
→ `Wan2.1-T2V-1.3B-Diffusers`), or `ORG--NAME` when another model has that name already;
a `[models.X] repo = …` entry for the same repo is served as X, without a link.

Progress is the bytes of the repo's files present in the cache's blobs (finished, or the
newest partial file of each) against the sizes in the hub's file list. The downloads' state
is this daemon's, in memory (the hub cache is per host): a failed or running download is
forgotten at restart; a finished one stays registered. No torch here.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from contract.model_folders import INDEX, hub_cache_dir

log = structlog.get_logger()

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")  # as [models.X] repo
REVISION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,127}$")
REPO_FORM = "ORG/NAME, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers (letters, digits, '-', '_', '.')"


class DownloadRefused(ValueError):
    """A download that cannot start; `code` is bad_request, offline or conflict."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Download:
    repo: str
    revision: str
    name: str
    link: bool  # registered by a link in [registry] dir (False: a [models.NAME] repo entry)
    state: str = "downloading"  # downloading, downloaded, failed
    error: str | None = None
    folder: str | None = None
    bytes_total: int | None = None
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


def storage_folder(repo: str) -> Path:
    return hub_cache_dir() / f"models--{repo.replace('/', '--')}"


def hub_repo(path) -> str | None:
    """ORG/NAME of a hub cache snapshot folder (…/models--ORG--NAME/snapshots/SHA), or None."""
    parts = Path(path).parts if path else ()
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3][len("models--"):].replace("--", "/", 1)
    return None


class Downloads:
    """The downloads this daemon ran, by repo; `settings` gives the current Settings."""

    def __init__(self, settings: Callable[[], object]):
        self.settings = settings
        self._by_repo: dict[str, Download] = {}
        self._lock = threading.Lock()

    def all(self) -> list[dict]:
        with self._lock:
            return [d.describe() for d in self._by_repo.values()]

    def start(self, repo: str, revision: str = "main") -> dict:
        """Starts a download (or answers the one running for this repo). DownloadRefused: a
        bad repo id or revision, this host is offline, or another revision is running."""
        from huggingface_hub import constants

        if not isinstance(repo, str) or not REPO_ID.match(repo) or "--" in repo or ".." in repo:
            raise DownloadRefused("bad_request", f"repo {repo!r} is not a Hugging Face model id: use {REPO_FORM}")
        if not isinstance(revision, str) or not REVISION.match(revision) or ".." in revision:
            raise DownloadRefused("bad_request", f"revision {revision!r} is not a branch, tag or commit hash")
        registry = Path(self.settings().registry.dir)
        if constants.is_offline_mode():
            raise DownloadRefused("offline", (
                "this host is offline (HF_HUB_OFFLINE=1): download the model elsewhere "
                f"(`hf download {repo}`) and copy it into [registry] dir ({registry}) with "
                "`vidspool models import FOLDER`, or start the daemon with HF_HUB_OFFLINE=0"))
        with self._lock:
            running = self._by_repo.get(repo)
            if running is not None and running.state == "downloading":
                if running.revision != revision:
                    raise DownloadRefused("conflict", f"{repo} is being downloaded at revision {running.revision!r}; "
                                                      "ask again when that has ended")
                return running.describe()
            name, link = self._name_for(repo, {o.name for o in self._by_repo.values()
                                               if o.repo != repo and o.state != "failed"})
            download = self._by_repo[repo] = Download(repo, revision, name, link)
        log.info("model.download_started", repo=repo, revision=revision, name=name)
        threading.Thread(target=self._run, args=(download,), name=f"download-{name}", daemon=True).start()
        return download.describe()

    def _name_for(self, repo: str, taken: set[str]) -> tuple[str, bool]:
        """The model name this repo is registered as (see the module docstring); `taken`:
        the names of other repos' downloads."""
        from daemon.registry import refresh_models

        settings = self.settings()
        refresh_models(settings)
        for name in sorted(settings.configured_models):
            if name in settings.models and settings.models[name].repo == repo:
                return name, False
        registry = Path(settings.registry.dir)
        for name in (repo.split("/")[1], repo.replace("/", "--")):
            existing, entry = settings.models.get(name), registry / name
            ours = name not in taken and (existing is None or hub_repo(existing.path) == repo) and (
                not os.path.lexists(entry) or (entry.is_symlink() and hub_repo(entry.resolve()) == repo))
            if ours:
                return name, True
        raise DownloadRefused("conflict", f"models named {repo.split('/')[1]!r} and {repo.replace('/', '--')!r} "
                                          f"exist already; remove one from {registry} to download {repo}")

    # -- the thread ---------------------------------------------------------------------
    def _run(self, d: Download) -> None:
        try:
            d.folder = str(self._fetch(d))
            if d.link:
                self._register(d)
            d.finished_at, d.state = time.time(), "downloaded"
            log.info("model.downloaded", repo=d.repo, revision=d.revision, name=d.name, folder=d.folder)
        except Exception as exc:  # everything a download meets ends in its state, never the daemon
            d.error, d.finished_at, d.state = describe_failure(d, exc), time.time(), "failed"
            log.warning("model.download_failed", repo=d.repo, revision=d.revision, error=d.error)

    def _fetch(self, d: Download) -> Path:
        from huggingface_hub import HfApi, snapshot_download

        info = HfApi().model_info(d.repo, revision=d.revision, files_metadata=True)
        files = {s.rfilename: s for s in info.siblings or []}
        if INDEX not in files:
            raise NotDiffusers(f"{d.repo} is not a diffusers model: it has no {INDEX} at its top "
                               f"(its files: {', '.join(sorted(files)[:8]) or 'none'})")
        d.blobs = {(s.lfs.sha256 if s.lfs else s.blob_id): s.size or 0 for s in files.values() if s.blob_id or s.lfs}
        d.bytes_total = sum(s.size or 0 for s in files.values())
        # By the revision asked for, so that refs/REVISION is written for [models.X] repo entries.
        return Path(snapshot_download(d.repo, revision=d.revision, cache_dir=hub_cache_dir(),
                                      tqdm_class=_quiet_bars())).resolve()

    def _register(self, d: Download) -> None:
        """Links [registry] dir/NAME to the snapshot folder (replacing an older link of it)."""
        registry = Path(self.settings().registry.dir)
        registry.mkdir(parents=True, exist_ok=True)
        tmp = registry / f".download-{d.name}-{secrets.token_hex(4)}"
        os.symlink(d.folder, tmp, target_is_directory=True)
        try:
            os.replace(tmp, registry / d.name)
        except OSError:
            os.unlink(tmp)
            raise


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
