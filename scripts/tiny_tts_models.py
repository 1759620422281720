"""Tiny random-weight coqui-tts model folders for tests and examples.

Each folder has the on-disk layout of a released coqui model and loads through coqui's own
loader (``TTS.utils.synthesizer.Synthesizer`` with local paths; pipeline.speech.coqui does
that). The weights are RANDOM: what they say is noise. What the folders keep is the
plumbing: the model class (VITS), the config classes, the speaker handling and, for
``yourtts``, the speaker encoder that turns a reference recording into a d-vector.

    vits/       config.json        VitsConfig, characters (no phonemizer), speaker embedding
                model.pth          {"model": state_dict, "config": ...}  (Vits.load_checkpoint)
                speaker_ids.json   {"alice": 0, "bob": 1}                (config.speakers_file)
    yourtts/    config.json        VitsConfig, d-vectors (use_d_vector_file), 16 kHz
                model_file.pth     {"model": state_dict, "config": ...}
                speakers.json      preset voices: {clip: {"name", "embedding"}} (d_vector_file)
                model_se.pth       speaker encoder {"model": state_dict}   (speaker_encoder_model_path)
                config_se.json     SpeakerEncoderConfig (LSTM)              (speaker_encoder_config_path)

File names inside config.json are stored bare ("speaker_ids.json"); like coqui's ModelManager
after a download, the loader points them at the folder (the folder can move).

The duration predictor is set so every character lasts ``FRAMES_PER_CHAR`` frames
(deterministic, use_sdp off): speech length grows with the text like real speech would
(vits: 4 × 256 / 22050 ≈ 46 ms a character, yourtts: 4 × 256 / 16000 = 64 ms).

    python scripts/tiny_tts_models.py [DEST]      # default DEST: <repo>/models/tiny-tts

API: ``build(family, dest, seed=0) -> Path``, ``build_all(dest)``, ``FAMILIES``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stamped_folder import build_stamped, stamp_text  # noqa: E402  (beside this script)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = REPO_ROOT / "models" / "tiny-tts"
STAMP = ".tiny-tts-models-version"
FRAMES_PER_CHAR = 4
CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
PUNCTUATIONS = "!'(),-.:;? "

FAMILIES: dict[str, dict] = {
    "vits": {"checkpoint": "model.pth", "sample_rate": 22050, "speakers": ["alice", "bob"], "cloning": False},
    "yourtts": {"checkpoint": "model_file.pth", "sample_rate": 16000, "speakers": ["carol", "dave"],
                "cloning": True, "d_vector_dim": 32},
}


def _tiny_model_args(**extra):
    from TTS.tts.configs.vits_config import VitsArgs

    return VitsArgs(
        hidden_channels=16,
        hidden_channels_ffn_text_encoder=32,
        num_heads_text_encoder=2,
        num_layers_text_encoder=1,
        num_layers_posterior_encoder=1,
        num_layers_flow=1,
        kernel_size_flow=3,
        resblock_type_decoder="2",
        resblock_kernel_sizes_decoder=[3],
        resblock_dilation_sizes_decoder=[[1, 3]],
        upsample_rates_decoder=[8, 8, 4],  # = hop_length 256
        upsample_initial_channel_decoder=16,
        upsample_kernel_sizes_decoder=[16, 16, 8],
        use_sdp=False,
        init_discriminator=False,
        **extra,
    )


def _config(family: str):
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsConfig

    meta = FAMILIES[family]
    if meta["cloning"]:
        dim = meta["d_vector_dim"]
        args = _tiny_model_args(use_d_vector_file=True, d_vector_dim=dim, d_vector_file=["speakers.json"],
                                speaker_encoder_model_path="model_se.pth",
                                speaker_encoder_config_path="config_se.json")
        speaker_fields = {"use_d_vector_file": True, "d_vector_dim": dim, "d_vector_file": ["speakers.json"]}
    else:
        args = _tiny_model_args(use_speaker_embedding=True, speaker_embedding_channels=16,
                                speakers_file="speaker_ids.json")
        speaker_fields = {"use_speaker_embedding": True, "speakers_file": "speaker_ids.json"}
    return VitsConfig(
        model_args=args,
        audio=BaseAudioConfig(sample_rate=meta["sample_rate"], fft_size=1024, win_length=1024, hop_length=256,
                              num_mels=80, do_trim_silence=False),
        use_phonemes=False,
        text_cleaner="multilingual_cleaners",
        characters=CharactersConfig(characters_class="TTS.tts.models.vits.VitsCharacters", pad="_", eos="",
                                    bos="", blank=None, characters=CHARACTERS, punctuations=PUNCTUATIONS,
                                    phonemes="", is_unique=True, is_sorted=True),
        add_blank=False,
        **speaker_fields,
    )


def _encoder_config(sample_rate: int, dim: int):
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.encoder.configs.speaker_encoder_config import SpeakerEncoderConfig

    return SpeakerEncoderConfig(
        num_loader_workers=0, num_classes_in_batch=2, num_utter_per_class=2,
        model_params={"model_name": "lstm", "input_dim": 40, "proj_dim": dim, "lstm_dim": 32,
                      "num_lstm_layers": 1, "use_lstm_with_projection": True},
        audio=BaseAudioConfig(sample_rate=sample_rate, fft_size=512, win_length=400, hop_length=160,
                              num_mels=40, do_trim_silence=False),
    )


def _build(family: str, seed: int, folder: Path) -> None:
    import torch

    from TTS.tts.models.vits import Vits

    meta = FAMILIES[family]
    torch.manual_seed(seed)
    config = _config(family)
    speakers = meta["speakers"]
    if meta["cloning"]:
        from TTS.encoder.utils.generic_utils import setup_encoder_model

        dim = meta["d_vector_dim"]
        se_config = _encoder_config(meta["sample_rate"], dim)
        se_config.save_json(str(folder / "config_se.json"))
        encoder = setup_encoder_model(se_config)
        torch.save({"model": encoder.state_dict()}, folder / "model_se.pth")
        embeddings = torch.nn.functional.normalize(torch.randn(len(speakers), dim), dim=1)
        (folder / "speakers.json").write_text(json.dumps(
            {f"{name}_0001.wav": {"name": name, "embedding": embeddings[i].tolist()} for i, name in enumerate(speakers)}))
    else:
        (folder / "speaker_ids.json").write_text(json.dumps({name: i for i, name in enumerate(speakers)}))

    # Build the model against absolute paths (coqui reads the speaker files at init), save bare names.
    built = _absolute(config, folder)
    if meta["cloning"]:  # the encoder is loaded by the Synthesizer, not needed to build the model
        built.model_args.speaker_encoder_model_path = ""
        built.model_args.speaker_encoder_config_path = ""
    model = Vits(built)
    with torch.no_grad():  # every character lasts FRAMES_PER_CHAR frames
        model.duration_predictor.proj.weight.zero_()
        model.duration_predictor.proj.bias.fill_(math.log(FRAMES_PER_CHAR - 0.5))
    state = {k: v for k, v in model.state_dict().items() if "speaker_encoder" not in k}
    config.save_json(str(folder / "config.json"))
    torch.save({"model": state, "config": config.to_dict(), "step": 0, "epoch": 0}, folder / meta["checkpoint"])


PATH_FIELDS = ("speakers_file", "d_vector_file", "language_ids_file", "speaker_encoder_model_path",
               "speaker_encoder_config_path")


def _absolute(config, folder: Path):
    """A copy of `config` whose bare file names point into `folder`."""
    import copy

    config = copy.deepcopy(config)
    for holder in (config, config.model_args):
        for name in PATH_FIELDS:
            value = getattr(holder, name, None)
            if isinstance(value, list):
                setattr(holder, name, [str(folder / Path(v).name) for v in value])
            elif value:
                setattr(holder, name, str(folder / Path(value).name))
    return config


def build(family: str, dest: Path, seed: int = 0, name: str | None = None) -> Path:
    """Build the tiny ``family`` folder as ``dest/<name or family>`` and return its path.

    A folder with the same stamp (builder source, seed, coqui-tts and torch versions) is
    returned as is; otherwise it is built in a temporary sibling and renamed into place.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return build_stamped(Path(dest) / (name or family), STAMP, stamp_text(__file__, ("coqui-tts", "torch"), family=family, seed=seed),
                         lambda tmp: _build(family, seed, tmp))


def build_all(dest: Path = DEFAULT_DEST, prefix: str = "") -> dict[str, Path]:
    return {family: build(family, dest, name=prefix + family) for family in FAMILIES}


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Build tiny random-weight coqui-tts model folders.")
    parser.add_argument("dest", nargs="?", type=Path, default=DEFAULT_DEST)
    parser.add_argument("--prefix", default="")
    args = parser.parse_args(argv[1:])
    for family, folder in build_all(args.dest, args.prefix).items():
        print(f"{family}\t{folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
