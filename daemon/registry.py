"""The model registry as the daemon sees it: [models.*] plus folders found in [registry] dir.

Reads only model_index.json files and file names (no torch). A folder `models/NAME/`
holding a diffusers model_index.json becomes model NAME, serving the kinds its pipeline
family can do; one in a lip-sync layout (Wav2Lip, MuseTalk 1.5) serves talking-head.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from pipeline.lipsync.layout import backend_of
from pipeline.models.families import kinds_of
from pipeline.models.locate import INDEX

log = structlog.get_logger()


def discover_models(folder: Path) -> dict:
    from daemon.config import ModelConfig

    found = {}
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith("."):
            continue
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
        found[entry.name] = ModelConfig(path=entry.resolve(), kinds=kinds_of(class_name))
    return found
