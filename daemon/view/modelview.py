"""The model registry as people see it (GET /api/v1/models, `vidspool models list`): each
entry, where it is on disk or what is missing, which workers hold it, and its hub download
(daemon/view/downloads.py) when this daemon ran one: a repo still downloading, or whose download
failed, is listed under the name it will have, with the state and the error."""

from __future__ import annotations

from collections.abc import Iterable

from contract.errors import JobError
from contract.model_folders import model_folder
from daemon.config import ModelConfig, Settings
from daemon.registry import hub_repo, refresh_models
from daemon.view.hostpaths import HostPaths


def model_entries(settings: Settings, workers: Iterable = (), downloads: Iterable[dict] = ()) -> list[dict]:
    refresh_models(settings)  # list a folder copied into [registry] dir since the last scan
    workers = list(workers)
    by_name = {d["name"]: d for d in downloads}
    out = []
    for name, entry in sorted(settings.models.items()):
        download = by_name.pop(name, None)
        try:
            folder, problem = str(model_folder(name, entry.model_dump(mode="json"))), None
        except JobError as exc:
            folder, problem = None, exc.message
        out.append(_entry(name, entry, folder, problem, workers, download))
    for name, download in sorted(by_name.items()):  # not registered (yet)
        out.append(_entry(name, ModelConfig(repo=download["repo"], revision=download["revision"]), None,
                          _download_problem(download), workers, download))
    return out


def _entry(name: str, entry: ModelConfig, folder: str | None, problem: str | None, workers: list,
           download: dict | None) -> dict:
    return {
        "name": name, "path": str(entry.path) if entry.path else None, "repo": entry.repo or hub_repo(entry.path),
        "kinds": entry.kinds, "pipeline": entry.pipeline, "backend": entry.backend, "dtype": entry.dtype,
        "offload": entry.offload, "defaults": entry.defaults, "folder": folder, "available": problem is None,
        "problem": problem,
        "loaded_on": [w.device for w in workers if w.holds(name)],
        "loading_on": [w.device for w in workers if name in w.loading],
        "download": download,
    }


def shown_entry(entry: dict, paths: HostPaths) -> dict:
    """An entry as the HTTP fronts show it: its folders and texts without host paths."""
    download = entry["download"] and {**entry["download"], "folder": paths.path(entry["download"].get("folder")),
                                      "error": entry["download"].get("error") and paths.text(entry["download"]["error"])}
    return {**entry, "path": paths.path(entry["path"]), "folder": paths.path(entry["folder"]),
            "problem": entry["problem"] and paths.text(entry["problem"]), "download": download}


def _download_problem(d: dict) -> str:
    if d["state"] == "failed":
        return f"download failed: {d['error']}"
    if d["state"] == "downloaded":
        return f"downloaded into {d['folder']}, but not in the registry"
    total = f" of {d['bytes_total']}" if d["bytes_total"] is not None else ""
    return f"downloading from the hub: {d['bytes_done']}{total} bytes"
