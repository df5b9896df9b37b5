"""Run job templates: every method's jobs go through the bus like any other submission.

```python
from qbus.client import SyncClient
from qbus.producers.templates import load_template, run_template

template = load_template("qbus/templates/h2_vqe.yaml", overrides={"optimizer.maxiter": 40})
with SyncClient("nats://127.0.0.1:4222") as client:
    result = run_template(template, client=client, engine="jax", progress=print)
print(result.summary["energy"])
```

``run_template`` is synchronous (scipy's optimisers call the energy function
synchronously) and runs on the ``SyncClient`` it is given: the client publishes, the
template decides what; this module never imports the client. The per-method
loops live in ``qbus.producers.vqe``, ``qaoa`` and ``bb84``; the single-job methods
(``sample``, ``statevector``, ``expectation``, ``sweep``, ``dynamics``) are here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from qbus.errors import QbusError, SchemaError
from qbus.frontends.job_template import (
    JobTemplate,
    engine_name,
    parse_yaml,
    to_observable,
    validate_data,
)
from qbus.producers.ansatz import ansatz_circuit
from qbus.producers.bb84 import run_bb84
from qbus.producers.qaoa import run_qaoa
from qbus.producers.template_result import Progress, TemplateResult
from qbus.producers.vqe import run_vqe
from qbus.schemas.dynamics import DynamicsSpec
from qbus.schemas.events import JobCompleted
from qbus.schemas.ir import Circuit
from qbus.schemas.pauli import Observable

if TYPE_CHECKING:
    # For annotations only: the caller hands in the client (see the module docstring).
    from qbus.client import SyncClient

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
"""The templates shipped in the package (``qbus run h2_vqe`` finds them by name)."""


class TemplateJobError(QbusError):
    """A job a template made ended without a result; ``code`` is the job's error code."""

    code = "template_job_failed"


# ------------------------------------------------------------------------ loading


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"]`` for ``dotted = "a.b"``, making mappings on the way.

    Raises:
        SchemaError: A step of the path is not a mapping.
    """
    keys = dotted.split(".")
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        node = node.setdefault(key, {}) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            where = "$." + ".".join(keys[: i + 1])
            raise SchemaError(f"--set {dotted}: {where} is not a mapping", where=where)
    if not isinstance(node, dict):
        raise SchemaError(f"--set {dotted}: cannot set a field there", where="$")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``key.path=value`` with the value read as YAML (``3`` an int, ``true`` a bool).

    Raises:
        SchemaError: No ``=`` in ``text``.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SchemaError(f"--set wants key=value (e.g. optimizer.maxiter=50), got {text!r}")
    import yaml

    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def find_template(name: str) -> Path:
    """A template file: ``name`` as a path, else a template shipped in the package.

    Raises:
        SchemaError: Neither exists (the message lists the shipped ones).
    """
    path = Path(name).expanduser()
    if path.is_file():
        return path
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    shipped = TEMPLATES_DIR / f"{stem}.yaml"
    if shipped.is_file():
        return shipped
    have = ", ".join(sorted(p.stem for p in TEMPLATES_DIR.glob("*.yaml")))
    raise SchemaError(f"no template file {name!r}, and no shipped template of that name ({have})")


def load_template(
    source: str | Path, overrides: Mapping[str, Any] | Sequence[str] = ()
) -> JobTemplate:
    """Read, override and validate a template file (or a shipped template's name).

    Args:
        source: A path, or the name of a shipped template (``h2_vqe``).
        overrides: ``{"optimizer.maxiter": 40}``, or ``["optimizer.maxiter=40"]`` as
            given to ``qbus run --set``; applied before validation, so a bad value is
            reported with its field path.

    Raises:
        SchemaError, CircuitError: See ``validate_template``.
    """
    path = find_template(str(source))
    data = parse_yaml(path.read_text(encoding="utf-8"))
    pairs = (
        list(overrides.items())
        if isinstance(overrides, Mapping)
        else [parse_override(o) for o in overrides]
    )
    for key, value in pairs:
        set_path(data, key, value)
    data.setdefault("name", path.stem.replace("_", "-"))
    return validate_data(data, base_dir=path.parent)


# ------------------------------------------------------------------------ the bus


class Session:
    """Submits a template's jobs with its ``on_job`` settings and waits for results.

    Args:
        client: An open ``SyncClient``.
        template: The template (its ``on_job`` gives every job's options).
        engine: The engine the jobs ask for.
        timeout: Seconds to wait for each job's final event.
    """

    def __init__(
        self, client: SyncClient, template: JobTemplate, engine: str, timeout: float = 120.0
    ):
        self.client = client
        self.template = template
        self.engine = engine
        self.timeout = timeout
        self.job_ids: list[str] = []
        self.engines_used: set[str] = set()

    def options(self, **extra: Any) -> dict[str, Any]:
        """The JobSubmitted options of the next job (seeds step by one per job)."""
        on = self.template.on_job
        options: dict[str, Any] = dict(
            engine=self.engine,
            hypervisor=on.hypervisor,
            ai_optimize=on.ai_optimize,
            optimize=on.optimize,
            priority=on.priority,
            labels={"template": self.template.name or "template"},
        )
        if on.shots is not None:
            options["shots"] = on.shots
        if on.seed is not None:
            options["seed"] = (on.seed + len(self.job_ids)) % (2**63)
        if on.noise is not None:
            options["noise"] = on.noise
        options.update(extra)
        return options

    def submit(self, circuit: Circuit | str, **extra: Any) -> Any:
        """Submit one job; returns its ``SyncJob``."""
        job = self.client.submit(circuit, **self.options(**extra))
        self.job_ids.append(job.job_id)
        return job

    def result(self, job: Any) -> JobCompleted:
        """The job's JobCompleted.

        Raises:
            TemplateJobError: It was rejected or failed (code and message kept).
        """
        final = job.result(timeout=self.timeout)
        if not isinstance(final, JobCompleted):
            where = getattr(final, "where", None)
            raise TemplateJobError(
                f"job {job.job_id} {type(final).__name__}: [{final.code}] {final.message}",
                code=final.code,
                where=where,
            )
        self.engines_used.add(final.engine)
        return final

    def run(self, circuit: Circuit | str, **extra: Any) -> JobCompleted:
        """Submit one job and wait for its result."""
        return self.result(self.submit(circuit, **extra))

    def run_many(self, jobs: Sequence[tuple[Circuit | str, dict[str, Any]]]) -> list[JobCompleted]:
        """Submit every job first, then collect the results (they run in parallel)."""
        handles = [self.submit(circuit, **extra) for circuit, extra in jobs]
        return [self.result(h) for h in handles]

    def expectations(
        self, circuit: Circuit, observables: list[Observable], points: list[dict[str, float]]
    ) -> np.ndarray:
        """Exact expectation values at each parameter set: one ``sweep`` job.

        Returns:
            ``(len(points), len(observables))`` array.
        """
        final = self.run(circuit, method="sweep", sweep=points, observables=observables)
        rows = [p.expectations for p in final.sweep_results or []]
        if len(rows) != len(points) or any(r is None for r in rows):
            raise TemplateJobError(f"sweep job {final.job_id} returned no expectations")
        return np.array(rows, dtype=np.float64)


# ------------------------------------------------------------------ single jobs


def _circuit(template: JobTemplate) -> Circuit | str:
    if template.circuit is not None:
        return template.circuit
    assert template.ansatz is not None
    return ansatz_circuit(template.ansatz)


def _top_counts(counts: Mapping[str, int], k: int = 8) -> list[str]:
    total = sum(counts.values()) or 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [f"  {bits}  {n:>7}  {n / total:6.1%}" for bits, n in ranked]


def run_single(session: Session, progress: Progress) -> TemplateResult:
    """``sample``, ``statevector``, ``expectation``, ``sweep``: one job."""
    t = session.template
    method = t.method
    extra: dict[str, Any] = {"method": method, "parameters": dict(t.parameters)}
    if t.hamiltonian and method in ("expectation", "sweep"):
        extra["observables"] = [to_observable(t.hamiltonian, "hamiltonian")]
    if method == "sweep":
        extra["sweep"] = [dict(p) for p in t.sweep]
    final = session.run(_circuit(t), **extra)
    progress(
        f"job {final.job_id}: {method} on {final.engine}, verification {final.verification.verdict}"
    )
    summary: dict[str, Any] = {
        "job_id": final.job_id,
        "engine": final.engine,
        "verification": final.verification.verdict,
    }
    lines = [f"job {final.job_id} on {final.engine} ({final.verification.verdict})"]
    if final.counts is not None:
        summary["counts"] = final.counts
        lines += ["counts (most frequent):", *_top_counts(final.counts)]
    if final.expectations is not None:
        summary["expectations"] = final.expectations
        lines += [f"<H> = {v:.10g}" for v in final.expectations]
    if final.statevector is not None:
        amps = np.asarray(final.statevector, dtype=np.float64).view(np.complex128)
        probs = np.abs(amps) ** 2
        summary["probabilities"] = probs.tolist()
        top = np.argsort(-probs)[:8]
        width = max(1, int(math.log2(len(amps))))
        lines.append("largest amplitudes (qubit 0 rightmost):")
        lines += [
            f"  |{i:0{width}b}⟩  {amps[i]:.6f}  p={probs[i]:.6f}" for i in top if probs[i] > 1e-12
        ]
    if final.sweep_results is not None:
        summary["sweep_results"] = msgspec.to_builtins(final.sweep_results)
        lines.append(f"sweep: {len(final.sweep_results)} points")
        for i, point in enumerate(final.sweep_results[:10]):
            what = point.expectations if point.expectations is not None else point.counts
            lines.append(f"  point {i}: {what}")
    return TemplateResult(t.name or "", method, session.engine, summary, lines)


def run_dynamics(session: Session, progress: Progress) -> TemplateResult:
    """``dynamics``: one job evolving the Hamiltonian; a table of the observables."""
    t = session.template
    d = t.dynamics
    assert d is not None
    names = [o.name or f"O{k}" for k, o in enumerate(d.observables)]
    spec = DynamicsSpec(
        hamiltonian=to_observable(t.hamiltonian, "H"),
        times=d.report_times(),
        observables=[to_observable(o.terms, n) for o, n in zip(d.observables, names, strict=True)],
        collapse=list(d.collapse),
    )
    circuit: Circuit | str = (
        t.circuit if t.circuit is not None else Circuit(num_qubits=d.qubits or 1)
    )
    final = session.run(circuit, method="dynamics", dynamics=spec)
    assert final.dynamics is not None
    times, values = final.dynamics.times, final.dynamics.values
    progress(f"job {final.job_id}: dynamics on {final.engine}, {len(times)} times")
    header = "       t  " + "  ".join(f"{n:>12}" for n in names)
    step = max(1, (len(times) - 1) // 10)
    rows = [
        f"{times[i]:8.3f}  " + "  ".join(f"{values[k][i]:12.6f}" for k in range(len(names)))
        for i in range(0, len(times), step)
    ]
    if (len(times) - 1) % step:
        i = len(times) - 1
        rows.append(
            f"{times[i]:8.3f}  " + "  ".join(f"{values[k][i]:12.6f}" for k in range(len(names)))
        )
    summary = {
        "job_id": final.job_id,
        "engine": final.engine,
        "verification": final.verification.verdict,
        "times": times,
        "observables": dict(zip(names, values, strict=True)),
    }
    lines = [f"job {final.job_id} on {final.engine} ({final.verification.verdict})", header, *rows]
    return TemplateResult(t.name or "", "dynamics", session.engine, summary, lines)


# ------------------------------------------------------------------------ running


def run_with_session(session: Session, progress: Progress | None = None) -> TemplateResult:
    """Run the template's method with an open session."""
    say = progress or (lambda _line: None)
    method = session.template.method
    if method == "vqe":
        result = run_vqe(session, say)
    elif method == "qaoa":
        result = run_qaoa(session, say)
    elif method == "bb84":
        result = run_bb84(session, say)
    elif method == "dynamics":
        result = run_dynamics(session, say)
    else:
        result = run_single(session, say)
    result.jobs = len(session.job_ids)
    result.job_ids = list(session.job_ids)
    result.engines_used = sorted(session.engines_used)
    return result


def run_template(
    template: JobTemplate,
    *,
    client: SyncClient,
    engine: str | None = None,
    progress: Progress | None = None,
    timeout: float = 120.0,
) -> TemplateResult:
    """Run a template through the bus and return its summary.

    Args:
        template: A validated template (``load_template``).
        client: An open ``SyncClient`` (not closed here).
        engine: Engine for every job, overriding ``on_job.backend`` (aliases allowed).
        progress: Called with one line per job or optimiser iteration.
        timeout: Seconds to wait for each job.

    Raises:
        TemplateJobError: A job was rejected or failed.
        SchemaError: The template cannot run as given (e.g. gradients it cannot take).
    """
    chosen = engine_name(engine) if engine else template.on_job.engine_name
    return run_with_session(Session(client, template, chosen, timeout), progress)
