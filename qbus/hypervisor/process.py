"""The ``process`` driver: a pool of warm worker processes, each job under rlimits.

Each worker (``qbus.hypervisor.worker``) imports the engine modules once and forks a child
per job that sets hard limits on memory, CPU seconds, open files and core dumps; the
worker enforces the wall-clock limit and reports peak RSS and CPU time. A worker that dies
is dropped and a new one is started for the next job. The ``bwrap`` driver reuses all of
this and only changes the command that starts a worker.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from qbus.engines.base import Engine, EngineResult, RunRequest
from qbus.errors import CircuitError, EngineError, QbusError, SandboxFailure
from qbus.hypervisor.base import RunLimits
from qbus.hypervisor.worker import (
    IDLE_FLAG,
    NICE_FLAG,
    RESULT_FIELDS,
    Job,
    Outcome,
    Ready,
    RunLimitsMsg,
    read_frame,
    write_frame,
)

# A worker's start-up (interpreter + engine imports) must fit this, or it is given up.
START_TIMEOUT = 120.0
# How long past a job's wall limit the driver waits for the worker itself to answer.
ANSWER_GRACE = 10.0
# Environment a worker keeps: what the interpreter and numeric libraries need, never
# credentials (QBUS_*, NATS tokens) or the user's other settings.
_PASS_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    # The jax engine's compile cache: a `process` child can write the executor's files
    # anyway, so sharing it adds no channel between jobs (bwrap does not pass it).
    "QBUS_JAX_CACHE_DIR",
)


def engine_target(engine: Engine | type[Engine]) -> str:
    """``module:Class`` of an engine, which a worker imports to build its own instance."""
    cls = engine if isinstance(engine, type) else type(engine)
    return f"{cls.__module__}:{cls.__qualname__}"


def _locations(targets: list[str]) -> list[Path]:
    """The top-level package directory (or module file) of qbus and each target."""
    found: list[Path] = []
    for target in ["qbus", *targets]:
        spec = importlib.util.find_spec(target.partition(":")[0].split(".")[0])
        if spec is not None and spec.submodule_search_locations:
            found.append(Path(next(iter(spec.submodule_search_locations))))
        elif spec is not None and spec.origin:
            found.append(Path(spec.origin))
    return list(dict.fromkeys(found))


def module_roots(targets: list[str]) -> list[Path]:
    """Directories that must be on a worker's ``sys.path`` to import ``targets`` and qbus.

    For ``tests.hostile_engine:X`` in a checkout this is the checkout root; for an
    installed package it is its site-packages.
    """
    return list(dict.fromkeys(path.parent for path in _locations(targets)))


def module_dirs(targets: list[str]) -> list[Path]:
    """The top-level package directory (or module file) of qbus and each target."""
    return _locations(targets)


class Worker:
    """One warm worker process and its pipes.

    Args:
        argv: Command that starts ``python -m qbus.hypervisor.worker …``.
        env: Its environment.
        driver: Driver name, for error messages.
    """

    def __init__(self, argv: list[str], env: dict[str, str], driver: str) -> None:
        self.driver = driver
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd="/",
            close_fds=True,
            # Its own session: a Ctrl-C in the executor's terminal is not the worker's.
            start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        try:
            ready = read_frame(self._out, time.monotonic() + START_TIMEOUT)
        except TimeoutError:
            ready = None
        if not isinstance(ready, Ready) or ready.error:
            self.close()
            why = ready.error if isinstance(ready, Ready) else "it exited during start-up"
            raise SandboxFailure(
                f"the {driver} worker did not start: {why}",
                code="sandbox_unavailable",
                driver=driver,
            )

    def call(self, job: Job) -> Outcome:
        """Send one job and wait for its outcome.

        Raises:
            SandboxFailure: ``worker_died`` when the worker is gone or stopped answering.
        """
        try:
            write_frame(self._in, job)
            answer = read_frame(
                self._out, time.monotonic() + job.limits.wall_seconds + ANSWER_GRACE
            )
        except (OSError, TimeoutError) as exc:
            self.close()
            raise SandboxFailure(
                f"the {self.driver} worker stopped answering: {exc}",
                code="worker_died",
                driver=self.driver,
            ) from exc
        if not isinstance(answer, Outcome):
            self.close()
            raise SandboxFailure(
                f"the {self.driver} worker died (exit status {self.proc.poll()})",
                code="worker_died",
                driver=self.driver,
            )
        return answer

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """End the worker: closing its stdin ends it; a stuck one is killed."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ProcessSandbox:
    """Runs each job in a forked child of a warm worker process, under rlimits.

    Args:
        pool_size: Most workers kept; more concurrent jobs wait for one.
        preload: Engines (``module:Class``) every worker imports at start.
        nice: Niceness the workers add to the executor's (0: none): heavy-lane runs
            give way to light ones on a small machine.
        idle: Run the workers under ``SCHED_IDLE`` (``worker.IDLE_FLAG``): the CPU only
            when nothing else wants it.
    """

    name = "process"

    def __init__(
        self,
        pool_size: int = 2,
        preload: list[str] | None = None,
        nice: int = 0,
        idle: bool = False,
    ) -> None:
        self.pool_size = pool_size
        self.preload = list(preload or [])
        self.nice = nice
        self.idle = idle
        self._idle: list[Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self._closed = False

    def argv(self) -> list[str]:
        """The command that starts one worker."""
        niceness = [f"{NICE_FLAG}{self.nice}"] if self.nice else []
        idle = [IDLE_FLAG] if self.idle else []
        return [sys.executable, "-m", "qbus.hypervisor.worker", *niceness, *idle, *self.preload]

    def env(self) -> dict[str, str]:
        """The environment of one worker."""
        env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in module_roots(self.preload))
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def _acquire(self) -> Worker:
        with self._cond:
            while not self._idle and self._count >= self.pool_size:
                self._cond.wait()
            while self._idle:
                worker = self._idle.pop()
                if worker.alive:
                    return worker
                # Died while idle (killed, OOM killer): replace it rather than fail a job.
                self._count -= 1
                worker.close()
            self._count += 1
        try:
            return Worker(self.argv(), self.env(), self.name)
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, worker: Worker) -> None:
        with self._cond:
            if worker.alive and not self._closed:
                self._idle.append(worker)
            else:
                # A dead worker is dropped; the next job starts a fresh one in its place.
                self._count -= 1
                worker.close()
            self._cond.notify()

    def warm(self) -> None:
        """Start one worker now, so the first job does not pay for its imports."""
        self._release(self._acquire())

    def run(self, engine: Engine, request: RunRequest, limits: RunLimits) -> EngineResult:
        """Run ``request`` in a sandboxed child of a warm worker.

        Raises:
            SandboxFailure: The run was stopped (see ``Sandbox.run``).
            EngineError, CircuitError, QbusError: The engine refused or failed.
        """
        target = engine_target(engine)
        if target not in self.preload:
            # Later workers import it at start; this one imports it on first use.
            self.preload.append(target)
        job = Job(
            engine=target,
            request=request,
            limits=RunLimitsMsg(
                memory_mb=limits.memory_mb,
                cpu_seconds=limits.cpu_seconds,
                wall_seconds=limits.wall_seconds,
                open_files=limits.open_files,
            ),
        )
        worker = self._acquire()
        try:
            outcome = worker.call(job)
        finally:
            self._release(worker)
        return self._result(outcome)

    def _result(self, o: Outcome) -> EngineResult:
        match o.kind:
            case "ok":
                sv = None if o.statevector is None else np.frombuffer(o.statevector, np.complex128)
                return EngineResult(
                    statevector=sv,
                    peak_rss_mb=o.peak_rss_mb,
                    cpu_seconds=o.cpu_seconds,
                    wall_seconds=o.wall_seconds,
                    **{name: getattr(o, name) for name in RESULT_FIELDS},
                )
            case "engine":
                raise EngineError(o.message, code=o.code, retryable=o.retryable)
            case "circuit":
                raise CircuitError(o.message, code=o.code)
            case "qbus":
                raise QbusError(o.message, code=o.code)
        raise SandboxFailure(o.message, code=o.code, driver=self.name)

    def close(self) -> None:
        """Stop every idle worker; busy ones are stopped as they come back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for worker in idle:
            worker.close()
