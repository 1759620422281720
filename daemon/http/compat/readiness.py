"""What each configured personality gets from this host with no more than `listen`, said at
start-up (the log) and by `vidspool doctor`, before any request: the model each of its kinds
runs (daemon/kind_models.py) and, for the talking-head seeds, the lip sync and the face a
request without one gets (daemon/http/compat/faces.py). Where the host lacks one, the message
names the key to set.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass

from contract.kinds import KindSpec
from daemon.http.compat import faces
from daemon.config import Settings
from daemon.view.for_fronts import kind_model

TALKING_HEAD = "talking-head"


@dataclass(frozen=True)
class Finding:
    personality: str
    ok: bool  # False: some of its requests are refused until the key named is set
    message: str


def personality_kinds(name: str) -> tuple[str, ...]:
    return importlib.import_module(f"daemon.http.compat.{name}").PERSONALITY.kinds


def findings(settings: Settings, kinds: Mapping[str, KindSpec]) -> list[Finding]:
    out = []
    for name, config in settings.compat.enabled().items():
        preset = settings.presets.get(config.preset) if config.preset else None
        for kind in personality_kinds(name):
            spec = kinds.get(kind)
            if spec is None or not (spec.needs_model or spec.model_param):
                continue  # e.g. narrated-video: runs without a model
            if preset is not None and preset.model:
                out.append(Finding(name, True, f"{kind} runs {preset.model} ([presets.{config.preset}] model)"))
                continue
            choice = kind_model(kind, spec, settings)
            if kind == TALKING_HEAD and choice.model is None:
                # Still served: the face as it is with the speech.
                out.append(Finding(name, not choice.candidates, f"{choice.problem()}; until then lip sync is none"))
            else:
                out.append(Finding(name, choice.model is not None, choice.describe()))
        if TALKING_HEAD in personality_kinds(name):
            out.append(Finding(name, *faces.describe(config, name)))
    return out
