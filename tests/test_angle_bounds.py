"""Absurd angles are refused at ingest, not left to fail inside an engine.

θ = ±1e308 overflows some engines' arithmetic to NaN (the reference engine, Cirq and
JAX fail to sample), so before this check such a job was accepted and failed at
execution. Ingest now rejects any gate angle, bound parameter value or sweep value that
is not finite or beyond ``MAX_ANGLE``, with ``invalid_parameter`` and where it is.
"""

from __future__ import annotations

import pytest

from qbus.bus.connection import Bus
from qbus.bus.job_log import events_of
from qbus.consumers.ingest import IngestHandler
from qbus.consumers.pipeline import Pipeline
from qbus.errors import Reject
from qbus.frontends.parameters import MAX_ANGLE
from qbus.schemas.events import ExecutionRequested, JobCompleted, JobRejected
from tests.jobs import job, run_jobs

pytestmark = pytest.mark.timeout(180)


def rotation(angle: str, declare: str = "") -> str:
    """One qubit turned by ``angle`` and measured; ``declare``: an OpenQASM 3 input."""
    head = ["OPENQASM 3.0;", 'include "stdgates.inc";']
    if declare:
        head.append(f"input float {declare};")
    return "\n".join([*head, "qubit[1] q;", "bit[1] c;", f"rx({angle}) q[0];", "c = measure q;"])


async def test_absurd_angles_are_rejected_at_ingest_and_sane_ones_run(bus: Bus, pipeline: Pipeline):
    literal_up = job(rotation("1e308"))
    literal_down = job(rotation("-1e308"))
    bound = job(rotation("theta", "theta"), parameters={"theta": 1e308})
    scaled = job(rotation("theta * 1e6", "theta"), parameters={"theta": 1e7})  # binds to 1e13
    sane = job(rotation("1e9"))
    finals = await run_jobs(bus, [literal_up, literal_down, bound, scaled, sane])
    *rejected, completed = finals
    assert isinstance(completed, JobCompleted), completed
    for final in rejected:
        assert isinstance(final, JobRejected), final
        assert final.code == "invalid_parameter", final
        assert f"{MAX_ANGLE:g}" in final.message
    assert rejected[0].where == "$.ops[0].params" and "1e+308" in rejected[0].message
    assert rejected[2].where == "$.parameters.theta"
    assert rejected[3].where == "$.ops[0].params" and "1e+13" in rejected[3].message
    # Refused by ingest: no engine was ever asked.
    for submitted in (literal_up, literal_down, bound, scaled):
        log = [e async for _, _, e in events_of(bus, submitted.job_id)]
        assert not any(isinstance(e, ExecutionRequested) for e in log)


async def test_a_sweep_value_beyond_the_bound_is_rejected():
    sweep = job(
        rotation("theta", "theta"),
        method="sweep",
        shots=10,
        sweep=[{"theta": 0.5}, {"theta": float("inf")}],
    )
    with pytest.raises(Reject) as caught:
        await IngestHandler().handle(sweep)
    assert caught.value.code == "invalid_parameter"
    assert caught.value.where == "$.sweep[1].theta"
