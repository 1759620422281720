"""Host paths as clients see them: status documents and HTTP answers name a file relative to
the folder it is known by — `spool/…`, `registry/…` ([registry] dir), `hub/…` (the Hugging
Face hub cache), `deliver_to/…` (a preset's), `vidspool/…` (this installation), a
configured model folder, voice, default face or character image by its own name; a path
field elsewhere by its bare name. Anyone who can read a status or reach a front learns
nothing of the host's layout; the operator's CLI and logs keep the absolute paths.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

from contract.model_folders import hub_cache_dir
from daemon.config import Settings

INSTALL_DIR = Path(__file__).resolve().parents[2]
# A root matches only as a whole path ("/srv/spool" not in "/srv/spool2" nor in a URL's path).
BEFORE_ROOT = r"(?<![\w.:/~-])"
AFTER_ROOT = r"(?![^/\s'\"`),;:\]}>])"


class HostPaths:
    """Shortens the host paths the settings name, in texts and in path fields."""

    def __init__(self, settings: Callable[[], Settings]):
        self.settings = settings
        self._built: tuple[Settings, dict[str, str], re.Pattern | None] | None = None  # per settings (reload)

    def _roots(self, settings: Settings) -> Iterator[tuple[Path, str, bool]]:
        """(folder, shown name, whether to match its resolved form too). Only model folders
        are resolved (the registry lists them so, and the daemon reads them anyway): the spool
        and a deliver_to may be a share, and a stat of a hung share must never stop a write."""
        yield settings.spool.root, "spool", False
        yield Path(settings.registry.dir), "registry", True
        yield hub_cache_dir(), "hub", False
        yield INSTALL_DIR, "vidspool", False
        for preset in settings.presets.values():
            if preset.deliver_to is not None:
                yield preset.deliver_to, "deliver_to", False
        for name in settings.configured_models:
            model = settings.models.get(name)
            if model is not None and model.path is not None:
                yield model.path, Path(model.path).name, True
        for front in settings.compat.model_dump().values():
            if isinstance(front, dict) and front.get("default_face"):
                yield Path(front["default_face"]), Path(front["default_face"]).name, False
        for character in settings.characters.values():
            yield character.image, character.image.name, False
        for voice in settings.voices.values():
            for path in (voice.model, voice.reference_audio):
                if path is not None:
                    yield path, Path(path).name, voice.model == path

    def _matcher(self) -> tuple[dict[str, str], re.Pattern | None]:
        settings = self.settings()
        if self._built is None or self._built[0] is not settings:
            shown: dict[str, str] = {}
            for root, name, resolve in self._roots(settings):
                root = Path(root).expanduser().absolute()
                for form in (root, root.resolve()) if resolve else (root,):
                    # never "/" itself; a file inside a folder already known shows as in it
                    if len(form.parts) > 1 and not any(str(form).startswith(f"{known}/") for known in shown):
                        shown.setdefault(str(form), name)
            longest_first = sorted(shown, key=len, reverse=True)
            pattern = re.compile("|".join(BEFORE_ROOT + re.escape(r) + AFTER_ROOT for r in longest_first)) if shown else None
            self._built = (settings, shown, pattern)
        return self._built[1], self._built[2]

    def text(self, text: str) -> str:
        """`text` with every host path the settings name shortened to its shown form."""
        shown, pattern = self._matcher()
        return pattern.sub(lambda m: shown[m.group(0)], text) if pattern and "/" in text else text

    def path(self, path: str | Path | None) -> str | None:
        """A path field as a client sees it: relative to a known folder, else its name."""
        if path is None:
            return None
        text = self.text(str(path))
        return Path(path).name if text.startswith("/") else text

    def status(self, doc: dict) -> dict:
        """A status document's texts (message, error) and its result's strings (delivered
        paths, a voice's model folder …), shortened in place."""
        if isinstance(doc.get("message"), str):
            doc["message"] = self.text(doc["message"])
        error = doc.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            error["message"] = self.text(error["message"])
        if isinstance(doc.get("result"), dict):
            doc["result"] = self._strings(doc["result"])
        return doc

    def _strings(self, value):
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self._strings(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._strings(v) for v in value]
        return value
