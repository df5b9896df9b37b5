"""The cost model: each engine's predicted run time for a job, learned from measurements.

Per engine and method the model is log-linear in four features, fitted by least squares
on measured run times (``benchmarks/routing.py --calibrate``)::

    log(seconds) ≈ w0 + w1 · n + w2 · log(1 + ops) + w3 · log(1 + shots)

(``n`` qubits, ``ops`` gates without barriers, those inside control flow counted once;
``shots`` only for sampling methods; a sweep costs one run per point). Exponential in
``n`` and a power law in ops and shots, it follows both the fixed call overhead that
decides small circuits and the state size that decides large ones; on the benchmark
corpus it ranked engines better than a linear ``a + b·ops·2**n + c·shots`` fit
(docs/routing.md). The fitted coefficients ship with the package (``cost_defaults.json``,
with the machine they were measured on); an engine or method the file does not name
falls back to the file's ``*`` row.

A ``sample`` (or ``sweep``) job whose circuit must be simulated shot by shot (mid-circuit
measurement, reset after a gate, control flow: ``qbus.schemas.ir.shot_by_shot``) costs
about shots × one state evolution, not one state and a sampling pass. It has its own row,
``shot_by_shot``, with the same features (its shots weight comes out near 1), fitted on
dynamic circuits (``python -m benchmarks.dynamic_cost --calibrate``). An engine without that
row is predicted as ``shots`` × its ``statevector`` run: one state evolution per shot.

Online, each engine keeps a multiplicative correction: an exponentially weighted mean of
``log(observed / predicted)`` over the ExecutionCompleted events the route stage reads, so
a machine faster or slower than the calibration one, or an engine under another load,
moves its predictions within a few jobs. An event id is counted once (redeliveries).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from typing import Any

from qbus.schemas.gates import DIRECTIVES
from qbus.schemas.ir import Circuit, shot_by_shot, walk_ops

DEFAULTS_FILE = "cost_defaults.json"
UNCALIBRATED_PENALTY = 10.0
FALLBACK = "*"
SHOT_BY_SHOT = "shot_by_shot"
"""The coefficient row of sampling jobs simulated one shot at a time."""
FEATURES = ("const", "qubits", "log1p_ops", "log1p_shots")
"""Names of the model's features, in coefficient order."""

_SEEN_MAX = 4096


@dataclass(frozen=True, slots=True)
class JobFeatures:
    """What the cost model looks at.

    Attributes:
        qubits: Circuit width.
        ops: Gate count (measure/reset included, barriers not).
        two_qubit: Gates on two or more qubits.
        method: The job's method.
        shots: Shots (for ``sample``).
        points: Runs the job makes (sweep points; 1 otherwise).
        shot_by_shot: The circuit must be simulated once per shot (``ir.shot_by_shot``).
    """

    qubits: int
    ops: int
    two_qubit: int
    method: str
    shots: int
    points: int = 1
    shot_by_shot: bool = False

    @property
    def per_shot(self) -> bool:
        """Sampled one shot at a time: shots × one state evolution."""
        return self.shot_by_shot and self.method in ("sample", "sweep")

    def vector(self) -> tuple[float, float, float, float]:
        """The model's feature vector (see ``FEATURES``)."""
        shots = float(self.shots) if self.method in ("sample", "sweep") else 0.0
        return (1.0, float(self.qubits), math.log1p(self.ops), math.log1p(shots))


def features(circuit: Circuit, method: str, shots: int, sweep_points: int = 0) -> JobFeatures:
    """The features of running ``circuit`` with ``method``."""
    # Ops inside control flow count once each (a loop's trip count is unknown here).
    ops = [
        op
        for op in walk_ops(circuit.ops)
        if op.name not in DIRECTIVES or op.name in ("measure", "reset")
    ]
    return JobFeatures(
        qubits=circuit.num_qubits,
        ops=len(ops),
        two_qubit=sum(1 for op in ops if len(op.qubits) >= 2),
        method=method,
        shots=shots,
        points=max(1, sweep_points),
        shot_by_shot=shot_by_shot(circuit),
    )


def _model_method(method: str) -> str:
    # An expectation job is a state-vector run; a sweep is sample runs, one per point.
    return {"expectation": "statevector", "sweep": "sample"}.get(method, method)


class CostModel:
    """Predicted run seconds per engine, with an online correction per engine.

    Args:
        coefficients: ``{engine: {method: [a, b, c, d]}}``; ``*`` rows are the fallback.
        alpha: Weight of one observation in the online correction.
        meta: Where the coefficients came from (machine, date), for docs and reports.
    """

    def __init__(
        self,
        coefficients: dict[str, dict[str, list[float]]],
        *,
        alpha: float = 0.3,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.coefficients = coefficients
        self.alpha = alpha
        self.meta = meta or {}
        self.correction: dict[str, float] = {}
        self.observations: dict[str, int] = {}
        self.mean: dict[str, float] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()

    @classmethod
    def load_defaults(cls) -> CostModel:
        """The model fitted on the calibration machine (``cost_defaults.json``)."""
        text = resources.files("qbus.router").joinpath(DEFAULTS_FILE).read_text()
        data = json.loads(text)
        return cls(data["coefficients"], meta=data.get("meta", {}))

    def _coeffs(self, engine: str, method: str) -> list[float]:
        method = _model_method(method)
        for e in (engine, FALLBACK):
            rows = self.coefficients.get(e)
            if rows:
                row = rows.get(method) or rows.get(FALLBACK)
                if row:
                    return row
        return [math.log(1e-3), 0.3, 0.5, 0.1]

    def _one_run(self, engine: str, job: JobFeatures) -> float:
        """Log seconds of one run (one sweep point) of ``job``."""
        if job.per_shot:
            row = self.coefficients.get(engine, {}).get(SHOT_BY_SHOT)
            if row is not None:
                return sum(c * x for c, x in zip(row, job.vector(), strict=True))
            # Not calibrated on dynamic circuits: one state evolution per shot.
            one = self._coeffs(engine, "statevector")
            vector = (1.0, float(job.qubits), math.log1p(job.ops), 0.0)
            log_one = sum(c * x for c, x in zip(one, vector, strict=True))
            return log_one + math.log(max(job.shots, 1))
        coeffs = self._coeffs(engine, job.method)
        return sum(c * x for c, x in zip(coeffs, job.vector(), strict=True))

    def base_seconds(self, engine: str, job: JobFeatures) -> float:
        """The calibrated prediction, without the online correction.

        An engine that was never calibrated (a plugin, a test engine) gets the fallback
        row times ``UNCALIBRATED_PENALTY``: it is chosen only when it is the one engine
        that fits, or once its observed runs (the online correction) show it is fast.
        """
        log_one = self._one_run(engine, job)
        # Clamped at e**20 s (about 15 years): the lane decision needs no more.
        seconds = math.exp(max(-20.0, min(log_one, 20.0))) * job.points
        if engine not in self.coefficients:
            seconds *= UNCALIBRATED_PENALTY
        return seconds

    def predict(self, engine: str, job: JobFeatures) -> float:
        """Predicted run seconds of ``job`` on ``engine``."""
        return self.base_seconds(engine, job) * math.exp(self.correction.get(engine, 0.0))

    def observe(self, engine: str, job: JobFeatures, seconds: float, event_id: str = "") -> bool:
        """Learn from one observed run; returns False for an event id already counted.

        Args:
            engine: The engine that ran it.
            job: What ran.
            seconds: Its ``run_seconds``.
            event_id: The ExecutionCompleted's id: a redelivered event is counted once.
        """
        if event_id:
            if event_id in self._seen:
                return False
            self._seen[event_id] = None
            if len(self._seen) > _SEEN_MAX:
                self._seen.popitem(last=False)
        if seconds <= 0:
            return False
        error = math.log(seconds / self.base_seconds(engine, job))
        # Clamped: one pathological run (a cold import, a swap storm) moves little.
        error = max(-5.0, min(5.0, error))
        old = self.correction.get(engine)
        self.correction[engine] = error if old is None else old + self.alpha * (error - old)
        self.observations[engine] = self.observations.get(engine, 0) + 1
        mean = self.mean.get(engine)
        self.mean[engine] = seconds if mean is None else mean + self.alpha * (seconds - mean)
        return True

    def mean_seconds(self, engine: str, default: float) -> float:
        """The engine's observed mean run time (``default`` before any observation): what
        one job waiting in its queue is expected to cost."""
        return self.mean.get(engine, default)


def fit(rows: list[tuple[JobFeatures, float]]) -> list[float]:
    """Least squares in log space (relative error): the coefficients of one engine/method.

    Args:
        rows: (features, observed seconds) of one engine and method.

    Returns:
        The coefficients ``[w0, w1, w2, w3]`` (see ``FEATURES``).
    """
    import numpy as np

    a = np.array([r[0].vector() for r in rows], dtype=float)
    y = np.log([max(r[1] / max(r[0].points, 1), 1e-9) for r in rows])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return [float(c) for c in coef]
