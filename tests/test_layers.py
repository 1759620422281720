"""The layers import one way (docs/design.md, "Layers"): `contract/` imports neither side;
`daemon/` imports the contract, `pipeline.kinds` (to validate jobs) and the worker's entry
point, nothing else of `pipeline/`; `pipeline/` never imports `daemon/`. Read from the
source with ast, every import including those inside functions; and so is the worker
channel: both ends send and handle contract/messages.py's classes, and nothing else."""

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


# -- the worker channel -------------------------------------------------------------------
# A message whose arrival is all it says: the daemon notes every message's arrival
# (WorkerHandle.heard), so Heartbeat needs no handler of its own.
HEARD_ONLY = {"Heartbeat"}


def message_types() -> tuple[set[str], dict[str, set[str]]]:
    """contract/messages.py's message classes, and its unions (ToWorker = RunJob | …)."""
    tree = ast.parse((REPO / "contract" / "messages.py").read_text())
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    unions = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.BinOp):
            unions[node.targets[0].id] = {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
    return classes, unions


class ChannelEnd:
    """One side's use of the channel, read with ast from every module of FOLDER that imports
    contract.messages: the messages it builds and sends, what else it sends, and the message
    classes its isinstance checks handle."""

    def __init__(self, folder: str):
        self.classes, self.unions = message_types()
        self.built: set[str] = set()  # message classes constructed as a send's argument
        self.untyped: list[str] = []  # sends whose argument is not a message
        self.handled: set[str] = set()
        trees = {}
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            names = self._message_names(tree)
            if names:
                trees[path] = (tree, names)
        # Functions that build a message for a send (daemon.jobs.policy.run_message → RunJob).
        self.factories = {node.name: self._types(node.returns, names) for tree, names in trees.values()
                          for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and self._types(node.returns, names)}
        for path, (tree, names) in trees.items():
            self._read(path.relative_to(REPO), tree, names)

    @staticmethod
    def _message_names(tree) -> dict[str, str]:
        """local name → what it names: "module" for contract.messages, else a class or union."""
        names = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "contract":
                names.update({a.asname or a.name: "module" for a in node.names if a.name == "messages"})
            elif isinstance(node, ast.ImportFrom) and node.module == "contract.messages":
                names.update({a.asname or a.name: a.name for a in node.names})
            elif isinstance(node, ast.Import):
                names.update({a.asname: "module" for a in node.names if a.name == "contract.messages" and a.asname})
        return names

    def _types(self, node, names) -> set[str]:
        """The message classes an expression or annotation names (a union gives its members)."""
        if node is None:
            return set()
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and names.get(node.value.id) == "module":
            name = node.attr
        elif isinstance(node, ast.Name) and names.get(node.id, "module") != "module":
            name = names[node.id]
        elif isinstance(node, ast.Tuple):
            return set().union(*(self._types(e, names) for e in node.elts))
        else:
            return set()
        return self.unions.get(name, {name} & self.classes)

    def _read(self, path, tree, names) -> None:
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            typed_params = {a.arg for a in func.args.args + func.args.kwonlyargs if self._types(a.annotation, names)}
            for node in ast.walk(func):
                if not isinstance(node, ast.Call):
                    continue
                if isinstance(node.func, ast.Name) and node.func.id == "isinstance" and len(node.args) == 2:
                    self.handled |= self._types(node.args[1], names)
                if isinstance(node.func, ast.Attribute) and node.func.attr in ("send", "_send") and len(node.args) == 1:
                    arg = node.args[0]
                    if isinstance(arg, ast.Call):
                        built = self._types(arg.func, names) or (
                            self.factories.get(arg.func.id, set()) if isinstance(arg.func, ast.Name) else set())
                        self.built |= built
                        if built:
                            continue
                    elif isinstance(arg, ast.Name) and arg.id in typed_params:
                        continue  # passes on a parameter typed as a message
                    self.untyped.append(f"{path}:{node.lineno}: {ast.unparse(node)}")


def test_the_worker_channel_is_typed_on_both_ends():
    """Everything sent over the worker pipe is one of contract/messages.py's classes, built
    where it is sent (or passed on typed as one); the daemon sends exactly the ToWorker
    messages and the worker handles each, the worker sends exactly the FromWorker messages
    and the daemon handles each (isinstance), Heartbeat by its arrival."""
    daemon, worker = ChannelEnd("daemon"), ChannelEnd("pipeline")
    unions = daemon.unions
    assert not daemon.untyped and not worker.untyped, daemon.untyped + worker.untyped
    assert daemon.built == unions["ToWorker"], daemon.built ^ unions["ToWorker"]
    assert worker.built == unions["FromWorker"], worker.built ^ unions["FromWorker"]
    assert unions["ToWorker"] <= worker.handled, unions["ToWorker"] - worker.handled
    assert unions["FromWorker"] - HEARD_ONLY <= daemon.handled, unions["FromWorker"] - HEARD_ONLY - daemon.handled
