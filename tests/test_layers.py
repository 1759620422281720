"""The layers import one way (docs/design.md, "Layers"): `contract/` imports neither side;
`daemon/` imports the contract, `pipeline.kinds` (to validate jobs) and the worker's entry
point, nothing else of `pipeline/`; `pipeline/` never imports `daemon/`. Read from the
source with ast, every import including those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO

DAEMON_MAY_IMPORT = ("contract", "pipeline.kinds", "pipeline.worker")


def imports_of(folder: str) -> dict[str, set[str]]:
    """file → every module it imports (absolute names; relative imports resolved)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = path.relative_to(REPO).with_suffix("").parts[: -node.level]
                    base = ".".join((*package, base) if base else package)
                names.add(base)
                names.update(f"{base}.{a.name}" for a in node.names)  # `from pipeline import worker`
        found[str(path.relative_to(REPO))] = names
    return found


def first_party(name: str) -> bool:
    return name.split(".")[0] in ("daemon", "pipeline", "contract")


def allowed_for_daemon(name: str) -> bool:
    if not first_party(name) or name.split(".")[0] in ("daemon", "contract"):
        return True
    if name == "pipeline":  # `from pipeline import worker` names the module itself too
        return True
    return any(name == a or name.startswith(a + ".") for a in DAEMON_MAY_IMPORT)


def test_daemon_imports_only_the_contract_the_kinds_and_the_worker_entry_point():
    bad = {f: sorted(n for n in names if not allowed_for_daemon(n)) for f, names in imports_of("daemon").items()}
    bad = {f: n for f, n in bad.items() if n}
    assert not bad, bad


def test_the_contract_imports_neither_side_nor_heavy_libraries():
    heavy = ("torch", "diffusers", "transformers", "TTS", "aiohttp", "numpy", "cv2", "av")
    for path, names in imports_of("contract").items():
        wrong = sorted(n for n in names if n.split(".")[0] in ("daemon", "pipeline", *heavy))
        assert not wrong, (path, wrong)


def test_the_pipeline_never_imports_the_daemon():
    for path, names in imports_of("pipeline").items():
        assert not [n for n in names if n.split(".")[0] == "daemon"], path


def test_the_worker_channel_is_typed_on_both_ends():
    """No dict with an "op" key crosses the pipe any more: both ends use contract.messages."""
    for path in ("daemon/arbiter.py", "daemon/workers.py", "pipeline/worker.py", "pipeline/context.py"):
        source = (REPO / path).read_text()
        assert '"op"' not in source, path
        assert "contract" in source and "messages" in source, path
