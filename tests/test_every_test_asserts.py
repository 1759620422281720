"""Every test asserts something (read with ast from tests/test_*.py).

A test is a function named `test*` (module level or in a class) of a tests/test_*.py module.
It asserts when its body, nested blocks and functions included, holds at least one of:

1. an `assert` statement whose condition is not a constant (`assert True` does not count);
2. `pytest.raises(…)`, `pytest.warns(…)` or `pytest.fail(…)`, or `raise AssertionError(…)`;
3. a call with `check=True`, or `subprocess.check_call`/`check_output`: the exit status of a
   child process is asserted (the child runs the test's own `assert`);
4. a call, by its plain name, of an asserting helper: a module-level function of the same
   module, or of a tests/ module it imports the name from (`from tests.support import
   wait_status`), whose body holds 1, 2, 3 or 4.

Methods called on an object (`daemon.wait_ready()`) do not count: a test that asserts only
through one names the helper instead."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO

TESTS = REPO / "tests"
PYTEST_ASSERTS = {"raises", "warns", "fail"}


def _asserts_itself(node: ast.AST) -> bool:
    """Rules 1–3 within NODE."""
    for n in ast.walk(node):
        if isinstance(n, ast.Assert) and not isinstance(n.test, ast.Constant):
            return True
        if isinstance(n, ast.Raise) and n.exc is not None:
            raised = n.exc.func if isinstance(n.exc, ast.Call) else n.exc
            if isinstance(raised, ast.Name) and raised.id == "AssertionError":
                return True
        if isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "pytest" and f.attr in PYTEST_ASSERTS:
                return True
            if isinstance(f, ast.Attribute) and f.attr in ("check_call", "check_output"):
                return True
            if any(k.arg == "check" and isinstance(k.value, ast.Constant) and k.value.value is True for k in n.keywords):
                return True
    return False


def _called_names(node: ast.AST) -> set[str]:
    return {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


class Helpers:
    """The module-level functions of tests/*.py, and which of them assert (rule 4, to a fixed point)."""

    def __init__(self):
        self.trees = {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(TESTS.glob("*.py"))}
        # (module, name) → the function; names a module imports from tests.X resolve there.
        self.functions = {(mod, n.name): n for mod, tree in self.trees.items() for n in tree.body
                          if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        self.imported = {mod: {a.asname or a.name: (node.module.removeprefix("tests."), a.name)
                               for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                               and (node.module or "").startswith("tests.") for a in node.names}
                         for mod, tree in self.trees.items()}
        self.asserting = {key for key, fn in self.functions.items() if _asserts_itself(fn)}
        while True:
            more = {key for key, fn in self.functions.items()
                    if key not in self.asserting and self._calls_asserting(key[0], fn)}
            if not more:
                break
            self.asserting |= more

    def resolve(self, module: str, name: str) -> tuple[str, str]:
        return self.imported[module].get(name, (module, name))

    def _calls_asserting(self, module: str, fn: ast.AST) -> bool:
        return any(self.resolve(module, name) in self.asserting for name in _called_names(fn))

    def asserts(self, module: str, fn: ast.AST) -> bool:
        return _asserts_itself(fn) or self._calls_asserting(module, fn)


def collected_tests(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test"):
                    yield f"{node.name}.{item.name}", item


def test_every_test_function_asserts_something():
    helpers = Helpers()
    silent = [f"tests/{module}.py::{name}" for module, tree in helpers.trees.items() if module.startswith("test_")
              for name, fn in collected_tests(tree) if not helpers.asserts(module, fn)]
    assert not silent, f"these tests assert nothing (see this module's docstring for what counts): {silent}"
    assert len([1 for module, tree in helpers.trees.items() if module.startswith("test_") for _ in collected_tests(tree)]) > 300


def test_the_rule_tells_asserting_from_silent_code():
    helpers = Helpers()
    for source, expected in [
        ("def test_x():\n    assert f() == 1\n", True),
        ("def test_x():\n    assert True\n", False),
        ("def test_x():\n    f()\n", False),
        ("def test_x():\n    with pytest.raises(ValueError):\n        f()\n", True),
        ("def test_x():\n    subprocess.run(['x'], check=True)\n", True),
        ("def test_x():\n    subprocess.run(['x'])\n", False),
        ("def test_x():\n    wait_status(root, 'j')\n", True),  # tests/support.py's, imported by test_recovery
        ("def test_x():\n    d.wait_status(root, 'j')\n", False),  # a method: not a named helper
    ]:
        fn = ast.parse(source).body[0]
        assert helpers.asserts("test_recovery", fn) is expected, source
