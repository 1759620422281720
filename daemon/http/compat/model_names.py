"""Model names a seed client sends that are no registry model here: the names the seed
documents use (Visualizr's `stable-video-diffusion` and `animatediff`) and the families'
hub ids (`Wan-AI/Wan2.1-T2V-1.3B-Diffusers`, `Lightricks/LTX-Video`). Such a name runs a
registry model of the family it means that does the request's kind, else the kind's
default model, and the request's status says which (`adjusted`). Any other name is unknown.
"""

from __future__ import annotations

import re

from daemon.view.for_fronts import registry_models

# The words of a name (lower case, without the hub org) → the families (contract/families.py) it means.
FAMILY_WORDS = (
    (re.compile(r"wan[-_ .]?2"), ("wan2.1", "wan2.1-i2v")),
    (re.compile(r"ltx"), ("ltx-video",)),
    (re.compile(r"stable[-_ ]?video[-_ ]?diffusion|\bsvd\b"), ("stable-video-diffusion",)),
)
# Model names the seed documents use for families vidspool does not run.
DOCUMENTED = frozenset({"animatediff"})


def families_named(name: str) -> tuple[str, ...] | None:
    """The families a model name means; () for a documented name of none here; None: not such a name."""
    words = name.rsplit("/", 1)[-1].lower()
    for pattern, families in FAMILY_WORDS:
        if pattern.search(words):
            return families
    return () if words in DOCUMENTED else None


def named_model(front, name: str, kind: str) -> tuple[str | None, str] | None:
    """(the registry model a seed's model name runs, the note saying so) for a name
    families_named() knows, the model None when the kind has no default either (the note
    then says which key to set); None for any other name. `front`: a Personality."""
    families = families_named(name)
    if families is None:
        return None
    same = [m for m in registry_models(kind, front.view.kinds[kind], front.settings)
            if (family := front.family(m)) is not None and family.name in families]
    default = front.model_for(kind)
    if same:
        chosen = default if default in same else same[0]
        return chosen, f"model {name}→{chosen} (this host's {front.family(chosen).name} model)"
    what = f"no {families[0]} model here does {kind}" if families else f"{name} is not a model family vidspool runs"
    if default is None:
        return None, f"model {name}: {what}, and {front.kind_model(kind).problem()}"
    return default, f"model {name}→{default} ({what}: the kind's default model)"
