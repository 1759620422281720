"""The model a job of a kind runs when it names none: `[kinds.KIND] model`, else the only
registry model that does the kind (a diffusers folder whose family does it, a lip-sync
folder for talking-head). With none or several there is no default: such a job fails
`model_not_found` naming the key to set, and start-up and `vidspool doctor` say so before
any job (daemon/http/compat/readiness.py). Reads model_index.json files only (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.errors import JobError
from contract.kinds import KindSpec
from contract.model_folders import model_folder
from daemon.config import Settings
from daemon.registry import refresh_models, served_kinds


@dataclass(frozen=True)
class KindModel:
    kind: str
    model: str | None  # what a job of the kind that names no model runs
    configured: bool  # [kinds.KIND] model says so
    candidates: tuple[str, ...] = ()  # the registry models that do the kind (when none is configured)

    @property
    def key(self) -> str:
        return f"[kinds.{self.kind}] model"

    def problem(self) -> str | None:
        """Why a job of the kind naming no model has none, and which key to set; None: it has one."""
        if self.model is not None:
            return None
        if self.candidates:
            return (f"several registry models do {self.kind} ({', '.join(self.candidates)}): "
                    f"set {self.key} to the one to use")
        return (f"no registry model does {self.kind}: put one in [registry] dir (`vidspool models import` "
                f"or `vidspool models download`) or set {self.key}")

    def describe(self) -> str:
        if self.configured:
            return f"{self.kind} runs {self.model} ({self.key})"
        if self.model is not None:
            return f"{self.kind} runs {self.model}, the only registry model that does it (set {self.key} to choose)"
        return self.problem() or ""


def kind_model(kind_name: str, spec: KindSpec, settings: Settings, rescan: bool = False) -> KindModel:
    """The kind's default model. `rescan`: look in [registry] dir again before saying there
    is none or several (a folder copied in since the last scan)."""
    kind_cfg = settings.kinds.get(kind_name)
    if kind_cfg is not None and kind_cfg.model:
        return KindModel(kind_name, kind_cfg.model, True)
    if not (spec.needs_model or spec.model_param):
        return KindModel(kind_name, None, False)  # a model is optional there: no default is picked
    found = registry_models(kind_name, spec, settings)
    if len(found) != 1 and rescan and refresh_models(settings):
        found = registry_models(kind_name, spec, settings)
    return KindModel(kind_name, found[0] if len(found) == 1 else None, False, tuple(found))


def registry_models(kind_name: str, spec: KindSpec, settings: Settings) -> list[str]:
    """The registry models on this host that do the kind, by name."""
    out = []
    for name, config in sorted(settings.models.items()):
        try:
            folder = model_folder(name, config.model_dump(mode="json"))
        except JobError:
            continue  # not on this host (a missing folder, a hub model not in the cache)
        listed = {"name": name, "kinds": config.kinds, "folder": str(folder), "backend": config.backend,
                  "pipeline": config.pipeline}
        kinds = served_kinds(listed)
        if kinds and spec.serves(kinds):
            out.append(name)
    return out
