"""Every installed engine runs through the bus: `qbus submit --engine NAME` end to end."""

from __future__ import annotations

import pytest

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.schemas.events import JobCompleted
from tests.jobs import QASM3_GHZ, engines_under_test, job, run_jobs

pytestmark = pytest.mark.timeout(240)

ENGINES = tuple(engines_under_test())


async def test_every_engine_completes_sample_and_statevector_jobs(config: Config, bus: Bus):
    statevector_src = QASM3_GHZ.replace("c = measure q;\n", "")
    async with Pipeline(config, engines=ENGINES) as pipeline:
        jobs = []
        for engine in ENGINES:
            jobs.append(job(QASM3_GHZ, engine=engine, shots=2000, job_id=f"{engine}-sample"))
            jobs.append(
                job(statevector_src, engine=engine, method="statevector", job_id=f"{engine}-sv")
            )
        finals = await run_jobs(bus, jobs, timeout=180)
        pipeline.check()
    for submitted, final in zip(jobs, finals, strict=True):
        assert isinstance(final, JobCompleted), (submitted.engine, final)
        assert final.engine == submitted.engine
        assert final.verification.verdict == "pass", (final.engine, final.verification)
        if submitted.method == "sample":
            assert set(final.counts) == {"000", "111"}
        else:
            assert final.verification.test == "fidelity"
