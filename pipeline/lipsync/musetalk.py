"""MuseTalk 1.5: redraws the lower half of a 256 px face crop in one UNet pass over VAE latents.

Per video frame (as TMElyralab/MuseTalk's scripts/inference.py does it):

- audio: Whisper log-mel features per 30 s of 16 kHz audio; the Whisper encoder's hidden states
  of every layer (embeddings + each layer: 5 for whisper-tiny), 50 steps a second; for frame i
  the 10 steps starting at floor(i * 50 / fps) of that sequence zero-padded by
  2 * ceil(50 / fps) steps in front (200 ms around the frame at 25 fps), flattened time-major
  to (10 * layers, d_model) tokens;
- image: the RGB crop and the same crop with its lower half blacked out, VAE-encoded
  (latents x scaling_factor, 0.18215) and stacked as 8 channels: masked first, reference second;
- the UNet at timestep 0 with the tokens plus a sinusoidal positional encoding as
  cross-attention states predicts the 4 latent channels, which the VAE decodes.

Unlike MuseTalk we take the latent mean rather than a sample (deterministic; MuseTalk's
training does the same), and keep a fractional fps (MuseTalk rounds it down to an int).
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from contract.errors import ErrorCode, JobError
from pipeline.lipsync.base import AUDIO_RATE
from contract.lipsync_folders import check_musetalk

FACE_SIZE = 256
UNET_CONFIG = "musetalkV15/musetalk.json"
UNET_WEIGHTS = "musetalkV15/unet.pth"
VAE_FOLDER = "sd-vae"
WHISPER_FOLDER = "whisper"

CHUNK_SECONDS = 30  # Whisper's input window; the feature extractor pads each chunk to it
ENCODER_STEPS_PER_SECOND = 50  # 3000 mel frames -> 1500 encoder steps per 30 s
PAD_LEFT = PAD_RIGHT = 2  # MuseTalk's audio_padding_length_left/right (in 25 fps frames)
WINDOW_STEPS = 2 * (PAD_LEFT + PAD_RIGHT + 1)  # 10 encoder steps (200 ms) per video frame


class FrameWindows(Sequence):
    """The audio tokens of each video frame, cut on demand from one padded feature sequence.

    Windows overlap (10 steps, 2 apart at 25 fps), so holding them all would take 5x the
    memory; an item is a float32 array (WINDOW_STEPS * layers, d_model), a slice a stacked array.
    """

    def __init__(self, steps: np.ndarray, starts: list[int]):
        self.steps = steps  # (padded encoder steps, layers, d_model) float32
        self.starts = starts

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return np.stack([self[i] for i in range(*index.indices(len(self)))])
        start = self.starts[index]
        window = self.steps[start:start + WINDOW_STEPS]
        return window.reshape(-1, window.shape[-1])  # time-major: step 0's layers, step 1's, ...


class MuseTalkModel:
    """A loaded MuseTalk 1.5 (pipeline.lipsync.base.LipSync)."""

    backend = "musetalk"
    face_size = FACE_SIZE

    def __init__(self, unet, vae, whisper, feature_extractor, dtype: torch.dtype, device: str):
        self.unet = unet
        self.vae = vae
        self.whisper = whisper  # the Whisper encoder alone
        self.feature_extractor = feature_extractor
        self.dtype = dtype
        self.components = {"unet": unet, "vae": vae, "whisper": whisper}
        self.scaling_factor = float(vae.config.scaling_factor)
        self.d_model = int(whisper.config.d_model)
        self.layers = int(whisper.config.encoder_layers) + 1  # the embeddings count as one
        self.tokens = WINDOW_STEPS * self.layers
        self.positions = positional_encoding(self.tokens, self.d_model)
        self.device = "cpu"
        self.to(device)

    def to(self, device: str) -> None:
        for module in self.components.values():
            module.to(device)
        self.positions = self.positions.to(device)
        self.device = device

    @torch.inference_mode()
    def audio_features(self, audio: np.ndarray, fps: float, frames: int) -> FrameWindows:
        """`frames` windows of tokens from 16 kHz mono float32 audio; frames past its end hear silence."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono (1-D), got shape {audio.shape}")
        if fps <= 0 or frames < 0:
            raise ValueError(f"fps must be positive and frames not negative (fps={fps}, frames={frames})")
        if not np.isfinite(audio).all():
            raise JobError(ErrorCode.UNSUPPORTED_INPUT, "the speech audio holds NaN or infinite samples")
        steps = self._encoder_steps(audio)
        per_frame = ENCODER_STEPS_PER_SECOND / fps
        starts = [math.floor(i * per_frame) for i in range(frames)]
        # MuseTalk pads with zero features, not with silent audio: left so that a window sits
        # around its frame, right so that the last window fits however short the audio is.
        left = math.ceil(per_frame) * PAD_LEFT
        right = max(0, (starts[-1] if starts else 0) + WINDOW_STEPS - left - len(steps))
        steps = np.pad(steps, ((left, right), (0, 0), (0, 0)))
        return FrameWindows(steps, starts)

    def _encoder_steps(self, audio: np.ndarray) -> np.ndarray:
        """(len(audio) / 320 steps, layers, d_model): every encoder layer's hidden states."""
        chunk = CHUNK_SECONDS * AUDIO_RATE
        encoded = []
        for begin in range(0, len(audio), chunk):
            mel = self.feature_extractor(audio[begin:begin + chunk], sampling_rate=AUDIO_RATE,
                                         return_tensors="pt").input_features
            hidden = self.whisper(mel.to(self.device, self.dtype), output_hidden_states=True).hidden_states
            encoded.append(torch.stack(hidden, dim=2)[0].float().cpu())  # (1500, layers, d_model)
        if not encoded:
            return np.zeros((0, self.layers, self.d_model), np.float32)
        # The last chunk was padded to 30 s: keep only the steps that hold audio.
        length = len(audio) * ENCODER_STEPS_PER_SECOND // AUDIO_RATE
        return torch.cat(encoded)[:length].numpy()

    @torch.inference_mode()
    def sync(self, faces: np.ndarray, features: Sequence) -> np.ndarray:
        """uint8 (B, 256, 256, 3) RGB crops with the lower half redrawn for each frame's tokens."""
        faces = np.asarray(faces)
        if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != (FACE_SIZE, FACE_SIZE, 3):
            raise ValueError(f"faces must be uint8 (B, {FACE_SIZE}, {FACE_SIZE}, 3), got {faces.dtype} {faces.shape}")
        tokens = np.stack([np.asarray(f, dtype=np.float32) for f in features]) if len(features) else None
        if tokens is None or len(tokens) != len(faces) or tokens.shape[1:] != (self.tokens, self.d_model):
            got = "none" if tokens is None else tokens.shape
            raise ValueError(f"features must be {len(faces)} x ({self.tokens}, {self.d_model}), got {got}")

        latents = self._face_latents(faces)
        audio = (torch.from_numpy(tokens).to(self.device) + self.positions).to(self.dtype)
        timestep = torch.zeros(1, dtype=torch.long, device=self.device)  # one step, no noise
        predicted = self.unet(latents, timestep, encoder_hidden_states=audio).sample
        images = self.vae.decode(predicted.to(self.dtype) / self.scaling_factor).sample
        images = ((images.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        return images.permute(0, 2, 3, 1).cpu().numpy()

    def _face_latents(self, faces: np.ndarray) -> torch.Tensor:
        """(B, 8, 32, 32): masked-crop latents then reference latents, each crop encoded once."""
        # A photo gives the same crop for every frame: encode each distinct crop once.
        keys = [hashlib.blake2b(face.tobytes(), digest_size=16).digest() for face in faces]
        distinct = list(dict.fromkeys(keys))
        first = [keys.index(key) for key in distinct]
        pixels = torch.from_numpy(faces[first]).to(self.device).permute(0, 3, 1, 2).float() / 255
        masked = pixels.clone()
        masked[:, :, FACE_SIZE // 2:, :] = 0  # black after scaling to [-1, 1], as MuseTalk trains
        images = torch.cat([masked, pixels]) * 2 - 1
        latents = self.vae.encode(images.to(self.dtype)).latent_dist.mode() * self.scaling_factor
        masked_latents, reference_latents = latents.chunk(2)
        both = torch.cat([masked_latents, reference_latents], dim=1)
        return both[[distinct.index(key) for key in keys]]


def positional_encoding(length: int, d_model: int) -> torch.Tensor:
    """(length, d_model) sinusoidal encoding (sin on even, cos on odd features), MuseTalk's."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


def load_musetalk(folder, device: str, dtype=None) -> MuseTalkModel:
    """MuseTalk 1.5 from a checked folder (contract.lipsync_folders); float16 on CUDA by default."""
    folder = Path(folder)
    check_musetalk(folder.name, folder)
    if dtype is None:
        dtype = torch.float16 if str(device).startswith("cuda") else torch.float32

    # Configs first: a mismatched folder fails before any weights are read.
    unet_config = _read_json(folder, UNET_CONFIG)
    vae_config = _read_json(folder, f"{VAE_FOLDER}/config.json")
    whisper_config = _read_json(folder, f"{WHISPER_FOLDER}/config.json")
    _check_widths(folder, unet_config, vae_config, whisper_config)

    # Each part is read in `dtype` (diffusers warns on casting a loaded model with .to(dtype)).
    unet = _load_unet(folder, unet_config, dtype)
    with _loading(folder, VAE_FOLDER):
        from diffusers import AutoencoderKL

        # The published sd-vae-ft-mse holds a .bin only; say so rather than have diffusers log a miss.
        safetensors = any((folder / VAE_FOLDER).glob("*.safetensors"))
        vae = AutoencoderKL.from_pretrained(folder / VAE_FOLDER, torch_dtype=dtype, use_safetensors=safetensors,
                                            local_files_only=True)
    whisper, extractor = _load_whisper(folder, dtype)
    for module in (unet, vae, whisper):
        module.eval().requires_grad_(False)
    with _loading(folder, f"the models onto {device}"):
        return MuseTalkModel(unet, vae, whisper, extractor, dtype, device)


@contextmanager
def _loading(folder: Path, what: str) -> Iterator[None]:
    """Any failure inside is model_load_failed naming `what` (out-of-memory stays itself)."""
    try:
        yield
    except (JobError, torch.OutOfMemoryError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure is the model's
        detail = str(exc)
        if isinstance(exc, pickle.UnpicklingError):  # torch's own text suggests weights_only=False: no
            detail = "not a weights-only torch checkpoint (corrupt or truncated, or it holds code)"
        detail = detail if len(detail) <= 400 else detail[:400] + " ..."
        raise JobError(ErrorCode.MODEL_LOAD_FAILED,
                       f"MuseTalk folder {folder}: loading {what} failed: {type(exc).__name__}: {detail}") from exc


def _read_json(folder: Path, name: str) -> dict:
    with _loading(folder, name):
        doc = json.loads((folder / name).read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        return doc


def _check_widths(folder: Path, unet: dict, vae: dict, whisper: dict) -> None:
    """The three parts must fit together; say which numbers disagree."""
    def fail(message: str) -> None:
        raise JobError(ErrorCode.MODEL_LOAD_FAILED, f"MuseTalk folder {folder}: {message}")

    d_model, cross = whisper.get("d_model"), unet.get("cross_attention_dim")
    if isinstance(cross, list) and len(set(cross)) == 1:  # diffusers also takes one width per block
        cross = cross[0]
    if d_model != cross:
        fail(f"{WHISPER_FOLDER}/config.json d_model {d_model} differs from the UNet's cross_attention_dim {cross} "
             f"in {UNET_CONFIG} (MuseTalk 1.5 pairs whisper-tiny, 384, with its UNet)")
    if not isinstance(d_model, int) or d_model % 2:
        fail(f"{WHISPER_FOLDER}/config.json d_model {d_model} is not an even width")
    latent = vae.get("latent_channels", 4)
    if unet.get("in_channels") != 2 * latent or unet.get("out_channels", 4) != latent:
        fail(f"{UNET_CONFIG} in_channels {unet.get('in_channels')} / out_channels {unet.get('out_channels')} "
             f"do not fit {VAE_FOLDER}'s {latent} latent channels "
             f"(MuseTalk takes masked + reference latents, 2 x {latent}, and predicts {latent})")


def _load_unet(folder: Path, config: dict, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel

    with _loading(folder, UNET_CONFIG):
        with torch.device("meta"):  # no random init of ~850M weights that the state dict replaces
            unet = UNet2DConditionModel.from_config(config)
    with _loading(folder, UNET_WEIGHTS):
        state = torch.load(folder / UNET_WEIGHTS, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"holds a {type(state).__name__}, not a state dict")
        state = {key: value.to(dtype) if value.is_floating_point() else value for key, value in state.items()}
        found = unet.load_state_dict(state, strict=False, assign=True)  # shapes are still checked
        if found.missing_keys or found.unexpected_keys:
            missing, unexpected = found.missing_keys, found.unexpected_keys
            raise ValueError(f"its tensors do not fit {UNET_CONFIG}: {len(missing)} missing {missing[:2]}, "
                             f"{len(unexpected)} unexpected {unexpected[:2]}")
    return unet


def _load_whisper(folder: Path, dtype: torch.dtype):
    from transformers import WhisperFeatureExtractor, WhisperModel

    path = folder / WHISPER_FOLDER
    with _loading(folder, WHISPER_FOLDER):
        # MuseTalk loads the whole WhisperModel and runs its encoder; the decoder is dropped here.
        model, info = WhisperModel.from_pretrained(path, dtype=dtype, local_files_only=True,
                                                   output_loading_info=True)
        missing = sorted(k for k in info["missing_keys"] if k.startswith("encoder."))
        if missing:
            raise ValueError(f"weights lack {len(missing)} encoder tensors ({', '.join(missing[:3])}, ...)")
        encoder = model.encoder
    with _loading(folder, f"{WHISPER_FOLDER}/preprocessor_config.json"):
        extractor = WhisperFeatureExtractor.from_pretrained(path, local_files_only=True)
        if extractor.feature_size != encoder.config.num_mel_bins or extractor.sampling_rate != AUDIO_RATE:
            raise ValueError(f"{extractor.feature_size} mel bins at {extractor.sampling_rate} Hz; the encoder takes "
                             f"{encoder.config.num_mel_bins} at {AUDIO_RATE} Hz")
    return encoder, extractor
