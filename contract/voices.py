"""The voices a job may name on a host, and the catalog the daemon lists of them.

A `VoiceBook` holds the `[voices.NAME]` configs (dicts, as `VoiceConfig.model_dump(mode="json")`
gives them) and the folders under which a job may name a coqui model by path ([registry]
dir). The daemon builds one from its settings to check jobs at accept time; a worker builds
one per job from the run message (so a reload reaches running workers too) and hands it to
the kind in `JobContext.voices`.

`catalog(book)` and `language_counts(book)` feed GET /api/v1/voices, GET /api/v1/languages
and `vidspool voices`: the configured voices, then every voice `espeak-ng --voices` lists.
Only the standard library here: no numpy, torch or coqui.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from contract.errors import ErrorCode, JobError

DEFAULT_LANGUAGE = "en"
ESPEAK_EXECUTABLE = "espeak-ng"
ESPEAK_INSTALL_HINT = "espeak-ng is not installed on this host: apt-get install espeak-ng"
ESPEAK_LIST_TIMEOUT_SECONDS = 30
_OTHER_LANGUAGE = re.compile(r"\(([^\s()]+)\s+\d+\)")


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


# -- the catalog -----------------------------------------------------------------------------
def catalog(book: VoiceBook, language: str | None = None) -> list[dict]:
    """Every voice: configured ones first (by name), then espeak-ng's, one per language;
    with `language`, only those of that language ("de" also gives "de-ch")."""
    out = []
    for name, cfg in sorted(book.configured.items()):
        out.append({"id": name, "name": cfg.get("description") or name, "language": cfg.get("language") or DEFAULT_LANGUAGE,
                    "engine": cfg.get("engine", "espeak"), "gender": None, "configured": True,
                    "cloning": bool(cfg.get("reference_audio"))})
    # Read each time (about 10 ms): the list is whatever espeak-ng is installed now.
    for voice in parse_espeak_voices(run_espeak_list("--voices")):
        v = voice.info()
        out.append({"id": v.id, "name": v.name, "language": v.language, "engine": v.engine,
                    "gender": v.gender, "configured": False, "cloning": False})
    if language:
        want = base_language(language)
        out = [v for v in out if base_language(v["language"]) == want or v["language"].lower() == language.lower()]
    return out


def language_counts(book: VoiceBook) -> list[dict]:
    """[{code, voices}] sorted by code: how many voices speak each language."""
    counts: dict[str, int] = {}
    for v in catalog(book):
        counts[v["language"]] = counts.get(v["language"], 0) + 1
    return [{"code": code, "voices": n} for code, n in sorted(counts.items(), key=lambda kv: kv[0].lower())]
