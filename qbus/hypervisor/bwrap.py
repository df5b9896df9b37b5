"""The ``bwrap`` driver: the ``process`` worker inside bubblewrap namespaces.

The worker runs with new network, PID, IPC, UTS, cgroup and (where the kernel allows)
user namespaces, so it has no network at all — not even loopback to the NATS server.
Its file system is built from nothing: read-only binds of ``/usr`` (and the ``/lib``
links), the interpreter's prefix, the virtual environment and the directories of the
engine packages; a private ``/proc``, a minimal ``/dev`` and a private tmpfs ``/tmp``;
the root itself is read-only. The home directory, the project's state dir (``.qbus``),
NATS credentials and the rest of ``/etc`` are simply absent. The environment is cleared
to what Python needs. Jobs still run in a forked child under the worker's rlimits.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from qbus.errors import SandboxFailure
from qbus.hypervisor.process import ProcessSandbox, module_dirs, module_roots

# System files a Python process reads at start; everything else in /etc stays outside.
_ETC = ("/etc/ld.so.cache", "/etc/localtime", "/etc/nsswitch.conf")
INSTALL_HINT = "install it with: apt-get install -y bubblewrap (Debian/Ubuntu)"


def bwrap_path() -> str:
    """The bubblewrap binary.

    Raises:
        SandboxFailure: ``sandbox_unavailable`` when it is not installed.
    """
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxFailure(
            f"bubblewrap (bwrap) is not installed; {INSTALL_HINT}",
            code="sandbox_unavailable",
            driver="bwrap",
        )
    return path


def sandbox_args(targets: list[str]) -> list[str]:
    """bwrap options that build the worker's view of the system, before the command.

    Args:
        targets: Engines (``module:Class``) whose packages must be importable inside.
    """
    args = [
        bwrap_path(),
        "--unshare-all",
        # SIGKILL when the spawning thread ends: pools spawn from the long-lived threads of
        # asyncio's executor, and a worker also ends when its stdin closes.
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
        "--setenv",
        "HOME",
        "/tmp",
        "--setenv",
        "LANG",
        "C.UTF-8",
        "--setenv",
        "PYTHONDONTWRITEBYTECODE",
        "1",
        "--setenv",
        "PYTHONPATH",
        os.pathsep.join(str(p) for p in module_roots(targets)),
        # The private /tmp before any bind: a checkout or venv that lives under /tmp (a CI
        # clone, say) is bound on top of it instead of being hidden by it.
        "--tmpfs",
        "/tmp",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for name in ("threads", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        if name in os.environ:
            args += ["--setenv", name, os.environ[name]]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for path in _ETC:
        args += ["--ro-bind-try", path, path]
    # The interpreter's prefix (it may live under a home directory, as with pyenv: only
    # that prefix is bound, never the home itself), the venv, and each engine's package.
    binds: list[str] = []
    for path in (sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))):
        binds.append(path)
    binds += [str(p) for p in module_dirs(targets)]
    for path in dict.fromkeys(binds):
        if not path.startswith("/usr/"):
            args += ["--ro-bind", path, path]
    args += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        # Last: the root tmpfs bwrap built becomes read-only; /tmp stays the only
        # writable place.
        "--remount-ro",
        "/",
        "--chdir",
        "/tmp",
    ]
    return args


class BwrapSandbox(ProcessSandbox):
    """The ``process`` driver's warm workers, each inside a bubblewrap sandbox.

    Args:
        pool_size: Most workers kept.
        preload: Engines (``module:Class``) every worker imports at start.
        nice: Niceness the workers add to the executor's (0: none).
        idle: Run the workers under ``SCHED_IDLE``.
    """

    name = "bwrap"

    def argv(self) -> list[str]:
        return [*sandbox_args(self.preload), "--", *super().argv()]

    def env(self) -> dict[str, str]:
        # bwrap itself needs nothing; --clearenv gives the worker its own.
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def check_python(targets: list[str] | None = None) -> tuple[bool, str]:
    """Try a trivial run: start Python inside the sandbox and import qbus.

    Returns:
        Whether it worked, and bwrap's own message when it did not.
    """
    import subprocess

    try:
        argv = [
            *sandbox_args(list(targets or [])),
            "--",
            sys.executable,
            "-c",
            "import qbus.hypervisor.worker",
        ]
    except SandboxFailure as exc:
        return False, str(exc)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=Path("/"))
    if proc.returncode != 0:
        return False, (proc.stderr.strip() or f"exit status {proc.returncode}")
    return True, ""
