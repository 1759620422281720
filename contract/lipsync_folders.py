"""Which lip-sync backend a model folder holds, from its files alone (no torch).

- wav2lip: `wav2lip_gan.pth` or `wav2lip.pth` at the top of the folder;
- musetalk (MuseTalk 1.5): a `musetalkV15/` folder; complete with `musetalkV15/musetalk.json` +
  `musetalkV15/unet.pth`, `sd-vae/config.json` and its weights, `whisper/config.json`,
  `whisper/preprocessor_config.json` and its weights.
"""

from __future__ import annotations

from pathlib import Path

from contract.errors import ErrorCode, JobError

BACKENDS = ("wav2lip", "musetalk")
WAV2LIP_CHECKPOINTS = ("wav2lip_gan.pth", "wav2lip.pth")
# Each entry: a file, or files of which one will do (the published .bin, or safetensors).
MUSETALK_FILES = (("musetalkV15/musetalk.json",), ("musetalkV15/unet.pth",), ("sd-vae/config.json",),
                  ("sd-vae/diffusion_pytorch_model.bin", "sd-vae/diffusion_pytorch_model.safetensors"),
                  ("whisper/config.json",), ("whisper/preprocessor_config.json",),
                  ("whisper/pytorch_model.bin", "whisper/model.safetensors"))
BACKEND_CLASS = {"wav2lip": "Wav2Lip", "musetalk": "MuseTalk"}


def backend_of(folder: Path) -> str | None:
    """The backend whose layout `folder` has, or None (e.g. a diffusers folder)."""
    folder = Path(folder)
    if any((folder / name).is_file() for name in WAV2LIP_CHECKPOINTS):
        return "wav2lip"
    if (folder / "musetalkV15").is_dir():
        return "musetalk"
    return None


def wav2lip_checkpoint(name: str, folder: Path) -> Path:
    for candidate in WAV2LIP_CHECKPOINTS:
        if (folder / candidate).is_file():
            return folder / candidate
    raise JobError(ErrorCode.MODEL_NOT_FOUND, (
        f"model {name!r}: {folder} holds no Wav2Lip checkpoint (looked for {' or '.join(WAV2LIP_CHECKPOINTS)})"))


def missing_files(folder: Path, required: tuple[tuple[str, ...], ...]) -> list[str]:
    """The entries of `required` that `folder` lacks ("a or b" where either will do)."""
    return [" or ".join(names) for names in required if not any((folder / n).is_file() for n in names)]


def incomplete(folder: Path) -> list[str]:
    """What a folder in a lip-sync layout still lacks (empty: complete, or no such layout)."""
    return missing_files(Path(folder), MUSETALK_FILES) if backend_of(folder) == "musetalk" else []


def check_musetalk(name: str, folder: Path) -> None:
    missing = missing_files(folder, MUSETALK_FILES)
    if missing:
        raise JobError(ErrorCode.MODEL_NOT_FOUND, (
            f"model {name!r}: {folder} is not a complete MuseTalk 1.5 folder; missing {', '.join(missing)}"))


def check_folder(name: str, folder: Path, backend: str | None) -> str:
    """The backend to load `folder` with (`backend` as configured, else from the layout)."""
    found = backend or backend_of(folder)
    if found is None:
        raise JobError(ErrorCode.MODEL_NOT_FOUND, (
            f"model {name!r}: {folder} is neither a Wav2Lip folder ({' or '.join(WAV2LIP_CHECKPOINTS)}) "
            f"nor a MuseTalk 1.5 folder ({', '.join(' or '.join(names) for names in MUSETALK_FILES)})"))
    if found == "wav2lip":
        wav2lip_checkpoint(name, folder)
    else:
        check_musetalk(name, folder)
    return found
