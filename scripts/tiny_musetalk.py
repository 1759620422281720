"""A random-weight MuseTalk 1.5 model folder, in the published on-disk layout.

    musetalkV15/musetalk.json   UNet2DConditionModel config (in 8 = masked + reference latents,
                                out 4, cross_attention_dim = the Whisper encoder's d_model)
    musetalkV15/unet.pth        its state dict (torch.save)
    sd-vae/                     AutoencoderKL.save_pretrained: config.json + diffusion_pytorch_model.bin
    whisper/                    config.json, pytorch_model.bin (a WhisperForConditionalGeneration
                                state dict, "model."-prefixed keys, like openai/whisper-tiny),
                                preprocessor_config.json (WhisperFeatureExtractor)

The weights are RANDOM: the mouth it draws is noise. What the folder keeps from the real
model is the plumbing: the classes, the 256 px crop -> 32x32x4 latents (the VAE downsamples
8x), 8 input channels, 80 mel bins, 30 s Whisper windows of 1500 encoder steps, and the
Whisper width equal to the UNet's cross-attention width. The default is tiny (a few MB, a
CPU batch in well under a second); ``real_size=True`` writes the real configurations
(MuseTalk 1.5's musetalk.json, sd-vae-ft-mse, whisper-tiny; about 3.7 GB) for benchmarks.

    python scripts/tiny_musetalk.py DEST [--real-size] [--seed N]

API: ``build(dest, seed=0, real_size=False) -> Path`` (``dest`` becomes the model folder),
``param_counts(real_size) -> dict`` (built on the meta device: no memory, no disk).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stamped_folder import build_stamped, stamp_text  # noqa: E402  (beside this script)

STAMP = ".tiny-musetalk-version"

# MuseTalk 1.5's musetalkV15/musetalk.json (the UNet of stable-diffusion-v1-4 with 8 input
# channels and 384-wide cross-attention for whisper-tiny).
REAL_UNET = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
# stabilityai/sd-vae-ft-mse's config.json (no scaling_factor: diffusers' default 0.18215 applies).
REAL_VAE = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.4.2",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
# openai/whisper-tiny (transformers' WhisperConfig defaults are whisper-tiny's sizes).
REAL_WHISPER = {
    "d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6, "encoder_ffn_dim": 1536,
    "decoder_layers": 4, "decoder_attention_heads": 6, "decoder_ffn_dim": 1536,
    "vocab_size": 51865, "num_mel_bins": 80, "max_source_positions": 1500, "max_target_positions": 448,
    "pad_token_id": 50257, "bos_token_id": 50257, "eos_token_id": 50257, "decoder_start_token_id": 50258,
}

# Same block layout as the real UNet (3 cross-attention down blocks, 32x32 -> 4x4), narrow.
TINY_UNET = {
    **REAL_UNET,
    "attention_head_dim": 2,
    "block_out_channels": [16, 16, 32, 32],
    "cross_attention_dim": 32,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 32,
}
# Four blocks, hence three 2x downsamples: 256 px -> 32x32 latents, as in the real VAE.
TINY_VAE = {**REAL_VAE, "block_out_channels": [8, 16, 16, 16], "layers_per_block": 1, "norm_num_groups": 8}
# Narrow and shallow, but the real input geometry: 80 mel bins, 3000 frames -> 1500 steps per 30 s.
TINY_WHISPER = {
    **REAL_WHISPER,
    "d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
    "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 64,
    "vocab_size": 64, "max_target_positions": 32,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 1,
}


def configs(real_size: bool) -> tuple[dict, dict, dict]:
    """(unet, vae, whisper) configs of the folder to build."""
    return (REAL_UNET, REAL_VAE, REAL_WHISPER) if real_size else (TINY_UNET, TINY_VAE, TINY_WHISPER)


def _modules(real_size: bool):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    unet_config, vae_config, whisper_config = configs(real_size)
    unet = UNet2DConditionModel.from_config(unet_config)
    vae = AutoencoderKL.from_config(vae_config)
    whisper = WhisperForConditionalGeneration(WhisperConfig(**whisper_config))
    for module in (unet, vae, whisper):
        module.eval().requires_grad_(False)
    return unet, vae, whisper


def _build(dest: Path, seed: int, real_size: bool) -> None:
    import torch
    from transformers import WhisperFeatureExtractor

    torch.manual_seed(seed)
    unet, vae, whisper = _modules(real_size)
    unet_config = configs(real_size)[0]

    (dest / "musetalkV15").mkdir()
    (dest / "musetalkV15" / "musetalk.json").write_text(json.dumps(unet_config, indent=2) + "\n")
    torch.save(unet.state_dict(), dest / "musetalkV15" / "unet.pth")

    # The published sd-vae-ft-mse and whisper-tiny folders hold .bin weights, not safetensors.
    vae.save_pretrained(dest / "sd-vae", safe_serialization=False)

    folder = dest / "whisper"
    folder.mkdir()
    whisper.config.save_pretrained(folder)
    state = {k: v for k, v in whisper.state_dict().items() if k != "proj_out.weight"}  # tied to the embeddings
    torch.save(state, folder / "pytorch_model.bin")
    WhisperFeatureExtractor(feature_size=whisper.config.num_mel_bins).save_pretrained(folder)


def build(dest: Path, seed: int = 0, real_size: bool = False) -> Path:
    """Write a MuseTalk 1.5 folder at ``dest`` and return it.

    A folder with the same stamp (builder source, seed, size, library versions) is returned as
    is; otherwise it is built in a temporary sibling and renamed into place.
    """
    return build_stamped(Path(dest), STAMP, stamp_text(__file__, ("diffusers", "transformers", "torch"), seed=seed, real_size=real_size), lambda tmp: _build(tmp, seed, real_size))


def param_counts(real_size: bool) -> dict[str, int]:
    """Parameters per component, built on the meta device (the backend keeps Whisper's encoder only)."""
    import torch

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):
        unet, vae, whisper = _modules(real_size)
    return {"unet": count(unet), "vae": count(vae), "whisper_encoder": count(whisper.model.encoder),
            "whisper_full": count(whisper)}


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Build a random-weight MuseTalk 1.5 model folder.")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--real-size", action="store_true", help="the real model sizes (about 3.7 GB)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv[1:])
    print(build(args.dest, seed=args.seed, real_size=args.real_size))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
