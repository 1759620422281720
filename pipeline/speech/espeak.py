"""espeak-ng: the offline default engine, through its command line.

A voice is "LANG" or "LANG+VARIANT": LANG is any language code (or voice name) that
`espeak-ng --voices` lists, primary or among "Other Languages" ("en", "en-us", "de",
"fr", "zh"), VARIANT is any name `espeak-ng --voices=variant` lists by file ("f3", "m2",
"klatt", "Alex"). Both are matched without regard to case and passed on in espeak's
own spelling; espeak-ng itself silently ignores an unknown variant, so it is checked here.

Text goes to espeak-ng on stdin, never on the command line (no length limit, no option
injection from text that starts with "-"). Speed: 175 words per minute × speed, clamped
to espeak's 80–450.
"""

from __future__ import annotations

import difflib
import io
import shutil
import subprocess
import threading
import wave
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from contract.errors import ErrorCode, JobError
from contract.voices import (DEFAULT_LANGUAGE, ESPEAK_EXECUTABLE, ESPEAK_INSTALL_HINT, EspeakFolders, VoiceInfo,
                             base_language, parse_espeak_voices, run_espeak_list)

if TYPE_CHECKING:
    import numpy as np

BASE_WPM = 175
MIN_WPM, MAX_WPM = 80, 450


def words_per_minute(speed: float) -> int:
    return int(min(MAX_WPM, max(MIN_WPM, round(BASE_WPM * speed))))


@dataclass(frozen=True)
class _Catalog:
    voices: tuple[VoiceInfo, ...]
    # lowercase language code or voice name -> (espeak's spelling, language code)
    languages: dict[str, tuple[str, str]]
    # lowercase variant name -> espeak's spelling
    variants: dict[str, str]
    codes: tuple[str, ...]  # every language code, sorted


class EspeakEngine:
    name = "espeak"
    _shared: ClassVar[EspeakEngine | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, executable: str = ESPEAK_EXECUTABLE):
        self.executable = executable
        self._catalog: _Catalog | None = None
        self._folders = EspeakFolders(executable)
        self._stamp: tuple | None = None  # of the folders the catalog was read from
        self._lock = threading.Lock()

    @classmethod
    def shared(cls) -> EspeakEngine:
        """One engine per process, so `espeak-ng --voices` is parsed once."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    # -- catalogue -------------------------------------------------------------
    def catalog(self) -> _Catalog:
        """Read again when a voice folder changes (the daemon checks jobs with a shared one)."""
        with self._lock:
            stamp = self._folders.stamp()
            if self._catalog is None or stamp != self._stamp:
                self._catalog = self._parse(run_espeak_list("--voices", self.executable),
                                            run_espeak_list("--voices=variant", self.executable))
                self._stamp = stamp
            return self._catalog

    @staticmethod
    def _parse(voices_text: str, variants_text: str) -> _Catalog:
        voices: list[VoiceInfo] = []
        languages: dict[str, tuple[str, str]] = {}
        names: dict[str, tuple[str, str]] = {}
        for voice in parse_espeak_voices(voices_text):
            code = voice.code
            voices.append(voice.info())
            languages.setdefault(code.lower(), (code, code))
            for other in voice.other_languages:
                # "en" is no voice of its own: espeak picks the best of those listing it.
                languages.setdefault(other.lower(), (other, other))
            names.setdefault(voice.name.lower(), (code, code))
        codes = tuple(sorted(languages))
        for key, value in names.items():
            languages.setdefault(key, value)
        variants: dict[str, str] = {}
        for line in variants_text.splitlines()[1:]:
            fields = line.split(None, 4)
            if len(fields) < 5:
                continue
            file_name = fields[4].split()[0]
            variant = file_name.rpartition("/")[2]
            variants.setdefault(variant.lower(), variant)
        return _Catalog(voices=tuple(voices), languages=languages, variants=variants, codes=codes)

    def languages(self) -> list[str]:
        return list(self.catalog().codes)

    def voices(self) -> list[VoiceInfo]:
        return list(self.catalog().voices)

    def variants(self) -> list[str]:
        return sorted(self.catalog().variants.values(), key=str.lower)

    # -- voices ------------------------------------------------------------------
    def resolve(self, voice: str | None, language: str | None) -> tuple[str, str]:
        """(espeak voice, language) for a job's `voice` and `language`; ValueError if unknown.

        voice None: the language's default voice. "+VARIANT": a variant of `language`.
        When both are given, they must be the same language ("en-us" with "en" is fine).
        """
        catalog = self.catalog()
        voice = (voice or "").strip() or None
        if voice is None:
            lang_part, variant = language or DEFAULT_LANGUAGE, None
        else:
            lang_part, plus, variant = voice.partition("+")
            lang_part = lang_part.strip() or (language or DEFAULT_LANGUAGE)
            variant = variant.strip() if plus else None
            if plus and not variant:
                raise ValueError(f"voice {voice!r}: nothing after '+' (a variant such as f3, m2 or klatt)")
        found = catalog.languages.get(lang_part.lower())
        if found is None:
            what = "language" if voice is None else "voice"
            given = language if voice is None else voice
            near = difflib.get_close_matches(lang_part.lower(), list(catalog.languages), n=4, cutoff=0.6)
            hint = f" (close: {', '.join(near)})" if near else ""
            raise ValueError(
                f"{what} {given!r}: espeak-ng has no language {lang_part!r}{hint}; "
                "list them with `espeak-ng --voices` (the Language column: en, en-us, de, fr, …), "
                "and variants with `espeak-ng --voices=variant` (voice \"de+f3\")"
            )
        espeak_language, resolved_language = found
        if voice is not None and language and base_language(language) != base_language(resolved_language):
            raise ValueError(
                f"voice {voice!r} speaks {resolved_language}, but language is {language!r}; "
                "leave out one of them, or pick a voice of that language"
            )
        voice_id = espeak_language
        if variant is not None:
            canonical = catalog.variants.get(variant.lower())
            if canonical is None:
                near = difflib.get_close_matches(variant.lower(), list(catalog.variants), n=4, cutoff=0.6)
                hint = f" (close: {', '.join(catalog.variants[n] for n in near)})" if near else ""
                raise ValueError(
                    f"voice {voice!r}: espeak-ng has no variant {variant!r}{hint}; "
                    "list them with `espeak-ng --voices=variant` (last column, after \"!v/\": f3, m2, klatt, …)"
                )
            voice_id = f"{espeak_language}+{canonical}"
        return voice_id, resolved_language

    # -- synthesis ----------------------------------------------------------------
    def synthesize(self, text: str, language: str, voice: str | None, speed: float) -> tuple[np.ndarray, int]:
        """Mono float32 samples of `text` and their sample rate (22050 Hz for espeak-ng)."""
        voice_id, _ = self.resolve(voice, language if voice is None else None)
        path = shutil.which(self.executable)
        if path is None:
            raise JobError(ErrorCode.INTERNAL, ESPEAK_INSTALL_HINT)
        command = [path, "-v", voice_id, "-s", str(words_per_minute(speed)), "-b", "1", "--stdout"]
        # Generous: espeak-ng speaks ~50x faster than real time; a hung process must not hang the job.
        timeout = 60 + len(text) / 10
        try:
            out = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise JobError(ErrorCode.INTERNAL, f"espeak-ng took over {timeout:.0f} s for {len(text)} characters") from None
        except OSError as exc:
            raise JobError(ErrorCode.INTERNAL, f"espeak-ng could not run: {exc}") from None
        if out.returncode != 0:
            detail = out.stderr.decode("utf-8", "replace").strip()
            raise JobError(ErrorCode.INTERNAL, f"espeak-ng -v {voice_id} failed (exit {out.returncode}): {detail}")
        return read_wav(out.stdout)


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples from WAV bytes such as espeak-ng's --stdout.

    espeak-ng writes the header before it knows the length (sizes 0x7ffff000), so the
    data is taken as whatever follows the header.
    """
    import numpy as np

    if len(data) < 44:
        raise JobError(ErrorCode.INTERNAL, f"espeak-ng wrote no WAV ({len(data)} bytes)")
    try:
        with wave.open(io.BytesIO(data)) as reader:
            channels, width, rate = reader.getnchannels(), reader.getsampwidth(), reader.getframerate()
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as exc:
        raise JobError(ErrorCode.INTERNAL, f"espeak-ng wrote an unreadable WAV: {exc}") from None
    if width != 2:
        raise JobError(ErrorCode.INTERNAL, f"espeak-ng wrote {8 * width}-bit samples, expected 16-bit")
    usable = len(frames) - len(frames) % (2 * channels)
    samples = np.frombuffer(frames[:usable], dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples, rate
