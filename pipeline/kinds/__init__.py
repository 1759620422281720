"""The registry of job kinds: built-in modules plus the `vidspool.kinds` entry-point group.

A third-party package adds a kind with, in its pyproject.toml:

    [project.entry-points."vidspool.kinds"]
    my-kind = "my_package.my_kind:KIND"
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from contract.kinds import KindSpec

BUILTIN_MODULES = ("pipeline.kinds.slideshow", "pipeline.kinds.video_generation", "pipeline.kinds.tts",
                   "pipeline.kinds.narrated_video", "pipeline.kinds.talking_head")
ENTRY_POINT_GROUP = "vidspool.kinds"


def load_kinds() -> dict[str, KindSpec]:
    """All kinds, by name. A broken plugin is reported, not fatal to the others."""
    kinds: dict[str, KindSpec] = {}
    for module_name in BUILTIN_MODULES:
        module = importlib.import_module(module_name)
        for spec in getattr(module, "KINDS", None) or (module.KIND,):  # a module may define several
            kinds[spec.name] = spec
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        spec = ep.load()
        if not isinstance(spec, KindSpec):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not a KindSpec")
        kinds[spec.name] = spec
    return kinds
