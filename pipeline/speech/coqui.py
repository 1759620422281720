"""coqui (coqui-tts): local model folders loaded through coqui's own loader.

A model is a folder as coqui releases them: ``config.json`` plus a checkpoint
(``model.pth``, ``model_file.pth``, ``best_model.pth`` …) and the files the config names
(``speaker_ids.json``, ``speakers.json``/``speakers.pth`` d-vectors, ``language_ids.json``,
a speaker encoder ``model_se.pth`` + ``config_se.json``). It is loaded with
``TTS.utils.synthesizer.Synthesizer`` given explicit local paths: nothing is downloaded.
File names in config.json are pointed at the folder first (what coqui's ModelManager does
after a download), in a private copy of the config: the folder itself is never written.
XTTS folders (``"model": "xtts"``) are handed to coqui as the folder.

Voices: a multi-speaker model's speakers (``voices()``); a single-speaker model has one
voice, "default". Cloning (``reference_wav``): models with a speaker encoder (YourTTS
layout: VITS with d-vectors + ``model_se.pth``) or XTTS compute the voice from the
recording. Speed: VITS-family models scale their ``length_scale`` by 1/speed.

Engines are cached per (folder, device) in the process, so a worker loads a model once.
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from contract.errors import ErrorCode, JobError
from contract.voices import DEFAULT_LANGUAGE, VoiceInfo, base_language

if TYPE_CHECKING:
    import numpy as np

CHECKPOINT_NAMES = ("model.pth", "model_file.pth", "model_file.pth.tar", "best_model.pth", "model.pt",
                    "checkpoint.pth")
# config field -> file names coqui's ModelManager also looks for in a model folder
PATH_FIELDS = {
    "speakers_file": ("speaker_ids.json", "speaker_ids.pth"),
    "d_vector_file": ("speakers.json", "speakers.pth"),
    "language_ids_file": ("language_ids.json",),
    "speaker_encoder_model_path": ("model_se.pth", "model_se.pth.tar"),
    "speaker_encoder_config_path": ("config_se.json",),
}
DEFAULT_VOICE = "default"


def _torch_device(device: str | None) -> str:
    if not device or device == "cpu":
        return "cpu"
    return device if device.startswith("cuda") else "cuda"


def _on_device(device: str):
    """coqui moves models with .cuda() (the current CUDA device): make that `device`."""
    import contextlib

    if device.startswith("cuda:"):
        import torch

        return torch.cuda.device(device)
    return contextlib.nullcontext()


class CoquiEngine:
    name = "coqui"
    _cache: ClassVar[dict[tuple[str, str], CoquiEngine]] = {}
    _cache_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model_dir: str | Path, speaker: str | None = None, language: str | None = None,
                 device: str = "cpu"):
        self.model_dir = Path(model_dir).expanduser()
        self.default_speaker = speaker
        self.default_language = language
        self.device = _torch_device(device)
        self._synth = None
        self._config: dict | None = None
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, model_dir: str | Path, device: str = "cpu") -> CoquiEngine:
        """One engine per model folder and device in this process (kept warm)."""
        key = (str(Path(model_dir).expanduser().resolve()), _torch_device(device))
        with cls._cache_lock:
            if key not in cls._cache:
                cls._cache[key] = cls(key[0], device=key[1])
            return cls._cache[key]

    # -- the folder, without loading torch -----------------------------------------------
    def config(self) -> dict:
        """config.json as a dict; model_not_found when the folder or its config is missing."""
        if self._config is None:
            folder = self.model_dir
            if not folder.is_dir():
                raise JobError(ErrorCode.MODEL_NOT_FOUND, f"coqui model folder not found: {folder}")
            path = folder / "config.json"
            if not path.is_file():
                raise JobError(ErrorCode.MODEL_NOT_FOUND,
                               f"coqui model folder {folder} has no config.json (not a coqui model)")
            try:
                self._config = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise JobError(ErrorCode.MODEL_LOAD_FAILED, f"coqui model {folder}: config.json unreadable: {exc}") from None
        return self._config

    def is_xtts(self) -> bool:
        return str(self.config().get("model", "")).lower() == "xtts"

    def checkpoint(self) -> Path:
        if self.is_xtts():
            return self.model_dir
        for name in CHECKPOINT_NAMES:
            if (self.model_dir / name).is_file():
                return self.model_dir / name
        found = sorted(p.name for p in self.model_dir.glob("*.pth"))
        candidates = [n for n in found if not n.startswith(("model_se", "speakers", "speaker_ids"))]
        if candidates:
            return self.model_dir / candidates[0]
        raise JobError(ErrorCode.MODEL_NOT_FOUND, f"coqui model folder {self.model_dir} has no checkpoint "
                       f"({', '.join(CHECKPOINT_NAMES)})")

    def _folder_file(self, value, defaults: tuple[str, ...]) -> str | None:
        """The file in the model folder that a config path means (by name, else a default)."""
        names = [Path(v).name for v in (value if isinstance(value, list) else [value]) if v]
        for name in [*names, *defaults]:
            if (self.model_dir / name).is_file():
                return str(self.model_dir / name)
        return None

    def can_clone(self) -> bool:
        if self.is_xtts():
            return True
        args = self.config().get("model_args") or {}
        value = args.get("speaker_encoder_model_path") or self.config().get("speaker_encoder_model_path")
        return self._folder_file(value, PATH_FIELDS["speaker_encoder_model_path"]) is not None and \
            self._folder_file(args.get("speaker_encoder_config_path"), PATH_FIELDS["speaker_encoder_config_path"]) is not None

    # -- loading -------------------------------------------------------------------------
    def _local_config_path(self, scratch: Path) -> Path:
        """A copy of config.json whose file fields point into the model folder."""
        config = json.loads(json.dumps(self.config()))
        for holder in (config, config.get("model_args") or {}):
            for field, defaults in PATH_FIELDS.items():
                if field not in holder or not holder[field]:
                    continue
                local = self._folder_file(holder[field], defaults)
                if local is not None:
                    holder[field] = [local] if isinstance(holder[field], list) else local
        stats = (config.get("audio") or {}).get("stats_path")
        if stats:
            local = self._folder_file(stats, ("scale_stats.npy",))
            config["audio"]["stats_path"] = local
        path = scratch / "config.json"
        path.write_text(json.dumps(config))
        return path

    def synthesizer(self):
        """coqui's Synthesizer for this folder, loaded once."""
        with self._lock:
            if self._synth is None:
                checkpoint = self.checkpoint()
                try:
                    from TTS.utils.synthesizer import Synthesizer

                    with tempfile.TemporaryDirectory(prefix="coqui-config-") as scratch, _on_device(self.device):
                        config_path = self.model_dir / "config.json" if self.is_xtts() else \
                            self._local_config_path(Path(scratch))
                        synth = Synthesizer(tts_checkpoint=checkpoint, tts_config_path=config_path,
                                            use_cuda=self.device != "cpu")
                except JobError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any loader failure is the model's
                    raise JobError(ErrorCode.MODEL_LOAD_FAILED,
                                   f"coqui model {self.model_dir} failed to load: {type(exc).__name__}: {exc}") from None
                self._synth = synth
            return self._synth

    @property
    def sample_rate(self) -> int:
        return int(self.synthesizer().output_sample_rate)

    # -- SpeechEngine ----------------------------------------------------------------------
    def _speakers(self) -> list[str]:
        model = self.synthesizer().tts_model
        manager = getattr(model, "speaker_manager", None)
        if manager is None:
            return []
        return list(manager.speaker_names or [])

    def _model_languages(self) -> list[str]:
        model = self.synthesizer().tts_model
        manager = getattr(model, "language_manager", None)
        names = list(manager.language_names or []) if manager is not None else []
        return names if len(names) > 1 or self.is_xtts() else []

    def languages(self) -> list[str]:
        return self._model_languages() or [self.default_language or DEFAULT_LANGUAGE]

    def voices(self) -> list[VoiceInfo]:
        language = self.languages()[0]
        speakers = self._speakers() or [DEFAULT_VOICE]
        return [VoiceInfo(id=s, name=s, language=language, engine=self.name) for s in speakers]

    def resolve_language(self, language: str | None) -> str:
        """The model's spelling of `language` (None: its first); ValueError when it lacks it."""
        known = self.languages()
        if not language:
            return known[0]
        for candidate in known:
            if candidate.lower() == language.lower():
                return candidate
        for candidate in known:
            if base_language(candidate) == base_language(language):
                return candidate
        raise ValueError(f"coqui model {self.model_dir.name} does not speak {language!r} (it speaks: {', '.join(known)})")

    def resolve_speaker(self, speaker: str | None) -> str | None:
        speakers = self._speakers()
        speaker = speaker or self.default_speaker
        if not speakers:
            if speaker not in (None, DEFAULT_VOICE):
                raise ValueError(f"coqui model {self.model_dir.name} has one voice; there is no speaker {speaker!r}")
            return None
        if speaker is None:
            return speakers[0]
        if speaker not in speakers:
            raise ValueError(f"coqui model {self.model_dir.name} has no speaker {speaker!r} "
                             f"(it has: {', '.join(speakers[:20])})")
        return speaker

    def synthesize(self, text: str, language: str, voice: str | None, speed: float,
                   reference_wav: str | Path | None = None) -> tuple[np.ndarray, int]:
        import numpy as np
        import torch

        synth = self.synthesizer()
        kwargs: dict = {"split_sentences": False}
        if reference_wav is not None:
            if not self.can_clone():
                raise ValueError(f"coqui model {self.model_dir.name} cannot clone a voice (no speaker encoder)")
            # speaker_name None: coqui computes the d-vector and caches nothing in the folder
            kwargs.update(speaker_wav=str(reference_wav), speaker_name=None)
        else:
            kwargs["speaker_name"] = self.resolve_speaker(voice)
        if self._model_languages():
            kwargs["language_name"] = self.resolve_language(language)
        model = synth.tts_model
        with self._lock, torch.inference_mode(), _on_device(self.device):
            scale = getattr(model, "length_scale", None)
            if scale is not None and speed and speed != 1.0:
                model.length_scale = scale / speed
            elif self.is_xtts() and speed and speed != 1.0:
                kwargs["speed"] = speed
            try:
                wav = synth.tts(text, **kwargs)
            finally:
                if scale is not None:
                    model.length_scale = scale
        samples = np.asarray(wav, dtype=np.float32).reshape(-1)
        from TTS.utils.synthesizer import PAD_SILENCE_SAMPLES

        if len(samples) >= PAD_SILENCE_SAMPLES and not samples[-PAD_SILENCE_SAMPLES:].any():
            samples = samples[:-PAD_SILENCE_SAMPLES]  # the silence coqui appends after each sentence
        return samples, int(synth.output_sample_rate)

    def clone(self, text: str, reference_wav: str | Path, language: str | None = None,
              speed: float = 1.0) -> tuple[np.ndarray, int]:
        """`text` in the voice of the recording `reference_wav`."""
        return self.synthesize(text, self.resolve_language(language), None, speed, reference_wav=reference_wav)


class ClonedVoice:
    """A SpeechEngine view of a coqui engine that speaks in the voice of a recording."""

    name = "coqui"

    def __init__(self, engine: CoquiEngine, reference_wav: str | Path):
        self.engine = engine
        self.reference_wav = Path(reference_wav)

    def languages(self) -> list[str]:
        return self.engine.languages()

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo(id="cloned", name=self.reference_wav.name, language=self.languages()[0], engine=self.name)]

    def synthesize(self, text: str, language: str, voice: str | None, speed: float) -> tuple:
        return self.engine.synthesize(text, language, None, speed, reference_wav=self.reference_wav)


def parse_voice(voice: str) -> tuple[str, str | None]:
    """"coqui:/models/vctk#p225" -> ("/models/vctk", "p225"); the speaker is optional."""
    spec = voice[len("coqui:"):] if voice.startswith("coqui:") else voice
    folder, _, speaker = spec.partition("#")
    return folder, speaker or None
