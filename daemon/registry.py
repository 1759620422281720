"""The model registry as the daemon sees it: [models.*] plus folders found in [registry] dir.

Reads only model_index.json files and file names (no torch). A folder `models/NAME/`
holding a diffusers model_index.json becomes model NAME, serving the kinds its pipeline
family can do (a hub download's link `ORG--NAME` becomes model `ORG/NAME`,
daemon/view/downloads.py); one in a lip-sync layout (Wav2Lip, MuseTalk 1.5) serves talking-head.
A folder still being copied (a required file or a named component missing) is left out
until it is complete.
The folder is read at start and reload, and rescanned (refresh_models) before a job fails
model_not_found and for each models view, so a folder copied in is found without a reload.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from contract.lipsync_folders import backend_of
from contract.families import kinds_of
from contract.model_folders import INDEX, folder_missing
from daemon.view.downloads import registered_name

log = structlog.get_logger()


def discover_models(folder: Path) -> dict:
    from daemon.config import ModelConfig

    found = {}
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith(".") or (entry.is_dir() and folder_missing(entry)):
            continue  # a folder still being copied is registered once it is complete
        backend = backend_of(entry) if entry.is_dir() else None
        if backend is not None:
            found[entry.name] = ModelConfig(path=entry.resolve(), kinds=["talking-head"], backend=backend)
            continue
        if not (entry / INDEX).is_file():
            continue
        try:
            class_name = json.loads((entry / INDEX).read_text(encoding="utf-8")).get("_class_name", "")
        except (OSError, ValueError, AttributeError):
            class_name = ""  # a broken folder is still listed; loading it says what is wrong
        found[registered_name(entry)] = ModelConfig(path=entry.resolve(), kinds=kinds_of(class_name))
    return found


def incomplete_model(folder: Path, name: str) -> tuple[Path, list[str]] | None:
    """The folder `name` in [registry] dir when it is left out for what it still lacks:
    (the folder, what it lacks); None otherwise. Found in the listing: a job's model name
    never becomes a path."""
    try:
        entry = next((e for e in Path(folder).iterdir() if e.name == name), None)
    except OSError:
        return None
    if entry is None or name.startswith(".") or not entry.is_dir():
        return None
    missing = folder_missing(entry)
    return (entry, missing) if missing else None


def refresh_models(settings) -> bool:
    """Rescans [registry] dir into `settings.models` in place: a new folder is added, a
    vanished one dropped, a changed one replaced; [models.*] entries are never touched.
    Returns whether anything changed."""
    configured = settings.configured_models
    found = {n: m for n, m in discover_models(settings.registry.dir).items() if n not in configured}
    current = {n: m for n, m in settings.models.items() if n not in configured}
    if found == current:
        return False
    for name in current.keys() - found.keys():
        del settings.models[name]
    changed = sorted(n for n in found.keys() & current.keys() if found[n] != current[n])
    settings.models.update(found)
    log.info("registry.rescanned", folder=str(settings.registry.dir), added=sorted(found.keys() - current.keys()),
             removed=sorted(current.keys() - found.keys()), changed=changed)
    return True
