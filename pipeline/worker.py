"""The worker process: owns one device, runs one job at a time.

Talks to the daemon over one multiprocessing Connection:
  in:  {"op": "run", ...job}, {"op": "cancel", "job_id"}, {"op": "stop"},
       {"op": "load", "model", "config"}, {"op": "unload", "model"}
  out: {"op": "ready"}, {"op": "progress"|"log", "job_id", ...},
       {"op": "done", "job_id", "result"}, {"op": "failed", "job_id", "error"},
       {"op": "canceled", "job_id"}, "model_state" (ModelStore.describe()) in "ready", in every
       job's end and in {"op": "models"} after a load or unload, {"op": "load_failed", "model", "error"}
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


def main(conn, device: str, env: dict[str, str], model_memory_gb: float | str = "auto", warm_imports: bool = False) -> None:
    _die_with_parent()
    os.environ.update(env)  # CUDA_VISIBLE_DEVICES before anything imports torch
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    if os.getppid() == 1:
        return
    Worker(conn, device, model_memory_gb).serve(warm_imports)


class Worker:
    def __init__(self, conn, device: str, model_memory_gb: float | str = "auto"):
        from pipeline.kinds import load_kinds
        from pipeline.models.resident import ModelStore

        self.conn = conn
        self.device = device
        self.kinds = load_kinds()
        self._send_lock = threading.Lock()
        self._jobs: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._current: str | None = None
        self._current_lock = threading.Lock()
        self.models = ModelStore(self.local_device, model_memory_gb)

    @property
    def local_device(self) -> str:
        # With CUDA_VISIBLE_DEVICES set to its own GPU, that GPU is cuda:0 inside the worker.
        return "cpu" if self.device.startswith("cpu") else "cuda:0"

    def send(self, msg: dict) -> None:
        with self._send_lock:
            self.conn.send(msg)

    def serve(self, warm_imports: bool = False) -> None:
        threading.Thread(target=self._read_commands, name="commands", daemon=True).start()
        warming = None
        if warm_imports:
            from pipeline.models.resident import warm_imports as warm

            warming = threading.Thread(target=warm, name="warm-imports", daemon=True)
            warming.start()
        self.send({"op": "ready", "pid": os.getpid(), "device": self.device, "kinds": sorted(self.kinds),
                   "model_state": self.models.describe()})
        while True:
            msg = self._jobs.get()
            if msg is None:
                return
            if warming is not None:
                warming.join()  # imports racing in two threads can see half-made modules
                warming = None
            if msg["op"] == "run":
                self._run(msg)
            else:
                self._manage_model(msg)
                self.send({"op": "models", "model_state": self.models.describe()})

    def _read_commands(self) -> None:
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the daemon is gone
            op = msg.get("op")
            if op in ("run", "load", "unload"):
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
            device=self.local_device,
            send=self.send,
            cancel_event=self._cancel,
            limits=msg.get("limits"),
            host=msg.get("host"),
            attempt=msg.get("attempt", 1),
            models=self.models,
            model_name=msg["job"].get("model"),
            model_config=msg.get("model_config"),
        )
        succeeded = False
        from pipeline.speech.voices import configure

        configure(msg.get("voices") or {}, msg.get("model_roots") or ())
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
            self._finish({"op": "done", "job_id": job_id, "result": result})
            succeeded = True
        except JobCanceled:
            self._finish({"op": "canceled", "job_id": job_id})
        except JobError as exc:
            self._finish({"op": "failed", "job_id": job_id, "error": exc.to_status()})
        except MemoryError as exc:
            self._finish({"op": "failed", "job_id": job_id, "error": JobError(ErrorCode.GPU_OUT_OF_MEMORY if "cuda" in self.device else ErrorCode.INTERNAL, f"out of memory: {exc}").to_status()})
        except Exception as exc:  # noqa: BLE001 - any bug in a kind fails only its job
            code = ErrorCode.GPU_OUT_OF_MEMORY if type(exc).__name__ == "OutOfMemoryError" else ErrorCode.INTERNAL
            self.send({"op": "log", "job_id": job_id, "event": "job.exception", "level": "error", "traceback": traceback.format_exc()})
            self._finish({"op": "failed", "job_id": job_id, "error": JobError(code, f"{type(exc).__name__}: {exc}").to_status()})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            with self._current_lock:
                self._current = None
            if self.models.loaded and not succeeded:
                # What a failed or canceled step left behind; after a success the next job
                # should not wait for a gc pass.
                self.models.free_cache()

    def _finish(self, msg: dict) -> None:
        """The end of a job, with what the worker now holds (the arbiter places the next job by it)."""
        self.send({**msg, "model_state": self.models.describe()})

    def _manage_model(self, msg: dict) -> None:
        from pipeline.errors import ErrorCode, JobError

        name = msg["model"]
        try:
            if msg["op"] == "load":
                started = time.monotonic()
                _, loaded_now = self.models.ensure(name, msg["config"])
                self.send({"op": "log", "event": "model.loaded" if loaded_now else "model.already_loaded", "model": name,
                           "device": self.device, "seconds": round(time.monotonic() - started, 3)})
            elif self.models.unload(name):
                self.send({"op": "log", "event": "model.unloaded", "model": name, "device": self.device})
        except JobError as exc:
            self.send({"op": "load_failed", "model": name, "error": exc.to_status()})
        except Exception as exc:  # noqa: BLE001 - a broken model must not take the worker down
            code = ErrorCode.GPU_OUT_OF_MEMORY if type(exc).__name__ == "OutOfMemoryError" else ErrorCode.MODEL_LOAD_FAILED
            self.send({"op": "load_failed", "model": name, "error": JobError(code, f"{type(exc).__name__}: {exc}").to_status()})
            self.models.free_cache()

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
