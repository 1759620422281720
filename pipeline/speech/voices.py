"""The voices a job may name: `[voices.NAME]` from config, then every espeak-ng language.

The daemon sets the configured voices at start and on reload; a worker gets them with each
job (so a reload reaches running workers too). `catalog()` and `language_counts()` feed
GET /api/v1/voices, GET /api/v1/languages and `vidspool voices`. No numpy or torch here.
"""

from __future__ import annotations

import os

CONFIGURED: dict[str, dict] = {}
# Folders under which a job may name a coqui model by path ("coqui:/…"): [registry] dir.
MODEL_ROOTS: list[str] = []


def configure(voices: dict[str, dict], model_roots: list[str] | tuple[str, ...] = ()) -> None:
    CONFIGURED.clear()
    CONFIGURED.update(voices)
    MODEL_ROOTS[:] = [os.path.realpath(r) for r in model_roots]


def check_model_folder(folder: str) -> None:
    """A job may name a coqui folder by path only inside [registry] dir: a job must not make
    a worker read any folder on the host."""
    real = os.path.realpath(folder)
    if not any(real == root or real.startswith(root + os.sep) for root in MODEL_ROOTS):
        where = ", ".join(MODEL_ROOTS) or "none configured"
        raise ValueError(f"voice: a coqui model named by path must be inside [registry] dir ({where}); "
                         "or configure it as [voices.NAME] engine = \"coqui\"")


def configured(name: str | None) -> dict | None:
    return CONFIGURED.get(name) if name else None


def catalog(language: str | None = None) -> list[dict]:
    """Every voice: configured ones first (by name), then espeak-ng's, one per language."""
    from pipeline.speech.engine import base_language
    from pipeline.speech.espeak import EspeakEngine

    out = []
    for name, cfg in sorted(CONFIGURED.items()):
        out.append({"id": name, "name": cfg.get("description") or name, "language": cfg.get("language") or "en",
                    "engine": cfg.get("engine", "espeak"), "gender": None, "configured": True,
                    "cloning": bool(cfg.get("reference_audio"))})
    for v in EspeakEngine.shared().voices():
        out.append({"id": v.id, "name": v.name, "language": v.language, "engine": v.engine,
                    "gender": v.gender, "configured": False, "cloning": False})
    if language:
        want = base_language(language)
        out = [v for v in out if base_language(v["language"]) == want or v["language"].lower() == language.lower()]
    return out


def language_counts() -> list[dict]:
    """[{code, voices}] sorted by code: how many voices speak each language."""
    counts: dict[str, int] = {}
    for v in catalog():
        counts[v["language"]] = counts.get(v["language"], 0) + 1
    return [{"code": code, "voices": n} for code, n in sorted(counts.items(), key=lambda kv: kv[0].lower())]
