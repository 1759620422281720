"""coqui: tiny random-weight coqui-tts models, built here, loaded by a worker through the daemon.

The folders come from scripts/tiny_tts_models.py (a multi-speaker VITS and a YourTTS-layout
VITS with a speaker encoder); their weights are random, so what they say is noise: the
tests check sample rates, shapes and durations (every character lasts FRAMES_PER_CHAR
frames of 256 samples in these models), not what is heard.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.support import REPO, Daemon, drop_folder, drop_json, wait_all_final


_spec = importlib.util.spec_from_file_location("tiny_tts_models", REPO / "scripts" / "tiny_tts_models.py")
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

TEXT = "The quick brown fox jumps over the lazy dog. Then it ran home."
HOP = 256


@pytest.fixture(scope="session")
def tiny_tts(tmp_path_factory):
    dest = tmp_path_factory.mktemp("tiny-tts")
    return {family: tiny.build(family, dest) for family in tiny.FAMILIES}


@pytest.fixture(scope="module")
def coqui_daemon(tmp_path_factory, tiny_tts):
    root = tmp_path_factory.mktemp("coqui") / "spool"
    recording = root.parent / "reader.wav"
    recording.write_bytes(reference_wav())
    # A configured voice that clones a recording; and the tiny models' folder as [registry] dir,
    # the only place a job may name a coqui folder by path.
    voices = {"reader": {"engine": "coqui", "model": str(tiny_tts["yourtts"]), "reference_audio": str(recording)}}
    d = Daemon(root, workers=["cpu"], VIDSPOOL_REGISTRY__DIR=str(tiny_tts["vits"].parent),
               VIDSPOOL_VOICES=json.dumps(voices)).start()
    yield d
    d.stop()


def reference_wav() -> bytes:
    return subprocess.run(["espeak-ng", "--stdout"], input=b"this is how my voice sounds", capture_output=True,
                          check=True).stdout


@pytest.fixture(scope="module")
def jobs(coqui_daemon, tiny_tts):
    root = coqui_daemon.root
    vits, yourtts = tiny_tts["vits"], tiny_tts["yourtts"]
    missing = tiny_tts["vits"].parent / "no-such-model"
    drop_json(root / "inbox", "vits-bob", {"kind": "tts", "params": {"text": TEXT, "voice": f"coqui:{vits}#bob"}})
    drop_json(root / "inbox", "vits-default-fast",
              {"kind": "tts", "params": {"text": TEXT, "voice": f"coqui:{vits}", "speed": 2}})
    drop_json(root / "inbox", "yourtts-preset", {"kind": "tts", "params": {"text": TEXT, "voice": f"coqui:{yourtts}#dave"}})
    drop_folder(root / "inbox", "yourtts-clone",
                {"kind": "tts", "params": {"text": TEXT, "voice": f"coqui:{yourtts}"}, "inputs": {"reference_audio": "me.wav"}},
                {"me.wav": reference_wav()})
    # failures
    drop_json(root / "inbox", "missing", {"kind": "tts", "params": {"text": TEXT, "voice": f"coqui:{missing}"}})
    drop_folder(root / "inbox", "vits-clone",
                {"kind": "tts", "params": {"text": TEXT, "voice": f"coqui:{vits}"}, "inputs": {"reference_audio": "me.wav"}},
                {"me.wav": reference_wav()})
    drop_json(root / "inbox", "badspeaker", {"kind": "tts", "params": {"text": TEXT, "voice": f"coqui:{vits}#zed"}})
    drop_json(root / "inbox", "configured-clone", {"kind": "tts", "params": {"text": TEXT, "voice": "reader"}})
    outside = root.parent / "elsewhere"
    shutil.copytree(vits, outside)
    drop_json(root / "inbox", "outside", {"kind": "tts", "params": {"text": TEXT, "voice": f"coqui:{outside}"}})
    ids = ["vits-bob", "vits-default-fast", "yourtts-preset", "yourtts-clone", "missing", "vits-clone", "badspeaker",
           "configured-clone", "outside"]
    return wait_all_final(root, ids, timeout=90, daemon=coqui_daemon)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as reader:
        assert reader.getsampwidth() == 2 and reader.getnchannels() == 1
        data = np.frombuffer(reader.readframes(reader.getnframes()), "<i2").astype(np.float32) / 32768
        return data, reader.getframerate()


def expected_seconds(doc: dict, rate: int, speed: float = 1.0) -> float:
    """Characters × frames per character × hop, plus the pauses between sentences."""
    text = doc["result"]["speech"]["normalized_text"] if "speech" in doc["result"] else TEXT
    sentences = doc["result"]["speech"]["sentences"]
    frames = np.ceil(tiny.FRAMES_PER_CHAR - 0.5) if speed == 1 else np.ceil((tiny.FRAMES_PER_CHAR - 0.5) / speed)
    return len(text) * frames * HOP / rate + 0.25 * (sentences - 1)


@pytest.mark.parametrize("job_id, family, speaker", [
    ("vits-bob", "vits", "bob"), ("yourtts-preset", "yourtts", "dave"), ("yourtts-clone", "yourtts", "cloned"),
])
def test_coqui_speaks_at_the_models_rate(jobs, coqui_daemon, tiny_tts, job_id, family, speaker):
    doc = jobs[job_id]
    assert doc["state"] == "completed", doc
    rate = tiny.FAMILIES[family]["sample_rate"]
    speech = doc["result"]["speech"]
    assert speech["engine"] == "coqui" and speech["voice"] == speaker and speech["language"] == "en"
    assert speech["model"] == f"registry/{tiny_tts[family].name}" and speech["sentences"] == 2
    audio = doc["result"]["audio"]
    assert audio["sample_rate"] == rate and audio["channels"] == 1
    samples, wav_rate = read_wav(coqui_daemon.root / "outbox" / job_id / "speech.wav")
    assert wav_rate == rate and samples.ndim == 1 and np.isfinite(samples).all() and np.abs(samples).max() > 0
    seconds = len(samples) / rate
    assert abs(seconds - audio["duration"]) < 0.05
    assert 0.7 * expected_seconds(doc, rate) < seconds < 1.2 * expected_seconds(doc, rate), (seconds, doc)
    srt = (coqui_daemon.root / "outbox" / job_id / "speech.srt").read_text()
    assert srt.count(" --> ") == 2


def test_speed_two_halves_the_duration(jobs):
    slow, fast = jobs["vits-bob"], jobs["vits-default-fast"]
    assert fast["state"] == "completed", fast
    assert fast["result"]["speech"]["voice"] == "alice"  # no speaker: the model's first
    ratio = fast["result"]["audio"]["duration"] / slow["result"]["audio"]["duration"]
    assert 0.4 < ratio < 0.65, ratio


def test_a_configured_voice_clones_its_recording_and_paths_stay_in_the_registry(jobs):
    doc = jobs["configured-clone"]
    assert doc["state"] == "completed", doc
    assert doc["result"]["speech"]["voice"] == "cloned" and doc["result"]["audio"]["sample_rate"] == 16000
    outside = jobs["outside"]
    assert outside["state"] == "failed" and outside["error"]["code"] == "invalid_job"
    assert "inside [registry] dir" in outside["error"]["message"] and outside["started_at"] is None


def test_coqui_failures(jobs, tiny_tts):
    missing = jobs["missing"]
    assert missing["state"] == "failed" and missing["error"]["code"] == "model_not_found", missing
    assert "registry/no-such-model" in missing["error"]["message"]  # inside [registry] dir, not the host path
    assert missing["started_at"] is None  # refused at accept

    clone = jobs["vits-clone"]
    assert clone["state"] == "failed" and clone["error"]["code"] == "invalid_job", clone
    assert "cannot clone a voice" in clone["error"]["message"] and clone["started_at"] is None

    speaker = jobs["badspeaker"]
    assert speaker["state"] == "failed" and speaker["error"]["code"] == "invalid_job", speaker
    assert "no speaker 'zed'" in speaker["error"]["message"] and "alice, bob" in speaker["error"]["message"]


def test_broken_checkpoint_is_model_load_failed(tiny_tts, tmp_path):
    import shutil

    from contract.errors import JobError
    from pipeline.speech.coqui import CoquiEngine

    broken = tmp_path / "broken"
    shutil.copytree(tiny_tts["vits"], broken)
    (broken / "model.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(JobError) as err:
        CoquiEngine(broken).synthesizer()
    assert err.value.code == "model_load_failed" and str(broken) in str(err.value)


def test_accepting_a_coqui_voice_loads_no_torch(tiny_tts):
    code = (
        "import sys\n"
        "from pipeline.kinds.tts import TtsParams, check\n"
        "from contract.voices import VoiceBook\n"
        f"voices = VoiceBook.from_config({{}}, [{str(tiny_tts['yourtts'].parent)!r}])\n"
        f"check(TtsParams(text='Hello.', voice='coqui:{tiny_tts['yourtts']}'), {{'reference_audio': ['x.wav']}}, voices)\n"
        "heavy = [m for m in ('torch', 'TTS', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_cloning_uses_the_reference_recording(tiny_tts, tmp_path):
    """The speaker encoder turns each recording into its own d-vector; the clone has the text's length."""
    from pipeline.speech.coqui import CoquiEngine

    first, second = tmp_path / "a.wav", tmp_path / "b.wav"
    first.write_bytes(reference_wav())
    second.write_bytes(subprocess.run(["espeak-ng", "--stdout", "-v", "de+f3"], input=b"ganz andere Stimme hier",
                                      capture_output=True, check=True).stdout)
    engine = CoquiEngine.shared(tiny_tts["yourtts"])
    assert engine.can_clone() and not CoquiEngine(tiny_tts["vits"]).can_clone()
    manager = engine.synthesizer().tts_model.speaker_manager
    vectors = [np.array(manager.compute_embedding_from_clip(str(p))) for p in (first, first, second)]
    assert vectors[0].shape == (tiny.FAMILIES["yourtts"]["d_vector_dim"],)
    assert np.allclose(vectors[0], vectors[1]) and not np.allclose(vectors[0], vectors[2], atol=1e-3)
    for reference in (first, second):
        samples, rate = engine.clone("Hello there.", reference)
        assert rate == 16000 and samples.dtype == np.float32 and np.isfinite(samples).all()
        assert len(samples) == len("hello there.") * tiny.FRAMES_PER_CHAR * HOP
