"""The model registry without a daemon: where a model is found, what it serves, what is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_settings
from daemon.registry import discover_models, incomplete_model
from contract.errors import JobError
from contract.families import class_for, family_of, kinds_of
from contract.model_folders import model_folder, read_index


def fake_model(folder: Path, class_name: str = "WanPipeline") -> Path:
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name, "_diffusers_version": "0.42.1"}))
    return folder


def fake_hub_snapshot(cache: Path, repo: str, revision: str = "main") -> Path:
    """The hub cache layout huggingface_hub writes: refs/<revision> → snapshots/<commit>/."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / revision).write_text(commit)
    return fake_model(base / "snapshots" / commit)


def test_path_and_repo_from_the_local_cache_only(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    cache = tmp_path / "hub"
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    snapshot = fake_hub_snapshot(cache, "Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    assert model_folder("wan", {"repo": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"}) == snapshot
    with pytest.raises(JobError) as err:
        model_folder("ltx", {"repo": "Lightricks/LTX-Video"})
    assert err.value.code == "model_not_found"
    assert str(cache / "models--Lightricks--LTX-Video") in err.value.message and "hf download" in err.value.message
    local = fake_model(tmp_path / "local")
    assert model_folder("local", {"path": str(local)}) == local
    with pytest.raises(JobError) as err:
        model_folder("gone", {"path": str(tmp_path / "gone")})
    assert err.value.code == "model_not_found" and "gone does not exist" in err.value.message


def test_model_index_must_parse_and_name_its_class(tmp_path):
    folder = fake_model(tmp_path / "m")
    assert read_index("m", folder)["_class_name"] == "WanPipeline"
    (folder / "model_index.json").write_text("{not json")
    with pytest.raises(JobError) as err:
        read_index("m", folder)
    assert err.value.code == "model_load_failed" and "corrupt" in err.value.message
    (folder / "model_index.json").write_text("{}")
    with pytest.raises(JobError) as err:
        read_index("m", folder)
    assert "_class_name" in err.value.message
    (folder / "model_index.json").unlink()
    with pytest.raises(JobError) as err:
        read_index("m", folder)
    assert err.value.code == "model_not_found" and "not a diffusers model folder" in err.value.message


def test_families_map_kinds_to_classes():
    assert kinds_of("WanPipeline") == ["text-to-video", "video-to-video"]
    assert class_for("WanPipeline", "video-to-video") == "WanVideoToVideoPipeline"
    assert class_for("LTXPipeline", "image-to-video") == "LTXImageToVideoPipeline"
    assert kinds_of("StableVideoDiffusionPipeline") == ["image-to-video"]
    assert class_for("MyPipeline", "text-to-video") == "MyPipeline" and kinds_of("MyPipeline") == []
    wan, ltx, svd = (family_of(c) for c in ("WanPipeline", "LTXPipeline", "StableVideoDiffusionPipeline"))
    assert [n for n in range(1, 40) if wan.frames_ok(n)] == [1, 5, 9, 13, 17, 21, 25, 29, 33, 37]
    assert ltx.frames_ok(33) and not ltx.frames_ok(32) and ltx.nearest_frames(40) == 33
    assert not svd.frames_ok(1) and svd.frames_ok(2)


def test_discovered_folders_and_config_entries(tmp_path):
    reg = tmp_path / "models"
    fake_model(reg / "wan", "WanPipeline")
    fake_model(reg / "svd", "StableVideoDiffusionPipeline")
    (reg / "notes").mkdir()  # no model_index.json: not a model
    fake_model(reg / ".hidden")
    found = discover_models(reg)
    assert sorted(found) == ["svd", "wan"] and found["svd"].kinds == ["image-to-video"]
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[registry]\ndir = "{reg}"\n[models.wan]\npath = "{tmp_path / "other"}"\nkinds = ["text-to-video"]\n')
    settings = load_settings(cfg)
    assert settings.models["wan"].path == tmp_path / "other", "a config entry wins over a folder"
    assert settings.models["svd"].path == (reg / "svd").resolve()


@pytest.mark.parametrize("entry, words", [
    ('path = "/a"\nrepo = "b/c"', "exactly one of path"),
    ('kinds = ["text-to-video"]', "exactly one of path"),
    ('repo = "not a repo id"', "models.m.repo"),
    ('path = "/a"\noffload = "gpu"', "models.m.offload"),
    ('path = "/a"\ndtype = "float8"', "models.m.dtype"),
])
def test_bad_model_entries_stop_start_up_naming_the_key(tmp_path, entry, words):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"[models.m]\n{entry}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert words in str(err.value)


def test_import_copies_a_hub_snapshot_with_symlinks(tmp_path):
    """A hub snapshot is symlinks into blobs/: import copies the files, not the links."""
    import subprocess
    import sys

    from tests.support import REPO

    blob = tmp_path / "blobs" / "abc"
    blob.parent.mkdir()
    blob.write_text(json.dumps({"_class_name": "LTXPipeline"}))
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "model_index.json").symlink_to(blob)
    reg = tmp_path / "registry"
    out = subprocess.run([sys.executable, "-m", "daemon", "models", "import", str(snap), "--name", "ltx"], cwd=REPO,
                         env={"VIDSPOOL_REGISTRY__DIR": str(reg), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    copied = reg / "ltx" / "model_index.json"
    assert copied.is_file() and not copied.is_symlink()
    shutil.rmtree(tmp_path / "blobs")
    assert json.loads(copied.read_text())["_class_name"] == "LTXPipeline"


def test_a_diffusers_folder_being_copied_is_left_out_until_complete(tmp_path):
    """model_index.json names the components: a folder lacking one (or a weight shard its
    index lists) is not registered yet, and what it lacks is said; complete, it is."""
    reg = tmp_path / "models"
    wan = fake_model(reg / "wan")
    index = {"_class_name": "WanPipeline", "_diffusers_version": "0.42.1", "boundary_ratio": None,
             "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"],
             "transformer_2": [None, None]}  # a component the pipeline goes without
    (wan / "model_index.json").write_text(json.dumps(index))
    (wan / "vae").mkdir()
    (wan / "vae" / "config.json").write_text("{}")
    assert "wan" not in discover_models(reg)
    assert incomplete_model(reg, "wan") == (wan, ["transformer/"])
    (wan / "transformer").mkdir()  # made by the copy, nothing in it yet
    assert incomplete_model(reg, "wan") == (wan, ["transformer/"])
    shards = {f"diffusion_pytorch_model-0000{i}-of-00002.safetensors" for i in (1, 2)}
    (wan / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {f"block.{n}": shard for n, shard in enumerate(sorted(shards))}}))
    (wan / "transformer" / "diffusion_pytorch_model-00001-of-00002.safetensors").write_bytes(b"x")
    assert incomplete_model(reg, "wan") == (wan, ["transformer/diffusion_pytorch_model-00002-of-00002.safetensors"])
    assert "wan" not in discover_models(reg)
    (wan / "transformer" / "diffusion_pytorch_model-00002-of-00002.safetensors").write_bytes(b"x")
    assert incomplete_model(reg, "wan") is None
    assert discover_models(reg)["wan"].kinds == ["text-to-video", "video-to-video"]
    assert incomplete_model(reg, "../models/wan") is None and incomplete_model(reg, "nothing") is None
