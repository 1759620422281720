"""The face a talking-head personality shows when a request brings none: `[compat.NAME]
default_face`, else the portrait that ships with scikit-image (`skimage/data/astronaut.png`:
the astronaut Eileen Collins, a NASA photograph in the public domain), read from the
installed package at run time (found without importing it); None where neither is.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from daemon.config import CompatConfig

PACKAGE, PACKAGED_FILE = "skimage", Path("data") / "astronaut.png"
PACKAGED_WORDS = "scikit-image's astronaut portrait (NASA, public domain)"


def packaged_face() -> Path | None:
    """scikit-image's astronaut portrait, where the package is installed."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / PACKAGED_FILE
        if path.is_file():
            return path
    return None


def default_face(config: CompatConfig) -> Path | None:
    """The configured face, else the packaged one; None: the host has none."""
    return config.default_face or packaged_face()


def describe(config: CompatConfig, name: str) -> tuple[bool, str]:
    """(usable, what a request without a face gets) for start-up and doctor."""
    if config.default_face is not None:
        if config.default_face.is_file():
            return True, f"requests without a face use {config.default_face} ([compat.{name}] default_face)"
        return False, f"[compat.{name}] default_face {config.default_face} is not a file"
    if packaged_face() is not None:
        return True, f"requests without a face use {PACKAGED_WORDS} (set [compat.{name}] default_face for another)"
    return False, (f"requests without a face are refused: set [compat.{name}] default_face (a face photo), "
                   "or install scikit-image (requirements/6-talking-heads.txt), whose astronaut portrait is the default")
