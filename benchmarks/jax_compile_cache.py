"""The jax engine's first job in a fresh process, with and without its compile cache.

A sandboxed jax job runs in a fresh worker child (docs/hypervisor.md), so its first run
of a circuit structure compiles it. Each row starts a new Python process that runs one
layered circuit (``benchmarks/engines.py``) once: ``cold`` with an empty
``QBUS_JAX_CACHE_DIR``, ``warm`` with the directory the cold run filled, ``none``
without the variable. Prints seconds from the engine's construction to the result, and
warm / cold.

    python benchmarks/jax_compile_cache.py --qubits 12 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from benchmarks.engines import DEPTH, layered_circuit
from qbus.engines.base import RunRequest
from qbus.engines.jax_engine import JaxEngine
request = RunRequest(
    circuit=layered_circuit({n}, DEPTH, np.random.default_rng(5)), method="statevector"
)
start = time.perf_counter()
JaxEngine().run(request)
print(json.dumps({{"seconds": time.perf_counter() - start}}))
"""


def first_job(n: int, cache: Path | None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "QBUS_JAX_CACHE_DIR"}
    if cache is not None:
        env["QBUS_JAX_CACHE_DIR"] = str(cache)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(root=str(ROOT), n=n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, nargs="+", default=[12, 16, 20])
    args = parser.parse_args()
    print(f"{'qubits':>6} {'none s':>8} {'cold s':>8} {'warm s':>8} {'warm/cold':>10}")
    for n in args.qubits:
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "jax-cache"
            none = first_job(n, None)
            cold = first_job(n, cache)
            warm = first_job(n, cache)
        print(f"{n:>6} {none:8.2f} {cold:8.2f} {warm:8.2f} {warm / cold:10.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
