"""The layers import one way (docs/design.md, "Layers"): `contract/` imports neither side;
`daemon/` imports the contract, `pipeline.kinds` (to validate jobs) and the worker's entry
point, nothing else of `pipeline/`; `pipeline/` never imports `daemon/`. Read from the
source with ast, every import including those inside functions; and so is the worker
channel: both ends send and handle contract/messages.py's classes, and nothing else."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.support import REPO

DAEMON_MAY_IMPORT = ("contract", "pipeline.kinds", "pipeline.worker")


def import_statements(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(module, names) for every import of a file, those inside functions too: `import a.b`
    gives ("a.b", []), `from a import b, c` ("a", ["b", "c"]); relative imports resolved."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = path.relative_to(REPO).with_suffix("").parts[: -node.level]
                base = ".".join((*package, base) if base else package)
            yield base, [a.name for a in node.names]


def imports_of(folder: str) -> dict[str, set[str]]:
    """file → every module it imports (absolute names; relative imports resolved)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        names = set()
        for base, imported in import_statements(path):
            names.add(base)
            names.update(f"{base}.{name}" for name in imported)  # `from pipeline import worker`
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


# -- daemon/'s packages (docs/design.md, "Packages") -----------------------------------------
# A node of daemon/ is a package (daemon/spool/, daemon/http/ with its sub-packages, …) or a
# module at the root (daemon/config.py, daemon/arbiter.py, …). `daemon` itself is the
# package's version, which anyone may read.
ANYONE = {"daemon"}
# package → the only nodes of daemon/ its modules may import (the contract always).
MAY_IMPORT_ONLY = {
    "http": {"http", "view", "config"},  # the fronts: everything else through the read model
    "spool": {"spool", "config"},
    "webhooks": {"webhooks", "spool", "config", "logs"},
    "delivery": {"delivery", "spool", "config", "logs"},
    "outbox": {"outbox", "spool", "config", "logs"},
}
# package → nodes it never imports.
NEVER_IMPORTS = {
    "jobs": {"http", "view", "delivery", "outbox"},
    "view": {"arbiter", "jobs"},
}


def daemon_modules() -> dict[str, set[str]]:
    """daemon module (dotted) → the daemon modules it imports, those inside functions too:
    `from P import N` imports module P.N where that is one, else P."""
    paths = {}
    for path in sorted((REPO / "daemon").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in paths.items():
        found = set()
        for base, imported in import_statements(path):
            found.update([f"{base}.{n}" if f"{base}.{n}" in paths else base for n in imported] or [base])
        graph[name] = {n for n in found if n in paths} - {name}
    return graph


def node_of(module: str) -> str:
    """daemon.http.compat.front → http; daemon.config → config; daemon → daemon."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "daemon"


def package_edges() -> dict[str, dict[str, set[str]]]:
    """node → node it imports → the modules that import it."""
    edges: dict[str, dict[str, set[str]]] = {}
    for module, imported in daemon_modules().items():
        for other in imported:
            if node_of(other) != node_of(module):
                edges.setdefault(node_of(module), {}).setdefault(node_of(other), set()).add(module)
    return edges


def test_each_package_imports_only_what_its_rule_allows():
    wrong = []
    for node, targets in package_edges().items():
        for target, by in targets.items():
            if target in ANYONE:
                continue
            if (node in MAY_IMPORT_ONLY and target not in MAY_IMPORT_ONLY[node]) or target in NEVER_IMPORTS.get(node, ()):
                wrong.append(f"{node} → {target} ({', '.join(sorted(by))})")
    assert not wrong, "\n".join(wrong)


def test_the_spool_package_knows_no_http_path():
    paths = []
    for path in sorted((REPO / "daemon" / "spool").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "/api/" in node.value:
                paths.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert not paths, paths


def test_the_fronts_reach_the_daemon_only_through_the_read_model():
    """No front reads the read model's `daemon` (the Supervisor behind it), nor anything
    through getattr with a constant name: what a front needs the read model says."""
    reached = []
    for path in sorted((REPO / "daemon" / "http").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "daemon":
                reached.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                  and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value == "daemon"):
                reached.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert not reached, reached


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# config reads a bucket spool's location (daemon/bucket/location.py, which imports nothing)
# while the bucket store reads its settings from config: a circle between the two nodes,
# though none between modules. daemon/bucket/ is being built (issue 28); its location
# parsing belongs beside config's, and then this goes.
KNOWN_CIRCLES = [["bucket", "config"]]


def test_no_import_circle_between_packages():
    graph = {node: set(targets) for node, targets in package_edges().items()}
    assert [c for c in cycles(graph) if c not in KNOWN_CIRCLES] == [], cycles(graph)


def test_no_import_circle_between_modules():
    """Inside a package as between root modules (config ↔ registry was one)."""
    assert not cycles(daemon_modules()), cycles(daemon_modules())
