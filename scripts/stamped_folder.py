"""Build a folder once: in a temporary sibling, stamped, then renamed into place.

Shared by the tiny model scripts (scripts/tiny_*.py), with `stamp_text` for their stamps. A folder whose stamp file
holds the same text is current and returned as is; an outdated one is replaced; of
concurrent builders, the one that loses the rename keeps the winner's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path


def stamp_text(builder: str | Path, packages: Iterable[str] = (), sources: Mapping[str, Path] | None = None,
               **options) -> str:
    """A stamp of what a built folder depends on: the builder script's source (and other
    `sources`, by key) hashed, the build options, and the installed `packages`' versions."""
    from importlib.metadata import version

    def digest(path) -> str:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]

    stamp = {"builder": digest(builder), **{k: digest(p) for k, p in (sources or {}).items()}, **options,
             **{p: version(p) for p in packages}}
    return json.dumps(stamp, sort_keys=True) + "\n"


def is_current(folder: Path, stamp_name: str, stamp: str) -> bool:
    try:
        return (folder / stamp_name).read_text() == stamp
    except OSError:
        return False


def build_stamped(final: Path, stamp_name: str, stamp: str, make: Callable[[Path], None]) -> Path:
    """`final`, made by `make(tmp_folder)` unless a current one is there already."""
    if is_current(final, stamp_name, stamp):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()  # unlike mkdtemp, honours the umask (mkdtemp makes it 0700)
    try:
        make(tmp)
        (tmp / stamp_name).write_text(stamp)
        _move_into_place(tmp, final, stamp_name, stamp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _move_into_place(tmp: Path, final: Path, stamp_name: str, stamp: str) -> None:
    """Rename tmp to final, replacing an outdated final; keep a current one built meanwhile."""
    old = None
    if final.exists() and not is_current(final, stamp_name, stamp):
        old = final.with_name(f"{tmp.name}.old")
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        if not is_current(final, stamp_name, stamp):  # not a lost race: a real error
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
