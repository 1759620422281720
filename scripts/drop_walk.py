"""Walks one drop from the inbox to its queued status through a real daemon's code (the
Arbiter's intake, in this process) and counts how it moves between daemon/'s modules
(docs/design.md, "A drop's way"): the modules its calls enter, in order, a *stay* each run
of calls into one module, a *return* a stay in a module the walk had already left. Only
the scan that stages and accepts the drop is traced, without what a status write calls
back (the index, deliveries, webhooks) and the lease beat. Counted three ways: by module,
by package (daemon/spool/, daemon/jobs/, … ; a root module is its own), and by module
leaving out leaf helpers (modules that import no other daemon module).

    .venv/bin/python scripts/drop_walk.py [--path]    # --path: print each stay too
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import structlog  # noqa: E402

from daemon.arbiter import Arbiter  # noqa: E402
from daemon.config import load_settings  # noqa: E402

DAEMON = str(REPO / "daemon") + "/"


# Listeners a status write calls (the index, deliveries, webhooks) and the lease beat the
# intake keeps up: not the drop's way.
ASIDE = {"_status_changed", "_beat_if_due"}


def module_of(frame) -> str | None:
    """The daemon module a frame runs in (daemon.spool.transitions), None outside daemon/."""
    path = frame.f_code.co_filename
    if path.startswith(DAEMON):
        return "daemon." + path[len(DAEMON):-3].replace("/", ".").removesuffix(".__init__")
    return None


def aside(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_name in ASIDE and frame.f_code.co_filename.startswith(DAEMON):
            return True
        frame = frame.f_back
    return False


def walk(show_path: bool) -> tuple[tuple[int, int], ...]:
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory()) if "--log" not in sys.argv else None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "spool"
        settings = load_settings(spool={"root": str(root), "host": "walk", "stable_seconds": 0.1})
        arbiter = Arbiter(settings)
        arbiter.spool.create(list(settings.presets))
        arbiter.spool.ensure_identity()
        (arbiter.spool.inbox / "walk.json").write_text(json.dumps({"kind": "slideshow", "params": {"slides": ["Hello", "World"]}, "labels": {"walk": "1"}}))
        queued: list = []
        arbiter.intake.on_queued = queued.append  # no dispatch: the walk ends at the queued status
        stays: list[str] = []

        def profile(frame, event, arg):
            if event != "call":
                return
            module = module_of(frame)
            if module is not None and (not stays or stays[-1] != module) and not aside(frame):
                stays.append(module)

        now = time.monotonic()
        for turn in range(20):  # the scanner sees a drop complete after a few unchanged looks
            stays.clear()
            sys.setprofile(profile)
            try:
                arbiter.intake.take(now + turn * 10)
            finally:
                sys.setprofile(None)
            if queued:
                break
        else:
            raise SystemExit("the drop was never queued")
        status = json.loads(arbiter.spool.status_path(queued[0].job_id).read_text())
        assert status["state"] == "queued", status
    if show_path:
        print(" → ".join(m.removeprefix("daemon.") for m in stays))
    return counted(stays), counted(collapsed(stays, lambda m: m.split(".")[1])), counted(collapsed(
        [m for m in stays if not leaf(m)], lambda m: m))


def collapsed(stays: list[str], name) -> list[str]:
    """The walk with each stay renamed by name() (its package), runs of one name merged."""
    named = [name(m) for m in stays]
    return [n for i, n in enumerate(named) if i == 0 or named[i - 1] != n]


def leaf(module: str) -> bool:
    """A helper module that imports no other daemon module (fsops, crashpoints, lines, …):
    every step calls it, so a walk without them shows the steps themselves."""
    path = REPO / (module.replace(".", "/") + ".py")
    return "from daemon." not in path.read_text() and "import daemon." not in path.read_text()


def counted(stays: list[str]) -> tuple[int, int]:
    """(stays, returns): a return is a stay in a module left before."""
    left, returns = set(), 0
    for before, current in zip(stays, stays[1:]):
        left.add(before)
        returns += current in left
    return len(stays), returns


if __name__ == "__main__":
    modules, packages, steps = walk("--path" in sys.argv)
    print(f"modules: {modules[0]} stays, {modules[1]} returns; packages: {packages[0]} stays, {packages[1]} returns; "
          f"modules but leaf helpers: {steps[0]} stays, {steps[1]} returns")
