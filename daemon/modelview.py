"""The model registry as people see it (GET /api/v1/models, `vidspool models list`): each
entry, where it is on disk or what is missing, and which workers hold it."""

from __future__ import annotations

from collections.abc import Iterable

from contract.errors import JobError
from contract.model_folders import model_folder
from daemon.config import Settings
from daemon.registry import refresh_models


def model_entries(settings: Settings, workers: Iterable = ()) -> list[dict]:
    refresh_models(settings)  # list a folder copied into [registry] dir since the last scan
    workers = list(workers)
    out = []
    for name, entry in sorted(settings.models.items()):
        try:
            folder, problem = str(model_folder(name, entry.model_dump(mode="json"))), None
        except JobError as exc:
            folder, problem = None, exc.message
        out.append({
            "name": name, "path": str(entry.path) if entry.path else None, "repo": entry.repo,
            "kinds": entry.kinds, "pipeline": entry.pipeline, "backend": entry.backend, "dtype": entry.dtype,
            "offload": entry.offload, "defaults": entry.defaults, "folder": folder, "available": problem is None,
            "problem": problem,
            "loaded_on": [w.device for w in workers if w.holds(name)],
            "loading_on": [w.device for w in workers if name in w.loading],
        })
    return out
