"""Where a registry entry's model folder is, and what its model_index.json says.

Offline only: `path` is a local folder; `repo` is looked up in the local Hugging Face hub
cache (`local_files_only=True`), never downloaded. No torch here: the daemon uses this to
list models, the worker to load them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from contract.errors import ErrorCode, JobError

INDEX = "model_index.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def model_folder(name: str, config: dict) -> Path:
    """The local folder of model `name`, or JobError(model_not_found) saying where it looked."""
    if config.get("path"):
        folder = Path(config["path"]).expanduser()
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise JobError(ErrorCode.MODEL_NOT_FOUND, f"model {name!r}: {folder} {what} ([models.{name}] path)")
        return folder.resolve()
    repo, revision = config["repo"], config.get("revision") or "main"
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        cache = hub_cache_dir() / f"models--{repo.replace('/', '--')}"
        raise JobError(
            ErrorCode.MODEL_NOT_FOUND,
            f"model {name!r}: {repo}@{revision} is not in the local hub cache (looked in {cache}); "
            f"download it on this host first, e.g. `hf download {repo}`",
        ) from None


def lipsync_backend(name: str, folder: Path, config: dict) -> str | None:
    """The lip-sync backend of a talking-head model folder (checked complete), or None for
    a diffusers folder."""
    from contract.lipsync_folders import backend_of, check_folder

    if not (config.get("backend") or backend_of(folder)):
        return None
    return check_folder(name, folder, config.get("backend"))


def describe_folder(name: str, folder: Path, config: dict) -> str:
    """What loads from `folder`: a diffusers pipeline class or a lip-sync backend (checked)."""
    from contract.lipsync_folders import BACKEND_CLASS

    backend = lipsync_backend(name, folder, config)
    return BACKEND_CLASS[backend] if backend else read_index(name, folder)["_class_name"]


def read_index(name: str, folder: Path) -> dict:
    """model_index.json of a diffusers folder, checked to name its pipeline class."""
    index = folder / INDEX
    try:
        doc = json.loads(index.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobError(ErrorCode.MODEL_NOT_FOUND, f"model {name!r}: {folder} has no {INDEX} (not a diffusers model folder)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobError(ErrorCode.MODEL_LOAD_FAILED, f"model {name!r}: {index} is corrupt ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("_class_name"), str):
        raise JobError(ErrorCode.MODEL_LOAD_FAILED, f"model {name!r}: {index} does not name a pipeline class (_class_name)")
    return doc


def diffusers_missing(folder: Path) -> list[str]:
    """What a diffusers folder still lacks of what its model_index.json names: a non-empty
    folder per component, and every weight shard a component's `*.index.json` lists. Empty
    for an index that cannot be read too (loading the model says what is wrong with it)."""
    try:
        index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    missing: list[str] = []
    for component, value in sorted(index.items() if isinstance(index, dict) else []):
        if component.startswith("_") or not (isinstance(value, list) and all(isinstance(v, str) for v in value) and value):
            continue  # metadata, or a component the pipeline goes without ([null, null])
        sub = folder / component
        if not sub.is_dir() or next(sub.iterdir(), None) is None:
            missing.append(f"{component}/")
            continue
        for shard_index in sorted(sub.glob("*.index.json")):
            missing += [f"{component}/{shard}" for shard in _shards(shard_index) if not (sub / shard).is_file()]
    return missing


def _shards(shard_index: Path) -> list[str]:
    """The weight files a sharded checkpoint's index names (plain file names only)."""
    try:
        weight_map = json.loads(shard_index.read_text(encoding="utf-8")).get("weight_map") or {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return []
    names = {v for v in weight_map.values() if isinstance(v, str)} if isinstance(weight_map, dict) else set()
    return sorted(n for n in names if n == os.path.basename(n) and n not in ("", ".", ".."))


def folder_missing(folder: Path) -> list[str]:
    """What a model folder still lacks (it is being copied): the required files of its
    lip-sync layout, or the components its model_index.json names. Empty: complete, or
    not a model folder at all."""
    from contract.lipsync_folders import incomplete

    folder = Path(folder)
    return incomplete(folder) or (diffusers_missing(folder) if (folder / INDEX).is_file() else [])


def weights_bytes(folder: Path) -> int:
    """Bytes of weight files under a model folder (an estimate of its memory before loading)."""
    total = 0
    for root, _dirs, files in os.walk(folder, followlinks=True):
        for f in files:
            if f.endswith(WEIGHT_SUFFIXES):
                try:
                    total += os.stat(os.path.join(root, f)).st_size
                except OSError:
                    pass
    return total
