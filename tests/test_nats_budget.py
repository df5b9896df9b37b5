"""The NATS operations a job costs each stage stay within the budget in docs/architecture.md.

Counts, not timings: 200 Bell jobs go through a real nats-server and every stage (in
this process, each with its own connection), and every message each connection sends is
classified (qbus/observability/nats_ops.py). A change that adds a round trip to a stage
fails here until the budget table in docs/architecture.md is raised in the same commit.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from nats_ops import BUDGETED  # benchmarks/nats_ops.py (tests/conftest.py)
from nats_ops import run as count_jobs

from qbus.bus.server import NatsServer
from qbus.observability.nats_ops import classify

pytestmark = pytest.mark.timeout(240)

DOC = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"
TOLERANCE = 0.25  # per job: the timers (metric polls, router refreshes) spread over a run
JOBS = 200


def budget() -> dict[str, dict[str, float]]:
    """The table between the nats-ops-budget markers of docs/architecture.md."""
    text = DOC.read_text()
    block = re.search(r"<!-- nats-ops-budget:.*?-->\n(.*?)<!-- end nats-ops-budget -->", text, re.S)
    assert block, "docs/architecture.md lost its nats-ops-budget table"
    rows = [ln for ln in block.group(1).splitlines() if ln.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    table = {}
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        table[cells[0]] = {k: float(v) for k, v in zip(header[1:], cells[1:], strict=True)}
    return table


def test_budget_table_names_every_budgeted_kind():
    table = budget()
    assert {"client", "qbus-ingest", "qbus-route", "qbus-execute", "qbus-verify"} <= set(table)
    for row in table.values():
        assert set(row) == set(BUDGETED)


@pytest.mark.parametrize(
    ("subject", "reply", "kind"),
    [
        ("qbus.ingested.j1", "_INBOX.x.1", "publish"),
        ("$KV.QBUS_JOBS.j1", "_INBOX.x.2", "kv_put"),
        ("$JS.API.DIRECT.GET.KV_QBUS_JOBS.$KV.QBUS_JOBS.j1", "_INBOX.x.3", "read"),
        ("$JS.API.STREAM.MSG.GET.QBUS", "_INBOX.x.4", "read"),
        ("$JS.API.CONSUMER.INFO.QBUS.route", "_INBOX.x.5", "api"),
        ("$JS.ACK.QBUS.route.1.2.3.4.5", "", "ack"),
        ("$JS.API.CONSUMER.MSG.NEXT.QBUS.route", "_INBOX.y", "pull"),
        ("$O.QBUS_BLOBS.C.x", "_INBOX.x.6", "object"),
        ("qbus.anything", "", "core"),
    ],
)
def test_operations_are_classified_by_subject(subject: str, reply: str, kind: str):
    assert classify(subject, b"", reply) == kind


async def test_operations_per_job_stay_within_the_budget(nats_server: NatsServer, tmp_path):
    per_job = await count_jobs(nats_server.url, JOBS, 100, str(tmp_path / "state"))
    table = budget()
    over = []
    for connection, counts in per_job.items():
        allowed = table.get(connection)
        assert allowed is not None, f"{connection} sends messages but has no budget row"
        for kind in BUDGETED:
            if counts[kind] > allowed[kind] + TOLERANCE:
                over.append(f"{connection} {kind}: {counts[kind]:.2f} > {allowed[kind]:g}")
    assert not over, (
        "NATS operations per job over budget (docs/architecture.md, 'Operations per job'): "
        + "; ".join(over)
    )
    # The guard can fail: every stage on the job's path did its work.
    for connection in ("qbus-ingest", "qbus-rewrite", "qbus-route", "qbus-execute", "qbus-verify"):
        assert per_job[connection]["publish"] >= 0.99, (connection, per_job[connection])
