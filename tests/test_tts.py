"""tts: espeak-ng speech through a real daemon, plus the sentence splitter and caption writers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from pipeline.speech.engine import Segment, speak
from pipeline.speech.sentences import split_long, split_sentences
from pipeline.speech.subtitles import format_srt, format_vtt, split_cues, srt_time, vtt_time
from tests.support import REPO, Daemon, drop_folder, drop_json, wait_all_final, wait_status
from contract.messages import Progress

ENGLISH = "The quick brown fox jumps over the lazy dog. Then it ran home! Was it tired?"  # 16 words


# -- through the daemon -------------------------------------------------------------


@pytest.fixture(scope="module")
def tts_daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("tts") / "spool"
    d = Daemon(root, workers=["cpu", "cpu"]).start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def spoken(tts_daemon):
    """The good jobs, dropped together and run once for the tests that read them."""
    root = tts_daemon.root
    jobs = {
        "en-wav": {"text": ENGLISH, "normalize": False},
        "en-mp3": {"text": ENGLISH, "normalize": False, "format": "mp3"},
        "en-m4a": {"text": ENGLISH, "normalize": False, "format": "m4a", "voice": "en-us+f3"},
        "en-fast": {"text": ENGLISH, "normalize": False, "speed": 2},
        "de": {"text": "Guten Morgen. Wie geht es dir heute?", "language": "de", "normalize": False},
        "fr": {"text": "Bonjour tout le monde. Comment allez-vous aujourd'hui?", "voice": "fr+m3",
               "normalize": False, "format": "mp3"},
    }
    for job_id, params in jobs.items():
        drop_json(root / "inbox", job_id, {"kind": "tts", "params": params})
    return wait_all_final(root, list(jobs), timeout=60, daemon=tts_daemon)


def outbox(daemon, job_id) -> Path:
    return daemon.root / "outbox" / job_id


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as reader:
        assert reader.getsampwidth() == 2 and reader.getnchannels() == 1
        data = np.frombuffer(reader.readframes(reader.getnframes()), "<i2").astype(np.float32) / 32768
        return data, reader.getframerate()


def decode(path: Path) -> tuple[np.ndarray, int]:
    """Any audio file as mono float samples at 22050 Hz, decoded by the ffmpeg command line."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", "22050", "-"],
                         capture_output=True, check=True)
    return np.frombuffer(out.stdout, "<f4"), 22050


def ffprobe_stream(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    (stream,) = json.loads(out.stdout)["streams"]
    return stream


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def srt_cues(path: Path) -> list[tuple[float, float, str]]:
    def seconds(clock: str) -> float:
        h, m, s, ms = map(int, re.fullmatch(r"(\d+):(\d\d):(\d\d),(\d\d\d)", clock).groups())
        return h * 3600 + m * 60 + s + ms / 1000

    cues = []
    blocks = path.read_text(encoding="utf-8").strip().split("\n\n")
    for number, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        assert lines[0] == str(number), block
        start, end = lines[1].split(" --> ")
        cues.append((seconds(start), seconds(end), " ".join(lines[2:])))
    return cues


def test_english_speech_is_real_and_fits_the_text(spoken, tts_daemon):
    doc = spoken["en-wav"]
    assert doc["state"] == "completed", doc
    out = outbox(tts_daemon, "en-wav")
    assert [f["name"] for f in doc["result"]["files"]] == ["speech.wav", "speech.srt"]
    samples, rate = read_wav(out / "speech.wav")
    seconds = len(samples) / rate
    assert 2 <= seconds <= 8, seconds
    assert rms(samples) > 0.03, rms(samples)
    # Speech, not a tone: the loudness moves (words and gaps).
    frame = rate // 50
    levels = [rms(samples[i : i + frame]) for i in range(0, len(samples) - frame, frame)]
    assert sum(level < 0.005 for level in levels) >= 3 and sum(level > 0.05 for level in levels) >= 20
    audio = doc["result"]["audio"]
    assert audio["sample_rate"] == rate == 22050 and audio["channels"] == 1 and audio["codec"] == "pcm_s16le"
    assert abs(audio["duration"] - seconds) < 0.05
    speech = doc["result"]["speech"]
    assert speech["engine"] == "espeak" and speech["voice"] == "en" and speech["language"] == "en"
    assert speech["sentences"] == 3 and speech["normalized_text"] == ENGLISH
    assert doc["result"]["seconds"]["synthesis"] > 0

    cues = srt_cues(out / "speech.srt")
    assert [c[2] for c in cues] == ["The quick brown fox jumps over the lazy dog.", "Then it ran home!", "Was it tired?"]
    assert cues[0][0] <= 0.3 and abs(cues[-1][1] - seconds) <= 0.3
    for (start, end, _), (next_start, _, _) in zip(cues, cues[1:]):
        assert start < end <= next_start
    # Each cue is sound and each gap between cues is silence.
    for start, end, _ in cues:
        assert rms(samples[int(start * rate) : int(end * rate)]) > 0.03
    for (_, end, _), (next_start, _, _) in zip(cues, cues[1:]):
        gap = samples[int(end * rate) + 50 : int(next_start * rate) - 50]
        assert len(gap) > 0.1 * rate and rms(gap) < 0.005


def test_mp3_and_m4a_decode_with_the_right_codec(spoken, tts_daemon):
    wav_seconds = spoken["en-wav"]["result"]["audio"]["duration"]
    for job_id, codec, media_type in (("en-mp3", "mp3", "audio/mpeg"), ("en-m4a", "aac", "audio/mp4")):
        doc = spoken[job_id]
        assert doc["state"] == "completed", doc
        name = "speech." + job_id.split("-")[1]
        files = doc["result"]["files"]
        assert [f["name"] for f in files] == [name, "speech.srt"] and files[0]["media_type"] == media_type
        path = outbox(tts_daemon, job_id) / name
        stream = ffprobe_stream(path)
        assert stream["codec_name"] == codec and stream["channels"] == 1
        assert doc["result"]["audio"]["codec"] == codec and doc["result"]["audio"]["channels"] == 1
        samples, rate = decode(path)
        assert rms(samples) > 0.03 and abs(len(samples) / rate - wav_seconds) < 0.5 + 0.15 * wav_seconds
        assert len(srt_cues(outbox(tts_daemon, job_id) / "speech.srt")) == 3
    assert spoken["en-m4a"]["result"]["speech"]["voice"] == "en-us+f3"


def test_speed_two_is_clearly_shorter(spoken):
    normal = spoken["en-wav"]["result"]["audio"]["duration"]
    fast = spoken["en-fast"]
    assert fast["state"] == "completed", fast
    assert fast["result"]["audio"]["duration"] < 0.7 * normal, (fast["result"]["audio"], normal)


@pytest.mark.parametrize("job_id, voice, language", [("de", "de", "de"), ("fr", "fr+m3", "fr")])
def test_german_and_french_speak(spoken, tts_daemon, job_id, voice, language):
    doc = spoken[job_id]
    assert doc["state"] == "completed", doc
    assert doc["result"]["speech"]["voice"] == voice and doc["result"]["speech"]["language"] == language
    name = doc["result"]["files"][0]["name"]
    samples, rate = decode(outbox(tts_daemon, job_id) / name)
    assert 1.5 <= len(samples) / rate <= 8 and rms(samples) > 0.03
    assert len(srt_cues(outbox(tts_daemon, job_id) / "speech.srt")) == 2


def test_bad_jobs_fail_at_accept_and_the_daemon_stays_up(tts_daemon, spoken):
    root = tts_daemon.root
    reference = subprocess.run(["espeak-ng", "--stdout"], input=b"my voice", capture_output=True, check=True).stdout
    bad = {
        "empty": ({"text": ""}, "params.text: String should have at least 1 character"),
        "blank": ({"text": "  \n\t "}, "params.text: Value error, is only whitespace"),
        "nothing": ({"text": "... --- !!!"}, "nothing to speak"),
        "toolong": ({"text": "word " * 20_001}, "params.text: String should have at most 100000 characters"),
        "badvoice": ({"text": "Hello.", "voice": "xx-nowhere"}, "espeak-ng has no language 'xx-nowhere'"),
        "badvariant": ({"text": "Hello.", "voice": "en+nosuch"}, "espeak-ng has no variant 'nosuch'"),
        "badlanguage": ({"text": "Hello.", "language": "qq"}, "language 'qq': espeak-ng has no language"),
        "mismatch": ({"text": "Hello.", "voice": "de", "language": "fr"}, "voice 'de' speaks de, but language is 'fr'"),
        "badspeed": ({"text": "Hello.", "speed": 9}, "params.speed"),
        "badformat": ({"text": "Hello.", "format": "ogg"}, "params.format"),
    }
    for job_id, (params, _) in bad.items():
        drop_json(root / "inbox", job_id, {"kind": "tts", "params": params})
    drop_folder(root / "inbox", "clone", {"kind": "tts", "params": {"text": "Hello."}, "inputs": {"reference_audio": "me.wav"}},
                {"me.wav": reference})
    bad["clone"] = ({}, 'voice cloning needs a coqui voice ([voices.NAME] engine = "coqui" with a cloning model)')
    done = wait_all_final(root, list(bad), timeout=30, daemon=tts_daemon)
    for job_id, (_, words) in bad.items():
        doc = done[job_id]
        assert doc["state"] == "failed" and doc["error"]["code"] == "invalid_job", doc
        assert words in doc["error"]["message"], (job_id, doc["error"])
        assert doc["started_at"] is None and doc["result"] is None, doc  # refused at accept, nothing ran
    assert "espeak-ng --voices" in done["badvoice"]["error"]["message"]
    assert "espeak-ng --voices=variant" in done["badvariant"]["error"]["message"]
    assert (root / "outbox" / "clone" / "input" / "me.wav").read_bytes() == reference

    assert tts_daemon.proc.poll() is None
    drop_json(root / "inbox", "after", {"kind": "tts", "params": {"text": "Still here.", "normalize": False}})
    doc = wait_status(root, "after", timeout=30, daemon=tts_daemon)
    assert doc["state"] == "completed", doc


def test_text_is_normalized_by_default(tts_daemon, spoken):
    root = tts_daemon.root
    drop_json(root / "inbox", "numbers", {"kind": "tts", "params": {"text": "I have 3 apples."}})
    doc = wait_status(root, "numbers", timeout=30, daemon=tts_daemon)
    assert doc["state"] == "completed", doc
    speech = doc["result"]["speech"]
    assert speech["normalized"] is True and "3" not in speech["normalized_text"] and "three" in speech["normalized_text"].lower()


# -- the engine interface, without the daemon -----------------------------------------------


class ToneEngine:
    """A fake engine: a tone as long as the text (10 ms a character) with silence around it."""

    name = "tone"

    def languages(self):
        return ["en"]

    def voices(self):
        return []

    def synthesize(self, text, language, voice, speed):
        rate = 1000
        tone = 0.5 * np.sin(np.arange(len(text) * 10, dtype=np.float32))
        silence = np.zeros(200, np.float32)
        return np.concatenate([silence, tone, silence]), rate, [(text.split()[0], 0.2, 0.25)]


def test_speak_joins_sentences_with_pauses_and_times_them():
    calls = []
    speech = speak(ToneEngine(), "One two. Three four five!\n\nSix.", "en", pause_seconds=0.25,
                   progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert [s.text for s in speech.segments] == ["One two.", "Three four five!", "Six."]
    margin = 0.03  # trimming keeps 30 ms of silence on each side
    lengths = [0.08, 0.16, 0.04]
    expected_start = 0.0
    for segment, length, pause in zip(speech.segments, lengths, (0.25, 0.5, 0)):
        assert segment.start == pytest.approx(expected_start, abs=0.002)
        assert segment.end - segment.start == pytest.approx(length + 2 * margin, abs=0.002)
        expected_start = segment.end + pause  # a paragraph break pauses twice as long
    assert speech.duration == pytest.approx(speech.segments[-1].end)
    assert speech.samples.dtype == np.float32 and speech.sample_rate == 1000
    # Word times are moved onto the track's time line.
    assert speech.segments[1].words[0].text == "Three"
    assert speech.segments[1].words[0].start == pytest.approx(speech.segments[1].start + margin, abs=0.002)


def test_speak_refuses_text_with_nothing_to_say():
    with pytest.raises(ValueError, match="nothing to speak"):
        speak(ToneEngine(), " ... \n --- ", "en")


def test_run_reports_speech_then_encoding_per_sentence(tmp_path):
    from threading import Event

    from pipeline.context import JobContext
    from pipeline.kinds.tts import KIND

    sent: list[dict] = []
    ctx = JobContext("unit", {}, {}, tmp_path, "cpu", sent.append, Event())
    params = KIND.params(text="One. Two. Three. Four.", normalize=False, format="m4a", voice="+f2", language="en-gb")
    KIND.run(ctx, params)
    assert ctx.outputs == ["speech.m4a", "speech.srt"] and sorted(p.name for p in tmp_path.iterdir()) == ctx.outputs
    progress = [vars(m) for m in sent if isinstance(m, Progress)]
    stages = [m["stage"] for m in progress]
    assert stages[0] == "speech" and stages[-1] == "encoding" and stages.index("encoding") > 1
    steps = [(m["step"], m["total_steps"]) for m in progress if m["stage"] == "speech" and m["step"] is not None]
    assert steps[0] == (0, 4) and steps[-1] == (4, 4)
    assert [m["progress"] for m in progress] == sorted(m["progress"] for m in progress)
    assert ctx.meta["speech"]["voice"] == "en-gb+f2" and ctx.meta["speech"]["sentences"] == 4
    assert ctx.meta["audio"]["codec"] == "aac" and ctx.meta["audio"]["sample_rate"] == 22050


# -- sentences ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, language, expected", [
    ("Hello there. How are you? Fine!", "en", ["Hello there.", "How are you?", "Fine!"]),
    ("Dr. Smith met Mrs. Jones at 3.5 p.m. today. Then he left.", "en",
     ["Dr. Smith met Mrs. Jones at 3.5 p.m. today.", "Then he left."]),
    ("Bring fruit, e.g. apples. Or i.e. pears.", "en", ["Bring fruit, e.g. apples.", "Or i.e. pears."]),
    ("It costs 3.50 dollars. See No. 5 and Fig. 2. Done.", "en", ["It costs 3.50 dollars.", "See No. 5 and Fig. 2.", "Done."]),
    ("J. R. R. Tolkien wrote it. The U.S. Army read it.", "en", ["J. R. R. Tolkien wrote it.", "The U.S. Army read it."]),
    ('"Really?" she asked. "Yes!" He nodded.', "en", ['"Really?" she asked.', '"Yes!"', "He nodded."]),
    ("Wait... what? Oh… I see.", "en", ["Wait... what?", "Oh…", "I see."]),
    ("A title\nThe first line. The second\n\n  \nlast", "en", ["A title", "The first line.", "The second", "last"]),
    ("Am 3. Juli kam z.B. Herr Dr. Müller. Er blieb.", "de", ["Am 3. Juli kam z.B. Herr Dr. Müller.", "Er blieb."]),
    ("Il est venu. M. Dupont est parti!", "fr", ["Il est venu.", "M. Dupont est parti!"]),
    ("你好。今天天气很好！是吗？", "zh", ["你好。", "今天天气很好！", "是吗？"]),
    ("Visit www.example.org today. *** \n---\n", "en", ["Visit www.example.org today."]),
    ("", "en", []),
])
def test_split_sentences(text, language, expected):
    assert split_sentences(text, language) == expected


def test_long_sentences_are_cut_at_clauses_then_spaces():
    clauses = "one two three, four five six; seven eight nine: ten eleven twelve"
    pieces = split_sentences(clauses, "en", max_chars=30)
    assert pieces == ["one two three, four five six;", "seven eight nine:", "ten eleven twelve"]
    words = " ".join(f"word{i}" for i in range(40))
    pieces = split_long(words, 50)
    assert all(len(p) <= 50 for p in pieces) and " ".join(pieces) == words
    assert split_long("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    assert split_long("short", 10) == ["short"]


# -- captions -------------------------------------------------------------------------------------


def test_srt_and_vtt_writers():
    segments = [Segment("Second <b> & --> more", 2.0, 3.0004), ("First  line\nof text", 0.0, 2.5), ("", 3.1, 3.2),
                Segment("Third", 3.2, 3.1)]
    srt = format_srt(segments)
    assert srt == (
        "1\n00:00:00,000 --> 00:00:02,500\nFirst line of text\n\n"
        "2\n00:00:02,500 --> 00:00:03,000\nSecond <b> & -> more\n\n"
        "3\n00:00:03,200 --> 00:00:03,200\nThird\n"
    )
    vtt = format_vtt(segments)
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nFirst line of text\n\n")
    assert "00:00:02.500 --> 00:00:03.000\nSecond &lt;b&gt; &amp; --&gt; more\n" in vtt
    wrapped = format_srt([("the quick brown fox jumps over the lazy dog", 0, 1)], width=16)
    assert wrapped.split("\n")[2:5] == ["the quick brown", "fox jumps over", "the lazy dog"]
    assert srt_time(3725.4567) == "01:02:05,457" and vtt_time(0.9996) == "00:00:01.000"
    assert srt_time(360_000) == "100:00:00,000"


def test_split_cues_shares_time_by_length():
    cues = split_cues([("aaaa bbbb cccc dddd eeee ffff", 10.0, 13.0)], max_chars=15)
    assert [c.text for c in cues] == ["aaaa bbbb cccc", "dddd eeee ffff"]
    assert cues[0].start == 10.0 and cues[-1].end == 13.0 and cues[0].end == cues[1].start == pytest.approx(11.5)


def test_checking_a_job_loads_no_heavy_libraries():
    code = (
        "import sys; from pipeline.kinds.tts import KIND; "
        "KIND.check(KIND.params(text='Hallo Welt.', voice='de+f3'), {}); "
        "heavy = {'av', 'numpy', 'torch', 'PIL'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=30)
