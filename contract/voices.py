"""The voices a job may name on a host, and the catalog the daemon lists of them.

A `VoiceBook` holds the `[voices.NAME]` configs (dicts, as `VoiceConfig.model_dump(mode="json")`
gives them) and the folders under which a job may name a coqui model by path ([registry]
dir). The daemon builds one from its settings to check jobs at accept time; a worker builds
one per job from the run message (so a reload reaches running workers too) and hands it to
the kind in `JobContext.voices`.

`catalog(book)` and `language_counts(book)` feed GET /api/v1/voices, GET /api/v1/languages
and `vidspool voices`: the configured voices, then every voice `espeak-ng --voices` lists
(a daemon keeps that list in an `EspeakVoiceList` until espeak-ng's voice folders change).
Only the standard library here: no numpy, torch or coqui.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from contract.errors import ErrorCode, JobError

DEFAULT_LANGUAGE = "en"
ESPEAK_EXECUTABLE = "espeak-ng"
ESPEAK_INSTALL_HINT = "espeak-ng is not installed on this host: apt-get install espeak-ng"
ESPEAK_LIST_TIMEOUT_SECONDS = 30
_OTHER_LANGUAGE = re.compile(r"\(([^\s()]+)\s+\d+\)")
_DATA_AT = re.compile(r"Data at:\s*(.+)$", re.MULTILINE)
VOICE_FOLDERS = ("lang", "voices")  # of espeak-ng's data folder: where its voice files are


def base_language(language: str) -> str:
    """"en-us" -> "en", "pt_BR" -> "pt"."""
    return language.replace("_", "-").split("-")[0].lower()


@dataclass(frozen=True)
class VoiceInfo:
    id: str  # what a job passes as `voice`
    name: str
    language: str
    gender: str | None = None
    engine: str = ""


@dataclass(frozen=True)
class VoiceBook:
    """The host's voice configuration; read-only (build one with `from_config`)."""

    configured: Mapping[str, Mapping] = field(default_factory=lambda: MappingProxyType({}))
    model_roots: tuple[str, ...] = ()  # real paths

    @classmethod
    def from_config(cls, voices: Mapping[str, Mapping], model_roots: Iterable[str] = ()) -> VoiceBook:
        return cls(MappingProxyType({name: MappingProxyType(dict(cfg)) for name, cfg in voices.items()}),
                   tuple(os.path.realpath(root) for root in model_roots))

    def voice(self, name: str | None) -> Mapping | None:
        """The `[voices.NAME]` config of `name`; None when it is not a configured voice."""
        return self.configured.get(name) if name else None

    def check_model_folder(self, folder: str) -> None:
        """A job may name a coqui folder by path only inside [registry] dir: a job must not make
        a worker read any folder on the host. Raises ValueError otherwise."""
        real = os.path.realpath(folder)
        if not any(real == root or real.startswith(root + os.sep) for root in self.model_roots):
            where = ", ".join(self.model_roots) or "none configured"
            raise ValueError(f"voice: a coqui model named by path must be inside [registry] dir ({where}); "
                             "or configure it as [voices.NAME] engine = \"coqui\"")


# -- espeak-ng's list ------------------------------------------------------------------------
@dataclass(frozen=True)
class EspeakVoice:
    """One line of `espeak-ng --voices`."""

    code: str  # the Language column: "en-us"
    name: str  # the VoiceName column, in espeak's spelling: "English_(America)"
    gender: str | None
    other_languages: tuple[str, ...]  # codes under "Other Languages": "(en 2)" -> "en"

    def info(self) -> VoiceInfo:
        return VoiceInfo(id=self.code, name=self.name.replace("_", " "), language=self.code, gender=self.gender,
                         engine="espeak")


def run_espeak_list(argument: str, executable: str = ESPEAK_EXECUTABLE) -> str:
    """The output of `espeak-ng ARGUMENT` (--voices, --voices=variant); JobError (internal)
    when espeak-ng is missing or fails."""
    path = shutil.which(executable)
    if path is None:
        raise JobError(ErrorCode.INTERNAL, ESPEAK_INSTALL_HINT)
    try:
        out = subprocess.run([path, argument], capture_output=True, timeout=ESPEAK_LIST_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise JobError(ErrorCode.INTERNAL, f"espeak-ng {argument} failed: {exc}") from None
    if out.returncode != 0:
        detail = out.stderr.decode("utf-8", "replace").strip()
        raise JobError(ErrorCode.INTERNAL, f"espeak-ng {argument} failed (exit {out.returncode}): {detail}")
    return out.stdout.decode("utf-8", "replace")


def parse_espeak_voices(text: str) -> tuple[EspeakVoice, ...]:
    """The voices in the output of `espeak-ng --voices` (the first line is the header)."""
    voices = []
    for line in text.splitlines()[1:]:
        fields = line.split(None, 4)
        if len(fields) < 5:
            continue
        _, code, age_gender, name, rest = fields
        gender = {"M": "male", "F": "female"}.get(age_gender.rpartition("/")[2])
        voices.append(EspeakVoice(code, name, gender, tuple(_OTHER_LANGUAGE.findall(rest))))
    return tuple(voices)


def espeak_data_folder(executable: str) -> Path | None:
    """The data folder `espeak-ng --version` reports ("Data at: …"), or None."""
    match = _DATA_AT.search(run_espeak_list("--version", executable))
    return Path(match.group(1).strip()) if match else None


class EspeakFolders:
    """What espeak-ng's lists depend on: the program and the folders of its voices. The stamp
    changes when espeak-ng is replaced or a voice file is added, removed or replaced."""

    def __init__(self, executable: str = ESPEAK_EXECUTABLE):
        self.executable = executable
        self._program: tuple[str, int] | None = None  # espeak-ng's path and mtime
        self._data: Path | None = None  # its data folder, as that program reports it

    def stamp(self) -> tuple | None:
        """None when espeak-ng names no data folder (nothing to watch); JobError (internal)
        when it is not installed."""
        path = shutil.which(self.executable)
        if path is None:
            raise JobError(ErrorCode.INTERNAL, ESPEAK_INSTALL_HINT)
        program = (path, os.stat(path).st_mtime_ns)
        if program != self._program:
            self._program, self._data = program, espeak_data_folder(path)
        return (program, _folders_stamp(self._data)) if self._data is not None else None


class EspeakVoiceList:
    """`espeak-ng --voices`, run again only when its folders' stamp changes: a daemon lists
    voices on every /voices request, and one run takes 10-40 ms. One per event loop."""

    def __init__(self, executable: str = ESPEAK_EXECUTABLE):
        self.folders = EspeakFolders(executable)
        self._stamp: tuple | None = None  # what the voices below were listed for
        self._voices: tuple[EspeakVoice, ...] = ()

    def voices(self) -> tuple[EspeakVoice, ...]:
        stamp = self.folders.stamp()
        if stamp is None or stamp != self._stamp:  # no data folder known: listed each time
            self._voices = parse_espeak_voices(run_espeak_list("--voices", self.folders.executable))
            self._stamp = stamp
        return self._voices


def _folders_stamp(data: Path) -> tuple[tuple[str, int], ...]:
    """Every folder under the data folder's lang/ and voices/ with its mtime (a file added,
    removed or renamed into one changes it)."""
    stamp = []
    for top in VOICE_FOLDERS:
        for folder, _dirs, _files in os.walk(data / top):
            try:
                stamp.append((folder, os.stat(folder).st_mtime_ns))
            except OSError:
                stamp.append((folder, -1))
    return tuple(stamp)


# -- the catalog -----------------------------------------------------------------------------
def catalog(book: VoiceBook, language: str | None = None, espeak: EspeakVoiceList | None = None) -> list[dict]:
    """Every voice: configured ones first (by name), then espeak-ng's (from `espeak`, else
    listed now), one per language; with `language`, only those of that language ("de"
    also gives "de-ch")."""
    out = []
    for name, cfg in sorted(book.configured.items()):
        out.append({"id": name, "name": cfg.get("description") or name, "language": cfg.get("language") or DEFAULT_LANGUAGE,
                    "engine": cfg.get("engine", "espeak"), "gender": None, "configured": True,
                    "cloning": bool(cfg.get("reference_audio"))})
    for voice in espeak.voices() if espeak is not None else parse_espeak_voices(run_espeak_list("--voices")):
        v = voice.info()
        out.append({"id": v.id, "name": v.name, "language": v.language, "engine": v.engine,
                    "gender": v.gender, "configured": False, "cloning": False})
    if language:
        want = base_language(language)
        out = [v for v in out if base_language(v["language"]) == want or v["language"].lower() == language.lower()]
    return out


def language_counts(book: VoiceBook, espeak: EspeakVoiceList | None = None) -> list[dict]:
    """[{code, voices}] sorted by code: how many voices speak each language."""
    counts: dict[str, int] = {}
    for v in catalog(book, espeak=espeak):
        counts[v["language"]] = counts.get(v["language"], 0) + 1
    return [{"code": code, "voices": n} for code, n in sorted(counts.items(), key=lambda kv: kv[0].lower())]
