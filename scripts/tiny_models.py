"""Tiny random-weight diffusers model folders for tests and examples.

Every folder is written by the real ``save_pretrained`` of its diffusers pipeline, so it has
the on-disk layout of a real checkpoint (``model_index.json``, one sub-folder per component,
``*.safetensors`` weights, tokenizer and processor configs) and loads through
``DiffusionPipeline.from_pretrained(folder)`` like the real thing. The weights are RANDOM: a
generated video is noise. What the folders keep from the real models is the plumbing: the
pipeline and component classes, the latent channels, the VAE compression ratios and patch
sizes (hence the width/height/frame-count rules in ``FAMILIES``) and the scheduler type.

Nothing is downloaded. The T5 tokenizer is trained here with sentencepiece on a short built-in
text and wrapped in ``transformers.T5Tokenizer``; the text and image encoders are built from
tiny configs.

    python scripts/tiny_models.py [DEST] [--verify]     # default DEST: <repo>/models/tiny

API: ``build(family, dest, seed=0) -> Path``, ``build_all(dest) -> dict[str, Path]``,
``FAMILIES`` (what each family serves and its parameter rules), ``verify(folder)`` (smoke test).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stamped_folder import build_stamped, stamp_text  # noqa: E402  (beside this script)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = REPO_ROOT / "models" / "tiny"

# A folder is reused only while its stamp matches: same builder source (hash of this file),
# family, seed and diffusers/transformers versions. Anything else rebuilds it.
STAMP = ".tiny-models-version"

# Parameter rules per family. A request is valid when
#   width % size_multiple == 0, height % size_multiple == 0,
#   num_frames >= min_frames and (num_frames - 1) % frame_step == 0.
# The pipelines do not all enforce this: Wan warns and rounds num_frames down to 4k+1, LTX
# silently decodes (num_frames - 1) // 8 * 8 + 1 frames, SVD fails on num_frames=1.
# test_size runs in about a second per generation on a 2-core CPU with 2 steps.
FAMILIES: dict[str, dict] = {
    "wan-t2v": {
        "pipeline": "WanPipeline",
        "kinds": ("text-to-video", "video-to-video"),
        "pipelines": {"text-to-video": "WanPipeline", "video-to-video": "WanVideoToVideoPipeline"},
        "frame_step": 4,  # num_frames = 4k + 1 (VAE temporal compression 4)
        "min_frames": 1,
        "size_multiple": 16,  # VAE spatial compression 8 x transformer patch 2
        "test_size": {"width": 32, "height": 32, "num_frames": 5, "steps": 2},
    },
    "wan-i2v": {
        "pipeline": "WanImageToVideoPipeline",
        "kinds": ("image-to-video",),
        "pipelines": {"image-to-video": "WanImageToVideoPipeline"},
        "frame_step": 4,
        "min_frames": 1,
        "size_multiple": 16,
        "test_size": {"width": 32, "height": 32, "num_frames": 5, "steps": 2},
    },
    "ltx": {
        "pipeline": "LTXPipeline",
        "kinds": ("text-to-video", "image-to-video"),
        "pipelines": {"text-to-video": "LTXPipeline", "image-to-video": "LTXImageToVideoPipeline"},
        "frame_step": 8,  # num_frames = 8k + 1 (VAE temporal compression 8)
        "min_frames": 1,
        "size_multiple": 32,  # VAE spatial compression 32 (patch 4 x 2^3), transformer patch 1
        "test_size": {"width": 32, "height": 32, "num_frames": 9, "steps": 2},
    },
    "svd": {
        "pipeline": "StableVideoDiffusionPipeline",
        "kinds": ("image-to-video",),
        "pipelines": {"image-to-video": "StableVideoDiffusionPipeline"},
        "frame_step": 1,  # any num_frames >= 2
        "min_frames": 2,  # num_frames=1 fails inside StableVideoDiffusionPipeline
        "size_multiple": 8,  # VAE spatial compression 8
        "test_size": {"width": 32, "height": 32, "num_frames": 5, "steps": 2},
    },
}

# Training text for the tokenizer: a few hundred words of prompt-like English.
_TOKENIZER_TEXT = """
A cat walks slowly across a sunny garden while the camera pans to the left.
A red car drives along a wet city street at night, neon lights reflecting in the puddles.
Waves crash on a rocky beach under a cloudy sky and seagulls fly overhead.
A woman in a yellow raincoat opens an umbrella and smiles at the camera.
An astronaut floats inside a space station, earth turning behind the window.
A dog runs through tall grass chasing a ball, slow motion, golden hour light.
Timelapse of clouds moving over snowy mountains, sharp focus, wide angle.
A chef chops fresh vegetables on a wooden board in a busy kitchen.
Close up of raindrops falling on green leaves, soft background blur.
A hot air balloon rises above a quiet village at sunrise.
Two children build a sandcastle by the sea, the tide slowly comes in.
A train crosses a long bridge over a deep valley in autumn, orange and brown trees.
A candle flickers on a table in a dark room, smoke curling upward.
Aerial drone shot of a winding river through a dense forest.
A robot dances on a stage with colorful spotlights and a cheering crowd.
Fireworks explode over a harbor, reflections shimmer on the water.
A horse gallops across an open field, dust rising from its hooves.
An old man reads a newspaper on a park bench while pigeons gather.
A bowl of noodles steams on a counter, chopsticks lift a bite.
Snow falls gently on a lantern lit street in a small town.
A jellyfish drifts in blue water, glowing softly in the deep ocean.
Cinematic shot, high quality, detailed, realistic, smooth motion, stable camera.
Low quality, blurry, distorted, watermark, text, jittery, overexposed, static frame.
The quick brown fox jumps over the lazy dog. Numbers 0 1 2 3 4 5 6 7 8 9 and 10, 24, 100.
ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789 !"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~
"""


# --------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet():
    """Silence diffusers/transformers logging and progress bars (restored afterwards)."""
    import diffusers
    import transformers

    d_log, t_log = diffusers.utils.logging, transformers.utils.logging
    d_level, t_level = d_log.get_verbosity(), t_log.get_verbosity()
    d_bars, t_bars = d_log.is_progress_bar_enabled(), t_log.is_progress_bar_enabled()
    d_log.set_verbosity_error()
    t_log.set_verbosity_error()
    d_log.disable_progress_bar()  # "Loading pipeline components"
    t_log.disable_progress_bar()  # "Writing model shards", "Loading weights"
    try:
        yield
    finally:
        d_log.set_verbosity(d_level)
        t_log.set_verbosity(t_level)
        if d_bars:
            d_log.enable_progress_bar()
        if t_bars:
            t_log.enable_progress_bar()


def _t5_tokenizer(model_max_length: int):
    """A T5 (unigram) tokenizer trained offline with sentencepiece on _TOKENIZER_TEXT.

    Ids follow T5: <pad>=0, </s>=1, <unk>=2. No <extra_id_*> sentinels (not needed here).
    """
    import sentencepiece as spm
    from transformers import T5Tokenizer

    lines = [line.strip() for line in _TOKENIZER_TEXT.splitlines() if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="unigram",
        vocab_size=400,
        hard_vocab_limit=False,
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def _vocab_size(tokenizer) -> int:
    """Embedding rows for a tokenizer: len(tokenizer) rounded up to a multiple of 64."""
    return -(-len(tokenizer) // 64) * 64


def _t5_encoder(tokenizer, d_model: int, umt5: bool):
    """Tiny T5/UMT5 encoder (gated-gelu like T5 v1.1 / UMT5), random weights."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_cls, model_cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    config = config_cls(
        vocab_size=_vocab_size(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return model_cls(config).eval()


def _clip_vision(hidden_size: int, projection: bool):
    """Tiny CLIP vision tower taking 224x224 input (what the pipelines feed it)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=hidden_size,
        projection_dim=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=224,
        patch_size=32,
    )
    model_cls = CLIPVisionModelWithProjection if projection else CLIPVisionModel
    return model_cls(config).eval()


def _clip_image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})


def _seeded(seed: int, make):
    """Build one component right after torch.manual_seed(seed), so each is deterministic."""
    import torch

    torch.manual_seed(seed)
    return make()


# --------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------


def _wan_vae():
    from diffusers import AutoencoderKLWan

    # Real Wan2.1 ratios: 3 spatial downsamples (8x), 2 temporal (4x), 16 latent channels.
    return AutoencoderKLWan(
        base_dim=4,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )


def _wan_transformer(in_channels: int, text_dim: int, image_dim: int | None = None):
    from diffusers import WanTransformer3DModel

    heads, head_dim = 2, 12
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=in_channels,
        out_channels=16,
        text_dim=text_dim,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=1024,  # as in the real configs; 32 would cap sides at 512 px
        image_dim=image_dim,
        # Like the real I2V checkpoints: image tokens get their own k/v projections.
        added_kv_proj_dim=heads * head_dim if image_dim else None,
    )


def _wan_scheduler():
    from diffusers import UniPCMultistepScheduler

    # The scheduler config of Wan-AI/Wan2.1-*-Diffusers (480p flow shift).
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)


def _build_wan_t2v(seed: int):
    from diffusers import WanPipeline

    tokenizer = _t5_tokenizer(model_max_length=512)
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=_seeded(seed, lambda: _t5_encoder(tokenizer, 32, umt5=True)),
        vae=_seeded(seed, _wan_vae),
        transformer=_seeded(seed, lambda: _wan_transformer(16, 32)),
        scheduler=_wan_scheduler(),
    )


def _build_wan_i2v(seed: int):
    from diffusers import WanImageToVideoPipeline

    tokenizer = _t5_tokenizer(model_max_length=512)
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=_seeded(seed, lambda: _t5_encoder(tokenizer, 32, umt5=True)),
        vae=_seeded(seed, _wan_vae),
        # 36 = 16 noise latents + 4 mask channels + 16 image-condition latents.
        transformer=_seeded(seed, lambda: _wan_transformer(36, 32, image_dim=16)),
        scheduler=_wan_scheduler(),
        image_encoder=_seeded(seed, lambda: _clip_vision(16, projection=False)),
        image_processor=_clip_image_processor(),
    )


def _ltx_vae():
    from diffusers import AutoencoderKLLTXVideo

    # Real LTX-Video ratios: patch 4 x three 2x stages = 32 spatial, 8 temporal.
    return AutoencoderKLLTXVideo(
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        patch_size=4,
        patch_size_t=1,
        timestep_conditioning=False,
    )


def _ltx_transformer():
    from diffusers import LTXVideoTransformer3DModel

    return LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=2,  # a first-block cache needs a block after the first
        caption_channels=32,
    )


def _ltx_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    # The scheduler config of Lightricks/LTX-Video (dynamic shifting, resolution dependent).
    return FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=1024,
        base_shift=0.95,
        max_image_seq_len=4096,
        max_shift=2.05,
        shift_terminal=0.1,
        use_dynamic_shifting=True,
    )


def _build_ltx(seed: int):
    from diffusers import LTXPipeline

    tokenizer = _t5_tokenizer(model_max_length=128)
    return LTXPipeline(
        tokenizer=tokenizer,
        text_encoder=_seeded(seed, lambda: _t5_encoder(tokenizer, 32, umt5=False)),
        vae=_seeded(seed, _ltx_vae),
        transformer=_seeded(seed, _ltx_transformer),
        scheduler=_ltx_scheduler(),
    )


def _svd_unet():
    from diffusers import UNetSpatioTemporalConditionModel

    return UNetSpatioTemporalConditionModel(
        sample_size=32,
        in_channels=8,  # 4 noise latents + 4 image-condition latents
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        num_attention_heads=(2, 4),
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=3 * 8,  # fps, motion bucket, noise aug
        num_frames=14,  # the default when a call gives no num_frames
    )


def _svd_vae():
    from diffusers import AutoencoderKLTemporalDecoder

    # Real SVD ratio: 8x spatial (4 encoder blocks), no temporal compression.
    return AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
    )


def _svd_scheduler():
    from diffusers import EulerDiscreteScheduler

    # The scheduler config of stabilityai/stable-video-diffusion-img2vid.
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )


def _build_svd(seed: int):
    from diffusers import StableVideoDiffusionPipeline

    return StableVideoDiffusionPipeline(
        vae=_seeded(seed, _svd_vae),
        image_encoder=_seeded(seed, lambda: _clip_vision(32, projection=True)),
        unet=_seeded(seed, _svd_unet),
        scheduler=_svd_scheduler(),
        feature_extractor=_clip_image_processor(),
    )


_BUILDERS = {
    "wan-t2v": _build_wan_t2v,
    "wan-i2v": _build_wan_i2v,
    "ltx": _build_ltx,
    "svd": _build_svd,
}


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def build(family: str, dest: Path, seed: int = 0, name: str | None = None) -> Path:
    """Build the tiny ``family`` folder as ``dest/<name or family>`` and return its path.

    A folder already there with the same stamp (builder source, seed, library versions) is
    returned as is. Otherwise it is built in a temporary sibling and renamed into place, so a
    reader never sees a half-written folder; a concurrent builder that loses the race keeps
    the winner's folder.
    """
    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")

    def make(tmp: Path) -> None:
        with _quiet():
            _BUILDERS[family](seed).save_pretrained(tmp)

    return build_stamped(Path(dest) / (name or family), STAMP, stamp_text(__file__, ("diffusers", "transformers"), family=family, seed=seed), make)


def build_all(dest: Path = DEFAULT_DEST, prefix: str = "") -> dict[str, Path]:
    """Build every family under ``dest`` as ``<prefix><family>``; return {family: folder}."""
    return {family: build(family, dest, name=prefix + family) for family in FAMILIES}


def verify(folder: Path, kind: str | None = None) -> dict:
    """Smoke-test a built folder: load it, run the family's test size for ``kind`` (default:
    every kind it serves), check the frames (shape, finite, not constant, seed-repeatable).

    Returns {kind: {"class", "shape", "steps", "seconds"}}; raises AssertionError on a failure.
    """
    import inspect
    import time

    import diffusers
    import numpy as np
    import torch
    from PIL import Image

    folder = Path(folder)
    name = json.loads((folder / "model_index.json").read_text())["_class_name"]
    meta = next(m for m in FAMILIES.values() if m["pipeline"] == name)
    with _quiet():
        base = diffusers.DiffusionPipeline.from_pretrained(folder, dtype=torch.float32)
    w, h, f, steps = (meta["test_size"][k] for k in ("width", "height", "num_frames", "steps"))
    image = Image.new("RGB", (w, h), (200, 80, 40))
    report = {}
    for kind in [kind] if kind else meta["kinds"]:
        pipe_cls = getattr(diffusers, meta["pipelines"][kind])
        if isinstance(base, pipe_cls):
            pipe = base
        else:
            with _quiet():  # from_pipe warns about float32 modules even when nothing is cast
                pipe = pipe_cls.from_pipe(base)
        pipe.set_progress_bar_config(disable=True)
        args = {"text-to-video": {"num_frames": f}, "image-to-video": {"image": image, "num_frames": f},
                "video-to-video": {"video": [image] * f, "strength": 0.8}}[kind]
        if "prompt" in inspect.signature(pipe.__call__).parameters:
            args["prompt"] = "a red car drives along a wet city street"
        done = []

        def run(seed):
            return pipe(**args, width=w, height=h, num_inference_steps=steps, output_type="np",
                        generator=torch.Generator("cpu").manual_seed(seed),
                        callback_on_step_end=lambda p, i, t, kw: done.append(i) or kw).frames

        start = time.perf_counter()
        frames = np.asarray(run(1))
        seconds = time.perf_counter() - start
        assert frames.shape == (1, f, h, w, 3), frames.shape
        assert np.isfinite(frames).all() and frames.min() < frames.max(), "degenerate frames"
        assert np.array_equal(frames, run(1)) and not np.array_equal(frames, run(2)), "seeding"
        report[kind] = {"class": type(pipe).__name__, "shape": frames.shape, "steps": len(done) // 3,
                        "seconds": round(seconds, 3)}
    return report


def main(argv: list[str]) -> int:
    import argparse

    # Building never downloads; make sure a verify load cannot try either.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description="Build tiny random-weight diffusers model folders.")
    parser.add_argument("dest", nargs="?", type=Path, default=DEFAULT_DEST)
    parser.add_argument("--prefix", default="", help="folder (= model) name prefix, e.g. tiny-")
    parser.add_argument("--verify", action="store_true", help="load each folder and run each kind once")
    args = parser.parse_args(argv[1:])
    for family, folder in build_all(args.dest, args.prefix).items():
        print(f"{family}\t{folder}")
        if args.verify:
            for kind, result in verify(folder).items():
                print(f"  {kind}: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
