"""The sandboxed worker: ``python -m qbus.hypervisor.worker [module:Class ...]``.

One worker process is a warm *zygote*: it imports the engine modules named on its command
line once, then serves jobs read from stdin, one at a time. For each job it forks a child
that sets hard resource limits on itself (address space and data size, CPU seconds, open
files, no core dumps), runs the engine and writes its result to a private pipe, then
exits. Forking per job keeps the import cost paid once, gives every job fresh CPU-time
accounting and a fresh address space, and means engine code can never raise its limits
back for the next job (hard limits cannot be raised without privilege, and the child is
gone afterwards). The zygote reaps the child with ``wait4``, which gives its peak RSS and
CPU time, turns a death by signal into a verdict, and enforces the wall-clock limit.

Frames on stdin/stdout are a 4-byte big-endian length and a msgpack message. Stdout is
moved off fd 1 at start, so a stray ``print`` in an engine cannot corrupt the protocol.
The ``process`` and ``bwrap`` drivers run this same module; only the wrapping differs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import select
import signal
import struct
import sys
import time
from importlib import import_module
from typing import Any

import msgspec

from qbus.engines.base import Engine, RunRequest
from qbus.errors import CircuitError, EngineError, QbusError
from qbus.schemas.dynamics import DynamicsResult
from qbus.schemas.ir import Circuit, Op
from qbus.schemas.sweep import SweepPoint

_HEADER = struct.Struct(">I")


class RunLimitsMsg(msgspec.Struct, frozen=True, kw_only=True):
    """The limits of one job, as the worker applies them (see ``RunLimits``)."""

    memory_mb: int
    cpu_seconds: float
    wall_seconds: float
    open_files: int = 256


class Job(msgspec.Struct, frozen=True, kw_only=True, tag="job"):
    """Driver → worker: run ``request`` on the engine class at ``engine`` (module:Class)."""

    engine: str
    request: RunRequest
    limits: RunLimitsMsg


class Ready(msgspec.Struct, frozen=True, kw_only=True, tag="ready"):
    """Worker → driver, once: the engine modules are imported; ``error`` if one failed."""

    pid: int
    error: str = ""


RESULT_FIELDS = ("counts", "seed", "run_seconds", "sweep_results", "dynamics", "expectations")
"""What an ``EngineResult`` and an ``Outcome`` both carry, by the same name (the state
vector travels as bytes; the resource figures are the driver's, not the child's)."""


class Outcome(msgspec.Struct, kw_only=True, tag="outcome"):
    """Worker → driver: one job's result or why it has none.

    Attributes:
        kind: ``ok``, ``engine`` (EngineError), ``circuit`` (CircuitError), ``qbus`` (another
            QbusError) or ``sandbox`` (SandboxFailure).
        code: Error code when not ``ok``.
        statevector: ``complex128`` bytes, qubit 0 the LSB.
    """

    kind: str = "ok"
    code: str = ""
    message: str = ""
    retryable: bool = False
    counts: dict[str, int] | None = None
    statevector: bytes | None = None
    seed: int = 0
    run_seconds: float = 0.0
    sweep_results: list[SweepPoint] | None = None
    dynamics: DynamicsResult | None = None
    expectations: list[float] | None = None
    peak_rss_mb: float | None = None
    cpu_seconds: float | None = None
    wall_seconds: float | None = None


Message = Job | Ready | Outcome
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def write_frame(fd: int, message: Message) -> None:
    """Write one framed message to ``fd``."""
    body = _encoder.encode(message)
    data = memoryview(_HEADER.pack(len(body)) + body)
    while data:
        data = data[os.write(fd, data) :]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes | None:
    parts: list[bytes] = []
    while n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("no answer from the worker in time")
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def read_frame(fd: int, deadline: float | None = None) -> Message | None:
    """Read one framed message from ``fd``; None at end of file.

    Raises:
        TimeoutError: ``deadline`` (a ``time.monotonic`` value) passed first.
    """
    header = _read_exact(fd, _HEADER.size, deadline)
    if header is None:
        return None
    body = _read_exact(fd, _HEADER.unpack(header)[0], deadline)
    return None if body is None else _decoder.decode(body)


def load_engine_class(target: str) -> type[Engine]:
    """The Engine subclass at ``module:Class``."""
    module, _, attr = target.partition(":")
    obj: Any = import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Engine)):
        raise TypeError(f"{target} is not a qbus Engine subclass")
    return obj


def _warm_up(engine: Engine) -> None:
    """Run a one-qubit job in the zygote, so every child inherits warm caches.

    Engines initialise lazily (Aer builds its simulator and transpiler state on first
    use): without this each job's fresh child would pay that again, ~10 ms a job.
    """
    probe = RunRequest(
        circuit=Circuit(
            num_qubits=1,
            num_clbits=1,
            ops=(Op(name="h", qubits=(0,)), Op(name="measure", qubits=(0,), clbits=(0,))),
        ),
        shots=8,
    )
    # An engine that cannot run the probe just starts cold.
    with contextlib.suppress(Exception):
        engine.run(probe)


def new_engine(target: str) -> Engine | type[Engine]:
    """An instance of the engine at ``target``, warmed up; or, for an engine that is not
    fork-safe, its class, instantiated in each job's child instead.

    A runtime that starts threads on first use (XLA's thread pools, for JAX) deadlocks in
    a child forked after that: the child inherits the pool's locks but not its threads.
    Such an engine is imported in the zygote (the import is the slow part) but never run
    there.
    """
    cls = load_engine_class(target)
    if not cls.fork_safe:
        return cls
    engine = cls()
    _warm_up(engine)
    return engine


def _vm_kib(field: str, pid: int | str = "self") -> int:
    """A ``Vm*`` figure of a process, in KiB (0 when it is gone or has none)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


OUT_OF_MEMORY = ("bad_alloc", "out of memory", "cannot allocate memory", "memoryerror")
"""What an allocation refused under the limits leaves in an error's text or on stderr
(lower case): C++'s std::bad_alloc, XLA's ``RESOURCE_EXHAUSTED: Out of memory …``,
``ENOMEM``'s strerror, Python's MemoryError (a traceback)."""

SAMPLE_SECONDS = 0.02
"""How often the zygote reads a running child's data size (VmData, what RLIMIT_DATA caps)."""

STDERR_TAIL = 64 << 10
"""How much of a dead child's stderr is searched for an out-of-memory message."""


def _says_out_of_memory(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in OUT_OF_MEMORY)


def _ran_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc``, or one it was raised from, is an allocation the limits refused."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MemoryError) or (
            isinstance(seen, OSError) and seen.errno == errno.ENOMEM
        ):
            return True
        if _says_out_of_memory(str(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _set_limits(limits: RunLimitsMsg) -> None:
    """Hard limits on this (child) process; engine code cannot raise them again."""
    extra = limits.memory_mb * 1024 * 1024
    # RLIMIT_DATA counts heap and private writable mappings (numpy arrays, C++ vectors):
    # it is the memory limit proper, on top of what the warm zygote already holds.
    data = _vm_kib("VmData:") * 1024 + extra
    # RLIMIT_AS is a backstop against huge reservations; thread stacks and malloc arenas
    # reserve address space they never touch, hence the generous slack.
    space = _vm_kib("VmSize:") * 1024 + extra + (4 << 30)
    cpu = max(1, int(-(-limits.cpu_seconds // 1)))
    for rlimit, value in (
        (resource.RLIMIT_DATA, data),
        (resource.RLIMIT_AS, space),
        # SIGXCPU at the soft limit; a process that ignores it is killed a second later.
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_CORE, 0),
    ):
        soft, hard = value if isinstance(value, tuple) else (value, value)
        resource.setrlimit(rlimit, (soft, hard))


def _classify(exc: BaseException) -> Outcome:
    # Before the engine's own codes: an engine that wraps the refused allocation (JAX's
    # JaxRuntimeError in an EngineError) still ran out of memory.
    if _ran_out_of_memory(exc):
        return Outcome(
            kind="sandbox",
            code="memory_limit",
            message=f"the run ran out of memory: {type(exc).__name__}: {exc}"[:500],
        )
    crashed = isinstance(exc, EngineError) and exc.code == "engine_crashed"
    if crashed and isinstance(exc.__cause__, OSError):
        # Engine.run turned the engine's own OSError into engine_crashed; inside a
        # sandbox it is the sandbox's refusal (below), whatever wrapped it.
        exc = exc.__cause__
    elif isinstance(exc, EngineError):
        return Outcome(kind="engine", code=exc.code, message=str(exc), retryable=exc.retryable)
    if isinstance(exc, CircuitError):
        return Outcome(kind="circuit", code=exc.code, message=str(exc))
    if isinstance(exc, QbusError):
        return Outcome(kind="qbus", code=exc.code, message=str(exc))
    if isinstance(exc, OSError):
        # Inside a sandbox the engine's view of the system is cut down on purpose: any
        # denied or missing resource it reaches for is reported as a violation.
        return Outcome(
            kind="sandbox",
            code="sandbox_violation",
            message=f"the engine was denied a system resource: {type(exc).__name__}: {exc}",
        )
    return Outcome(kind="engine", code="engine_error", message=f"{type(exc).__name__}: {exc}")


def _child(engine: Engine | type[Engine], job: Job, out_fd: int) -> None:
    """Runs in the forked child; never returns."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setpgid(0, 0)
        _set_limits(job.limits)
        if isinstance(engine, type):  # not fork-safe: made fresh in this child
            engine = engine()
        result = engine.run(job.request)
        sv = result.statevector
        outcome = Outcome(
            statevector=None if sv is None else sv.astype("complex128", copy=False).tobytes(),
            **{name: getattr(result, name) for name in RESULT_FIELDS},
        )
    except BaseException as exc:  # every failure becomes a verdict
        outcome = _classify(exc)
    try:
        write_frame(out_fd, outcome)
    except BaseException:  # e.g. MemoryError encoding a huge result
        code = 3
    os._exit(code)


def _signal_verdict(
    sig: int,
    cpu: float,
    limits: RunLimitsMsg,
    usage: tuple[float, float, float],
    stderr: str,
) -> Outcome:
    """Why a child died of ``sig``: its CPU limit, its memory limit, or something else.

    A refused allocation in native code rarely ends in a Python exception: C++ aborts on
    an uncaught std::bad_alloc, XLA aborts on a buffer it could not allocate, others
    dereference the null pointer. So a fatal signal is ``memory_limit`` when the child
    said so on stderr, was near its limit in resident memory, or held so much data
    (above what it was forked with) that one more state vector of its circuit would not
    have fitted: every engine allocates at least one, most several.

    Args:
        usage: Peak resident MiB, peak data MiB above the fork, and the MiB of one
            state vector of the job's circuit.
    """
    name = signal.Signals(sig).name
    rss_mb, data_mb, state_mb = usage
    cpu_cap = max(1, int(-(-limits.cpu_seconds // 1)))
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= cpu_cap - 0.05):
        return Outcome(
            kind="sandbox",
            code="cpu_limit",
            message=f"killed after {cpu:.2f} CPU seconds (limit {limits.cpu_seconds:g} s)",
        )
    if sig in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGKILL) and (
        rss_mb >= 0.9 * limits.memory_mb
        or data_mb + state_mb > limits.memory_mb
        or _says_out_of_memory(stderr)
    ):
        return Outcome(
            kind="sandbox",
            code="memory_limit",
            message=f"killed by {name} at {rss_mb:.0f} MiB resident, {data_mb:.0f} MiB of "
            f"data allocated (limit {limits.memory_mb} MiB)",
        )
    return Outcome(kind="sandbox", code="worker_died", message=f"the run was killed by {name}")


def serve(engines: dict[str, Engine | type[Engine]], proto_in: int, proto_out: int) -> None:
    """Serve jobs from ``proto_in`` until end of file."""
    while True:
        job = read_frame(proto_in)
        if job is None:
            return
        assert isinstance(job, Job)
        engine = engines.get(job.engine)
        if engine is None:
            try:
                engine = engines[job.engine] = new_engine(job.engine)
            except Exception as exc:  # reported to the driver
                write_frame(proto_out, _classify(exc))
                continue
        r, w = os.pipe()
        # The child's stderr, kept to tell a native out-of-memory abort from other deaths
        # (then passed on to ours, where it went before).
        err = os.memfd_create("qbus-job-stderr")
        base_data_kib = _vm_kib("VmData:")  # the child's at fork; its limit is on top
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.close(proto_in)
            os.close(proto_out)
            os.dup2(err, 2)
            os.close(err)
            _child(engine, job, w)
        os.close(w)
        # Also set here (the child sets it too): whichever runs first, the group exists
        # before the zygote might need to kill it.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        deadline = start + job.limits.wall_seconds
        chunks: list[bytes] = []
        timed_out = False
        peak_data_kib = 0
        while True:
            left = deadline - time.monotonic()
            wait = min(left, SAMPLE_SECONDS)
            ready = select.select([r, proto_in], [], [], wait)[0] if left > 0 else []
            if not ready:
                if left <= 0:
                    timed_out = True
                    break
                peak_data_kib = max(peak_data_kib, _vm_kib("VmData:", pid))
                continue
            if proto_in in ready:
                # The driver sends nothing while a job runs: readable means end of file,
                # the executor is gone. The job goes with it rather than run on unwatched.
                _kill_group(pid)
                os.waitpid(pid, 0)
                _pass_on(err)
                return
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(r)
        # Before reaping, while the child's pid and group cannot be reused: the child (at
        # its wall limit) and anything it left running in its group go now.
        _kill_group(pid)
        _, status, usage = os.wait4(pid, 0)
        wall = time.monotonic() - start
        cpu = usage.ru_utime + usage.ru_stime
        rss_mb = usage.ru_maxrss / 1024
        data = b"".join(chunks)
        if timed_out:
            outcome = Outcome(
                kind="sandbox",
                code="wall_timeout",
                message=f"the run passed its wall-clock limit of {job.limits.wall_seconds:g} s",
            )
        elif (answer := _complete_outcome(data)) is not None:
            # A whole answer counts even if the child was killed afterwards (the group
            # kill above reaches a child that closed its pipe but kept running).
            outcome = answer
        elif os.WIFSIGNALED(status):
            data_mb = max(0, peak_data_kib - base_data_kib) / 1024
            state_mb = 16 * 2.0**job.request.circuit.num_qubits / 2**20
            stderr = _read_tail(err, STDERR_TAIL).decode(errors="replace")
            usage = (rss_mb, data_mb, state_mb)
            outcome = _signal_verdict(os.WTERMSIG(status), cpu, job.limits, usage, stderr)
        else:
            outcome = Outcome(
                kind="sandbox",
                code="worker_died",
                message=f"the run exited with status {os.waitstatus_to_exitcode(status)} "
                "and no result",
            )
        _pass_on(err)
        outcome.peak_rss_mb = rss_mb
        outcome.cpu_seconds = cpu
        outcome.wall_seconds = wall
        write_frame(proto_out, outcome)


def _read_tail(fd: int, size: int) -> bytes:
    """The last ``size`` bytes of the file ``fd``."""
    end = os.fstat(fd).st_size
    return os.pread(fd, size, max(0, end - size))


def _pass_on(fd: int) -> None:
    """Copy a finished child's stderr (the file ``fd``) to ours, then close it."""
    with contextlib.suppress(OSError):
        offset, end = 0, os.fstat(fd).st_size
        while offset < end:
            chunk = os.pread(fd, min(end - offset, 1 << 20), offset)
            if not chunk:
                break
            offset += len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(2, view) :]
    os.close(fd)


def _complete_outcome(data: bytes) -> Outcome | None:
    """The child's answer, when ``data`` holds one whole, valid frame."""
    if len(data) < _HEADER.size or len(data) != _HEADER.size + _HEADER.unpack(data[:4])[0]:
        return None
    try:
        decoded = _decoder.decode(data[_HEADER.size :])
    except msgspec.DecodeError:
        return None
    return decoded if isinstance(decoded, Outcome) else None


def _kill_group(pgid: int) -> None:
    """SIGKILL the job's child and everything in its process group."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pgid, signal.SIGKILL)
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.EPERM):
                raise


NICE_FLAG = "--nice="
"""``--nice=N`` before the engines: the worker (and every job child it forks) runs at
niceness +N, as the heavy lane's workers do (docs/hypervisor.md)."""

IDLE_FLAG = "--idle"
"""``--idle`` before the engines: the worker (and every job child and thread) runs under
Linux's ``SCHED_IDLE``, as the heavy lane's workers do: a CPU only when no other task
wants it (docs/hypervisor.md). Ignored where the OS has no such policy."""


def main(argv: list[str]) -> int:
    """Import the engines in ``argv``, say ready, serve jobs."""
    # Interrupts go to the executor; the worker ends when its stdin closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if argv and argv[0].startswith(NICE_FLAG):
        # Before any engine import: every thread the engines start inherits it.
        os.nice(int(argv[0].removeprefix(NICE_FLAG)))
        argv = argv[1:]
    if argv and argv[0] == IDLE_FLAG:
        if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        argv = argv[1:]
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    engines: dict[str, Engine | type[Engine]] = {}
    error = ""
    for target in argv:
        try:
            engines[target] = new_engine(target)
        except Exception as exc:  # reported to the driver
            error = f"cannot load engine {target}: {type(exc).__name__}: {exc}"
    write_frame(proto_out, Ready(pid=os.getpid(), error=error))
    serve(engines, proto_in, proto_out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
