"""Named crash points: every step of every spool transition, so that tests can kill the
daemon exactly there (design: docs/crash-points.md).

`VIDSPOOL_TEST_CRASH_AT=NAME[:N]` (tests only; `vidspool doctor` refuses it) makes the daemon
SIGKILL itself at the Nth hit of point NAME (default the first). Without it every hit is a
dictionary lookup and nothing else. POINTS is the registry: the transitions call `hit` with
these names only, and tests/test_crash_points.py walks every one of them.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "VIDSPOOL_TEST_CRASH_AT"

POINTS: dict[str, str] = {
    # stage: inbox → active/<me>/.intake.<t>/payload
    "stage.intake_made": "the intake folder and its .drop.json exist; the drop is still in the inbox",
    "stage.claimed": "the drop's job file (or folder) is renamed into the intake folder",
    "stage.media_moved": "one media file a NAME.json names is moved in beside it",
    # accept: payload → queue/<name> (or, invalid, straight to publish)
    "accept.id_reserved": "outbox/<id>/ is made and the id remembered in the intake folder",
    "accept.job_written": "the validated .job.json is written into the payload",
    "accept.status_queued": "status.json says queued; the payload is still in the intake folder",
    "accept.queued": "the payload is renamed into queue/; the empty intake folder is left",
    "accept.invalid_final": "an invalid job's .final.json (failed) is written into its payload",
    "accept.invalid_published": "an invalid job's payload is renamed to .publish-<id>",
    # claim and start: queue/<name> → active/<me>/<id>
    "claim.moved": "queue/<name> is renamed to active/<me>/<id>; no attempt started",
    "attempt.marked": ".attempt-N is created; status.json still says queued",
    "attempt.running": "status.json says running; the worker has not been sent the job",
    # commit: active/<me>/<id> → active/<me>/.publish-<id>
    "commit.final_written": ".final.json holds the end state; the folder is still active/<me>/<id>",
    "commit.renamed": "the folder is renamed to .publish-<id>",
    # finish publish: .publish-<id> → outbox/<id>/
    "publish.results_moved": "the results are in outbox/<id>/; the user's files are not yet in input/",
    "publish.inputs_moved": "the user's files are in outbox/<id>/input/; the status is not yet final",
    "publish.status_written": "the final status is written; .publish-<id> (with .final.json) remains",
    "publish.retired": ".publish-<id> is renamed to .retired-<id>.<t>; nothing is removed yet",
    "publish.removing": "part of the retired folder is removed (.final.json first)",
    # requeue: active/<any>/<id> → queue/<name>
    "requeue.cleared": "the interrupted attempt's results (and at shutdown its attempt) are removed",
    "requeue.moved": "the folder is back in queue/; status.json still says running",
    # takeover of a dead host: active/<dead>/<entry> → active/<me>/<entry>
    "takeover.moved": "a dead host's entry is renamed into active/<me>/; not yet finished",
    # cancel
    "cancel.marked": "outbox/<id>/cancel.requested exists; nothing else is done",
    "cancel.claimed": "a queued job being canceled is claimed into active/<me>/<id>",
    "cancel.file_handled": "an ID.cancel file has been acted on; it is still in the inbox",
    # drain (SIGTERM)
    "drain.killed": "a job still running at the drain deadline has its worker killed; not yet requeued",
}


class CrashPoints:
    """Which point kills the daemon, and how many hits it has had."""

    def __init__(self, spec: str | None = None):
        self.target: str | None = None
        self.at = 1
        self.hits = 0
        if spec:
            name, _, n = spec.partition(":")
            if name not in POINTS:
                raise ValueError(f"{ENV}: unknown crash point {name!r} (known: {', '.join(POINTS)})")
            if n and not (n.isdigit() and int(n) >= 1):
                raise ValueError(f"{ENV}: {spec!r}: the hit count after ':' must be a whole number ≥ 1")
            self.target, self.at = name, int(n or 1)

    @classmethod
    def from_env(cls) -> "CrashPoints":
        return cls(os.environ.get(ENV))

    @property
    def armed(self) -> bool:
        return self.target is not None

    def hit(self, name: str) -> None:
        if name not in POINTS:  # a programming error: every point is registered and tested
            raise KeyError(f"crash point {name!r} is not in daemon.spool.crashpoints.POINTS")
        if name != self.target:
            return
        self.hits += 1
        if self.hits == self.at:
            sys.stderr.write(f'{{"event": "test.crash_point", "point": "{name}", "hit": {self.hits}}}\n')
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)


NEVER = CrashPoints()
