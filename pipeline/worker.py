"""The worker process: owns one device, runs one job at a time.

Talks to the daemon over one multiprocessing Connection:
  in:  {"op": "run", ...job}, {"op": "cancel", "job_id"}, {"op": "stop"}
  out: {"op": "ready"}, {"op": "progress"|"log", "job_id", ...},
       {"op": "done", "job_id", "result"}, {"op": "failed", "job_id", "error"},
       {"op": "canceled", "job_id"}
"""

from __future__ import annotations

import ctypes
import hashlib
import mimetypes
import os
import queue
import shutil
import signal
import threading
import time
import traceback
from pathlib import Path

PR_SET_PDEATHSIG = 1


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def media_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _die_with_parent() -> None:
    # A worker must not outlive a SIGKILLed daemon: the restarted daemon requeues its job.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def main(conn, device: str, env: dict[str, str]) -> None:
    _die_with_parent()
    os.environ.update(env)  # CUDA_VISIBLE_DEVICES before anything imports torch
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    if os.getppid() == 1:
        return
    Worker(conn, device).serve()


class Worker:
    def __init__(self, conn, device: str):
        from pipeline.kinds import load_kinds

        self.conn = conn
        self.device = device
        self.kinds = load_kinds()
        self._send_lock = threading.Lock()
        self._jobs: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._current: str | None = None
        self._current_lock = threading.Lock()

    def send(self, msg: dict) -> None:
        with self._send_lock:
            self.conn.send(msg)

    def serve(self) -> None:
        threading.Thread(target=self._read_commands, name="commands", daemon=True).start()
        self.send({"op": "ready", "pid": os.getpid(), "device": self.device, "kinds": sorted(self.kinds)})
        while True:
            msg = self._jobs.get()
            if msg is None:
                return
            self._run(msg)

    def _read_commands(self) -> None:
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the daemon is gone
            op = msg.get("op")
            if op == "run":
                self._jobs.put(msg)
            elif op == "cancel":
                with self._current_lock:
                    if msg.get("job_id") == self._current:
                        self._cancel.set()
            elif op == "stop":
                self._jobs.put(None)
                return

    def _run(self, msg: dict) -> None:
        from pipeline.context import JobContext
        from pipeline.errors import ErrorCode, JobCanceled, JobError

        job_id = msg["job_id"]
        with self._current_lock:
            self._current = job_id
            self._cancel.clear()
        started = time.monotonic()
        # Results are made in local scratch and delivered into the spool at the end, so a
        # network spool that drops out mid-job costs a wait, not the job.
        scratch = Path(msg["scratch_dir"])
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        ctx = JobContext(
            job_id=job_id,
            job=msg["job"],
            inputs={k: [Path(p) for p in v] for k, v in msg["inputs"].items()},
            results_dir=scratch,
            device="cpu" if self.device.startswith("cpu") else "cuda:0",
            send=self.send,
            cancel_event=self._cancel,
            limits=msg.get("limits"),
            host=msg.get("host"),
            attempt=msg.get("attempt", 1),
        )
        try:
            kind = self.kinds.get(msg["job"]["kind"])
            if kind is None:
                raise JobError(ErrorCode.INVALID_JOB, f"kind {msg['job']['kind']!r} is not installed on this worker")
            params = kind.params.model_validate(msg["job"]["params"])
            ctx.check_canceled()
            kind.run(ctx, params)
            ctx.check_canceled()
            result = self._result(ctx, time.monotonic() - started)
            self._deliver(ctx, Path(msg["results_dir"]))
            self.send({"op": "done", "job_id": job_id, "result": result})
        except JobCanceled:
            self.send({"op": "canceled", "job_id": job_id})
        except JobError as exc:
            self.send({"op": "failed", "job_id": job_id, "error": exc.to_status()})
        except MemoryError as exc:
            self.send({"op": "failed", "job_id": job_id, "error": JobError(ErrorCode.GPU_OUT_OF_MEMORY if "cuda" in self.device else ErrorCode.INTERNAL, f"out of memory: {exc}").to_status()})
        except Exception as exc:  # noqa: BLE001 - any bug in a kind fails only its job
            code = ErrorCode.GPU_OUT_OF_MEMORY if type(exc).__name__ == "OutOfMemoryError" else ErrorCode.INTERNAL
            self.send({"op": "log", "job_id": job_id, "event": "job.exception", "level": "error", "traceback": traceback.format_exc()})
            self.send({"op": "failed", "job_id": job_id, "error": JobError(code, f"{type(exc).__name__}: {exc}").to_status()})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            with self._current_lock:
                self._current = None

    def _deliver(self, ctx, results_dir: Path) -> None:
        """Copies the results into the job folder (temp name, fsync, rename), waiting
        while the spool is unreachable or full; the daemon kills us if the job is lost."""
        from pipeline.errors import MOUNT_ERRNOS, WRITE_ERRNOS, JobCanceled

        waiting_since = None
        while True:
            try:
                results_dir.mkdir(exist_ok=True)
                for name in ctx.outputs:
                    tmp = results_dir / f".{name}.tmp"
                    # One open, written and fsynced: some mounts (rclone) refuse to reopen it.
                    with open(ctx.results_dir / name, "rb") as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                        dst.flush()
                        os.fsync(dst.fileno())
                    os.replace(tmp, results_dir / name)
                return
            except OSError as exc:
                if exc.errno not in MOUNT_ERRNOS | WRITE_ERRNOS:
                    raise
                if ctx.canceled:
                    raise JobCanceled() from None
                if waiting_since is None:
                    waiting_since = time.monotonic()
                    ctx.log("results.waiting", level="warning", reason=f"{exc.strerror} ({results_dir})")
                time.sleep(1.0)

    @staticmethod
    def _result(ctx, seconds: float) -> dict:
        files = []
        for name in ctx.outputs:
            path = ctx.results_dir / name
            files.append({
                "name": name,
                "size": path.stat().st_size,
                "sha256": file_sha256(path),
                "media_type": media_type(name),
            })
        result = {"files": files, "seconds": {"run": round(seconds, 3), **ctx.meta.get("seconds", {})}}
        for key, value in ctx.meta.items():
            if key != "seconds":
                result[key] = value
        return result
