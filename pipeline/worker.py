"""The worker process: owns one device, runs one job at a time.

Talks to the daemon over one multiprocessing Connection, in the messages of
contract/messages.py: RunJob, CancelJob, LoadModel, UnloadModel, Stop in; Ready, Progress,
Heartbeat (from a thread, while a job runs), Log, Done, Failed, Canceled, ModelsChanged,
LoadFailed out.
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
import shutil
import signal
import threading
import time
import traceback
from pathlib import Path

from contract import messages as m
from contract.files import file_sha256, media_type
from contract.voices import VoiceBook

PR_SET_PDEATHSIG = 1


# A running job's worker says it is alive this often (the daemon's stall_seconds is larger).
HEARTBEAT_SECONDS = 2.0


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

    def send(self, msg: m.FromWorker) -> None:
        with self._send_lock:
            try:
                self.conn.send(msg)
            except (BrokenPipeError, ConnectionResetError, EOFError):
                os._exit(0)  # the daemon is gone (it requeues the job when it comes back)

    def serve(self, warm_imports: bool = False) -> None:
        threading.Thread(target=self._read_commands, name="commands", daemon=True).start()
        warming = None
        if warm_imports:
            from pipeline.models.resident import warm_imports as warm

            warming = threading.Thread(target=warm, name="warm-imports", daemon=True)
            warming.start()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        self.send(m.Ready(os.getpid(), self.device, tuple(sorted(self.kinds)), self.models.describe()))
        while True:
            msg = self._jobs.get()
            if msg is None:
                return
            if warming is not None:
                warming.join()  # imports racing in two threads can see half-made modules
                warming = None
            if isinstance(msg, m.RunJob):
                self._run(msg)
            else:
                self._manage_model(msg)
                self.send(m.ModelsChanged(self.models.describe()))

    def _read_commands(self) -> None:
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the daemon is gone
            if isinstance(msg, (m.RunJob, m.LoadModel, m.UnloadModel)):
                self._jobs.put(msg)
            elif isinstance(msg, m.CancelJob):
                with self._current_lock:
                    if msg.job_id == self._current:
                        self._cancel.set()
            elif isinstance(msg, m.Stop):
                self._jobs.put(None)
                return

    def _heartbeat(self) -> None:
        """While a job runs, says so every few seconds: a thread of its own, so a long
        step holding the main thread still counts as alive (a stopped process does not)."""
        while True:
            time.sleep(HEARTBEAT_SECONDS)
            with self._current_lock:
                job_id = self._current
            if job_id is not None:
                try:
                    self.send(m.Heartbeat(job_id))
                except (OSError, ValueError):
                    return

    def _run(self, msg: m.RunJob) -> None:
        from contract.errors import ErrorCode, JobCanceled, JobError
        from pipeline.context import JobContext

        job_id = msg.job_id
        with self._current_lock:
            self._current = job_id
            self._cancel.clear()
        started = time.monotonic()
        # Results are made in local scratch and delivered into the spool at the end, so a
        # network spool that drops out mid-job costs a wait, not the job.
        scratch = Path(msg.scratch_dir)
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        ctx = JobContext(
            job_id=job_id,
            job=msg.job,
            inputs={k: [Path(p) for p in v] for k, v in msg.inputs.items()},
            results_dir=scratch,
            device=self.local_device,
            send=self.send,
            cancel_event=self._cancel,
            limits=msg.limits,
            host=msg.host,
            attempt=msg.attempt,
            models=self.models,
            model_name=msg.job.get("model"),
            model_config=msg.model_config,
            voices=VoiceBook.from_config(msg.voices, msg.model_roots),
            preview=msg.preview,
        )
        succeeded = False
        try:
            kind = self.kinds.get(msg.job["kind"])
            if kind is None:
                raise JobError(ErrorCode.INVALID_JOB, f"kind {msg.job['kind']!r} is not installed on this worker")
            params = kind.params.model_validate(msg.job["params"])
            ctx.check_canceled()
            try:
                kind.run(ctx, params)
            finally:
                ctx.preview.remove()  # the attempt is over: its end status shows no preview
            if ctx.preview.written:
                ctx.meta["previews"] = ctx.preview.describe()
            ctx.check_canceled()
            result = self._result(ctx, time.monotonic() - started)
            self._deliver(ctx, Path(msg.results_dir))
            self.send(m.Done(job_id, result, self.models.describe()))
            succeeded = True
        except JobCanceled:
            self.send(m.Canceled(job_id, self.models.describe()))
        except JobError as exc:
            self._fail(job_id, exc)
        except MemoryError as exc:
            self._fail(job_id, JobError(ErrorCode.GPU_OUT_OF_MEMORY if "cuda" in self.device else ErrorCode.INTERNAL,
                                        f"out of memory: {exc}"))
        except Exception as exc:  # noqa: BLE001 - any bug in a kind fails only its job
            code = ErrorCode.GPU_OUT_OF_MEMORY if type(exc).__name__ == "OutOfMemoryError" else ErrorCode.INTERNAL
            self.send(m.Log("job.exception", "error", job_id, {"traceback": traceback.format_exc()}))
            self._fail(job_id, JobError(code, f"{type(exc).__name__}: {exc}"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            with self._current_lock:
                self._current = None
            if self.models.loaded and not succeeded:
                # What a failed or canceled step left behind; after a success the next job
                # should not wait for a gc pass.
                self.models.free_cache()

    def _fail(self, job_id: str, exc) -> None:
        """The end of a failed job, with what the worker now holds (the arbiter places the next job by it)."""
        self.send(m.Failed(job_id, exc.to_status(), self.models.describe()))

    def _manage_model(self, msg: m.LoadModel | m.UnloadModel) -> None:
        from contract.errors import ErrorCode, JobError

        name = msg.model
        try:
            if isinstance(msg, m.LoadModel):
                started = time.monotonic()
                def log(event: str, level: str = "info", **fields) -> None:
                    self.send(m.Log(event, level, None, fields))

                # A load for no job: a compiled model warms up at its defaults.
                _, loaded_now = self.models.ensure(name, msg.config, log=log)
                self.send(m.Log("model.loaded" if loaded_now else "model.already_loaded", fields={
                    "model": name, "device": self.device, "seconds": round(time.monotonic() - started, 3)}))
            elif self.models.unload(name):
                self.send(m.Log("model.unloaded", fields={"model": name, "device": self.device}))
        except JobError as exc:
            self.send(m.LoadFailed(name, exc.to_status()))
        except Exception as exc:  # noqa: BLE001 - a broken model must not take the worker down
            code = ErrorCode.GPU_OUT_OF_MEMORY if type(exc).__name__ == "OutOfMemoryError" else ErrorCode.MODEL_LOAD_FAILED
            self.send(m.LoadFailed(name, JobError(code, f"{type(exc).__name__}: {exc}").to_status()))
            self.models.free_cache()

    def _deliver(self, ctx, results_dir: Path) -> None:
        """Copies the results into the job folder (temp name, fsync, rename), waiting
        while the spool is unreachable or full; the daemon kills us if the job is lost."""
        from contract.errors import MOUNT_ERRNOS, WRITE_ERRNOS, JobCanceled

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
                folder_gone = exc.errno == errno.ENOENT and not results_dir.parent.exists()
                if exc.errno not in MOUNT_ERRNOS | WRITE_ERRNOS and not folder_gone:
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
