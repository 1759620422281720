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
import os
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from contract.lipsync_folders import backend_of
from contract.families import kinds_of
from contract.errors import JobError
from contract.model_folders import INDEX, folder_missing, read_index

log = structlog.get_logger()


@dataclass(frozen=True)
class FoundModel:
    """A model folder found in [registry] dir: what its [models.*] entry would say
    (daemon/config.py's Settings.registered turns it into one; this module reads no config)."""

    path: Path
    kinds: list[str] = field(default_factory=list)
    backend: str | None = None


def hub_repo(path) -> str | None:
    """ORG/NAME of a hub cache snapshot folder (…/models--ORG--NAME/snapshots/SHA), or None."""
    parts = Path(path).parts if path else ()
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3][len("models--"):].replace("--", "/", 1)
    return None


def registered_name(entry: Path) -> str:
    """The model name of a [registry] dir entry: ORG/NAME for a download's link ORG--NAME to
    a snapshot of that very repo, else the entry's own name."""
    repo = entry.name.replace("--", "/", 1)
    if "--" in entry.name and entry.is_symlink() and hub_repo(os.path.realpath(entry)) == repo:
        return repo
    return entry.name


def discover_models(folder: Path) -> dict[str, FoundModel]:
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
            found[entry.name] = FoundModel(entry.resolve(), ["talking-head"], backend)
            continue
        if not (entry / INDEX).is_file():
            continue
        try:
            class_name = json.loads((entry / INDEX).read_text(encoding="utf-8")).get("_class_name", "")
        except (OSError, ValueError, AttributeError):
            class_name = ""  # a broken folder is still listed; loading it says what is wrong
        found[registered_name(entry)] = FoundModel(entry.resolve(), kinds_of(class_name))
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
    found = settings.registered({n: m for n, m in discover_models(settings.registry.dir).items() if n not in configured})
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


def served_kinds(entry: dict) -> list[str]:
    """The kinds a listed model runs: its configured `kinds`, else what its folder holds (a
    lip-sync layout: talking-head; a diffusers pipeline: its family's kinds); empty when
    neither says (jobs of any kind may name it)."""
    if entry["kinds"]:
        return entry["kinds"]
    folder = Path(entry["folder"]) if entry.get("folder") else None
    if entry.get("backend") or (folder and backend_of(folder)):
        return ["talking-head"]
    class_name = entry.get("pipeline")
    if not class_name and folder:
        try:
            class_name = read_index(entry["name"], folder)["_class_name"]
        except JobError:
            return []  # a broken folder: its problem shows on loading
    return kinds_of(class_name or "")
