"""The HTTP gateway (issue 16) against a real nats-server and real stages: httpx talks to
uvicorn on a loopback port. Every endpoint, a Bell job streamed to completion over SSE,
Last-Event-ID resume, the idempotency key, cancel and reroute."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest

from qbus.bus.config import Config, GatewayConfig
from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.engines.registry import get_engine
from qbus.frontends.program import parse_program
from qbus.gateway.app import create_app
from qbus.gateway.console import CONSOLE_DIR
from qbus.gateway.templates import TEMPLATES
from tests.gateway_fixtures import assert_problem, served, sse
from tests.jobs import QASM2_BELL

pytestmark = pytest.mark.timeout(180)


def gateway_config(config: Config, **gateway: object) -> Config:
    """``config`` with a short wait for unknown jobs (a 404 costs a test that long)."""
    settings: dict[str, object] = {"lookup_seconds": 0.5, **gateway}
    return msgspec.structs.replace(config, gateway=GatewayConfig(**settings))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def client_for(
    config: Config, bus: Bus, **gateway: object
) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        served(create_app(gateway_config(config, **gateway), bus=bus)) as base,
        httpx.AsyncClient(base_url=base, timeout=60) as client,
    ):
        yield client


async def post_bell(client: httpx.AsyncClient, **params: object) -> dict:
    response = await client.post(
        "/v1/jobs",
        content=QASM2_BELL,
        params={"shots": 500, **params},
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 202, response.text
    return response.json()


async def test_bell_job_posted_streamed_to_completion_and_read_back(
    config: Config, bus: Bus, pipeline: Pipeline
):
    async with client_for(config, bus, lookup_seconds=30.0) as client:
        posted = await post_bell(client, seed=7)
        job_id = posted["job_id"]
        # Following the Location at once finds the job, though ingest may not have read it.
        at_once = await client.get(posted["links"]["self"])
        assert at_once.status_code == 200 and at_once.json()["job_id"] == job_id
        assert posted["links"] == {
            "self": f"/v1/jobs/{job_id}",
            "events": f"/v1/jobs/{job_id}/events",
            "cancel": f"/v1/jobs/{job_id}/cancel",
        }
        assert posted["sequence"] >= 1 and posted["event_id"]

        # SSE from the first event; the stream ends by itself after the final one.
        async with sse(client, posted["links"]["events"]) as reader:
            messages = await reader.all()
        types = [m.event for m in messages]
        assert types[0] == "circuit.ingested" and types[-1] == "job.completed", types
        assert "execution.completed" in types
        ids = [int(m.id) for m in messages]  # type: ignore[arg-type]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert all(m.data["sequence"] == int(m.id) and m.data["type"] == m.event for m in messages)
        final = messages[-1].data["event"]
        assert final["job_id"] == job_id and sum(final["counts"].values()) == 500
        assert set(final["counts"]) <= {"00", "11"}

        # The same events as JSON.
        listed = (await client.get(f"/v1/jobs/{job_id}/events")).json()["events"]
        assert [e["sequence"] for e in listed] == ids
        assert listed[-1]["time"].endswith("+00:00")

        # Resuming: after the first event only the rest; after the final, 204 (an
        # EventSource then stops reconnecting).
        async with sse(
            client, f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(ids[0])}
        ) as r:
            assert [int(m.id) for m in await r.all()] == ids[1:]  # type: ignore[arg-type]
        done = await client.get(
            f"/v1/jobs/{job_id}/events",
            headers={"Accept": "text/event-stream", "Last-Event-ID": str(ids[-1])},
        )
        assert done.status_code == 204

        state = (await client.get(f"/v1/jobs/{job_id}")).json()
        assert state["state"]["status"] == "completed" and state["state"]["engine"] == "qiskit-aer"
        assert state["final"]["type"] == "job.completed"
        assert state["final"]["result_hash"] == final["result_hash"]

        jobs = (await client.get("/v1/jobs", params={"limit": 5})).json()["jobs"]
        assert [j["job_id"] for j in jobs] == [job_id] and jobs[0]["state"] == "completed"

        engines = {e["name"]: e for e in (await client.get("/v1/engines")).json()["engines"]}
        aer = engines["qiskit-aer"]
        assert aer["deployed"] and "sample" in aer["methods"] and aer["max_qubits"]["sample"] > 0
        assert aer["queue_depth"] == 0 and aer["cost"]["coefficients"]["sample"]
        assert not engines["reference"]["deployed"]

        templates = (await client.get("/v1/templates")).json()["templates"]
        assert {t["name"] for t in templates} >= {"bell", "ghz-5"}

        audit = (await client.get("/v1/audit/verify", params={"chain": "false"})).json()
        assert audit["ok"] is True and audit["problem"] is None
        assert audit["results_checked"] == 1 and audit["events"] >= len(ids) + 1

        served_doc = (await client.get("/v1/openapi.json")).json()
        assert "/v1/jobs/{job_id}/events" in served_doc["paths"]
        redirect = await client.get("/", follow_redirects=False)
        assert redirect.status_code in (302, 307) and redirect.headers["location"] == "/console/"
        console = await client.get("/console/")
        if CONSOLE_DIR.is_dir():  # the console's files (another part of issue 16)
            assert console.status_code == 200 and "text/html" in console.headers["content-type"]
        else:
            assert_problem(console, 404, "console_missing")


def test_every_template_parses():
    for template in TEMPLATES:
        circuit, fmt = parse_program(template.source, template.format)
        assert fmt == template.format and circuit.num_qubits >= 1, template.name


async def test_results_stream_every_final_event_and_resume_from_last_event_id(
    config: Config, bus: Bus, pipeline: Pipeline
):
    async with client_for(config, bus) as client:
        async with sse(client, "/v1/results") as live:
            posted = []
            for seed in range(3):
                body = {"source": QASM2_BELL, "shots": 100, "seed": seed}
                response = await client.post("/v1/jobs", json=body)
                assert response.status_code == 202, response.text
                posted.append(response.json()["job_id"])
            got = [await live.next() for _ in posted]
        assert sorted(m.data["event"]["job_id"] for m in got) == sorted(posted)  # type: ignore[union-attr]
        assert all(m.event == "job.completed" for m in got)  # type: ignore[union-attr]
        first = got[0]
        assert first is not None
        # Resume after the first: the other two are replayed, in log order.
        async with sse(client, "/v1/results", headers={"Last-Event-ID": first.id}) as resumed:
            again = [await resumed.next(), await resumed.next()]
        assert [m.id for m in again] == [m.id for m in got[1:]]  # type: ignore[union-attr]
        # ?last_event_id= (what a reconnect without headers can send) does the same.
        async with sse(client, "/v1/results", params={"last_event_id": "0"}) as replay:
            assert [(await replay.next()).id for _ in got] == [m.id for m in got]  # type: ignore[union-attr]


async def test_cancel_and_reroute_over_http(config: Config, bus: Bus, pipeline: Pipeline):
    # cirq has an executor consumer but no executor: a job routed there waits.
    await bus.ensure_executor("cirq")
    # The route stage (in this process) loads cirq to weigh it: seconds of imports that
    # would stall this event loop mid-test, so they happen first, off the loop.
    await asyncio.to_thread(get_engine, "cirq")
    async with client_for(config, bus) as client:
        waiting = await post_bell(client, engine="cirq")
        moved = await post_bell(client, engine="cirq")
        for job in (waiting, moved):
            for _ in range(200):
                state = (
                    (await client.get(f"/v1/jobs/{job['job_id']}")).json()
                    if (await client.get(f"/v1/jobs/{job['job_id']}")).status_code == 200
                    else None
                )
                if state and state["state"] and state["state"]["status"] == "routed":
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail(f"job {job['job_id']} was never routed")

        cancelled = await client.post(waiting["links"]["cancel"], params={"reason": "test"})
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json()["cancelled"] is True and cancelled.json()["code"] == "cancelled"
        again = await client.post(waiting["links"]["cancel"])
        assert_problem(again, 409, "job_finished")

        path = f"/v1/jobs/{moved['job_id']}/reroute"
        assert_problem(await client.post(path, content=b"engine=x"), 415, "unsupported_media_type")
        assert_problem(await client.post(path, json={"engin": "x"}), 422, "invalid_schema")
        assert_problem(
            await client.post(path, json={"engine": "quest"}), 409, "engine_not_deployed"
        )
        rerouted = await client.post(path, json={"engine": "qiskit-aer", "reason": "test"})
        assert rerouted.status_code == 202, rerouted.text
        assert rerouted.json()["engine"] == "qiskit-aer" and rerouted.json()["generation"] == 1
        async with sse(client, moved["links"]["events"]) as reader:
            last = (await reader.all())[-1]
        assert last.event == "job.completed" and last.data["event"]["engine"] == "qiskit-aer"
        finals = {j["job_id"]: j["state"] for j in (await client.get("/v1/jobs")).json()["jobs"]}
        assert finals == {waiting["job_id"]: "failed", moved["job_id"]: "completed"}


async def stream_messages(bus: Bus) -> int:
    return (await bus.js.stream_info(bus.config.stream)).state.messages


async def test_idempotency_key_names_one_job_stored_once(config: Config, bus: Bus):
    async with client_for(config, bus) as client:
        before = await stream_messages(bus)
        headers = {"Idempotency-Key": "order-42", "Content-Type": "text/plain"}
        first = await client.post("/v1/jobs", content=QASM2_BELL, headers=headers)
        second = await client.post("/v1/jobs", content=QASM2_BELL, headers=headers)
        assert first.status_code == second.status_code == 202
        assert first.json() == second.json()
        assert first.json()["event_id"] == "order-42"
        assert await stream_messages(bus) == before + 1
        other = await client.post(
            "/v1/jobs", content=QASM2_BELL, headers={**headers, "Idempotency-Key": "order-43"}
        )
        assert other.json()["job_id"] != first.json()["job_id"]
        assert await stream_messages(bus) == before + 2


async def test_bad_input_is_a_problem_and_publishes_nothing(config: Config, bus: Bus):
    limit = 2048
    app = create_app(gateway_config(config, max_body_bytes=limit), bus=bus)
    async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        before = await stream_messages(bus)
        cases = [
            (
                client.post(
                    "/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"}
                ),
                400,
                "malformed_json",
            ),
            (
                client.post(
                    "/v1/jobs", content=b"[1, 2]", headers={"Content-Type": "application/json"}
                ),
                422,
                "invalid_schema",
            ),
            (
                client.post(
                    "/v1/jobs", content=QASM2_BELL, headers={"Content-Type": "application/xml"}
                ),
                415,
                "unsupported_media_type",
            ),
            (client.post("/v1/jobs", content=QASM2_BELL), 415, "unsupported_media_type"),
            (
                client.post("/v1/jobs", json={"source": QASM2_BELL, "shots": "many"}),
                422,
                "invalid_schema",
            ),
            (
                client.post("/v1/jobs", json={"source": QASM2_BELL, "method": "guess"}),
                422,
                "unknown_method",
            ),
            (
                client.post("/v1/jobs", json={"source": QASM2_BELL, "type": "job.completed"}),
                422,
                "invalid_schema",
            ),
            (
                client.post("/v1/jobs", json={"source": QASM2_BELL, "job_id": "no spaces"}),
                422,
                "invalid_schema",
            ),
            (
                client.post(
                    "/v1/jobs",
                    content=QASM2_BELL.replace("cx", "cx q[0]"),
                    headers={"Content-Type": "text/plain"},
                ),
                422,
                "qasm_syntax",
            ),
            (
                client.post(
                    "/v1/jobs",
                    content=QASM2_BELL,
                    params={"shots": "x"},
                    headers={"Content-Type": "text/plain"},
                ),
                422,
                "invalid_schema",
            ),
            (
                client.post(
                    "/v1/jobs", content=b"\xff\xfe", headers={"Content-Type": "text/plain"}
                ),
                400,
                "invalid_encoding",
            ),
            (
                client.post(
                    "/v1/jobs", content=b"x" * (limit + 1), headers={"Content-Type": "text/plain"}
                ),
                413,
                "body_too_large",
            ),
            (
                client.post(
                    "/v1/jobs",
                    content=QASM2_BELL,
                    headers={"Content-Type": "text/plain", "Idempotency-Key": "k" * 201},
                ),
                400,
                "invalid_idempotency_key",
            ),
            (client.get("/v1/jobs/nosuchjob"), 404, "job_not_found"),
            (client.get("/v1/jobs/nosuchjob/events"), 404, "job_not_found"),
            (
                client.get("/v1/jobs/bad..id/events", headers={"Accept": "text/event-stream"}),
                404,
                "job_not_found",
            ),
            (client.post("/v1/jobs/nosuchjob/cancel"), 404, "job_not_found"),
            (
                client.post("/v1/jobs/nosuchjob/reroute", json={"engine": "cirq"}),
                404,
                "job_not_found",
            ),
            (
                client.get("/v1/results", headers={"Last-Event-ID": "yesterday"}),
                400,
                "invalid_last_event_id",
            ),
            (client.get("/v1/jobs", params={"limit": 0}), 422, "invalid_request"),
            (client.get("/v1/nothing"), 404, "not_found"),
        ]
        for call, status, code in cases:
            body = assert_problem(await call, status, code)
            assert len(body["detail"]) > 10, body
        qasm = assert_problem(
            await client.post(
                "/v1/jobs",
                content=QASM2_BELL.replace("cx", "cx q[0]"),
                headers={"Content-Type": "text/plain"},
            ),
            422,
            "qasm_syntax",
        )
        assert "line" in qasm["where"] and "column" in qasm["where"]

        # A body sent in chunks, without a Content-Length, is cut off at the limit too.
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"x" * 1024

        chunked = await client.post(
            "/v1/jobs", content=chunks(), headers={"Content-Type": "text/plain"}
        )
        assert_problem(chunked, 413, "body_too_large")
        assert await stream_messages(bus) == before, "a refused request published something"


def test_openapi_body_schema_is_the_job_submitted_schema():
    doc = json.loads(create_app(Config()).openapi() and json.dumps(create_app(Config()).openapi()))
    body = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/JobSubmitted"}
    assert "shots" in doc["components"]["schemas"]["JobSubmitted"]["properties"]


async def test_a_resumed_stream_hands_over_to_the_live_one_without_loss_or_repeats(
    config: Config, bus: Bus, pipeline: Pipeline
):
    # A client resuming from the log's start while jobs keep finishing: the replay and the
    # live tail (one shared reader for every client) meet with nothing lost or sent twice.
    async with client_for(config, bus) as client:
        posted: list[str] = []

        async def post(n: int) -> None:
            for seed in range(n):
                response = await client.post(
                    "/v1/jobs", json={"source": QASM2_BELL, "shots": 50, "seed": seed}
                )
                posted.append(response.json()["job_id"])

        await post(4)
        for job_id in posted:  # finished before the streams open
            async with sse(client, f"/v1/jobs/{job_id}/events") as reader:
                await reader.all()
        async with (
            sse(client, "/v1/results", params={"last_event_id": "0"}) as resumed,
            sse(client, "/v1/results") as live,
        ):
            await post(6)
            got = [await resumed.next() for _ in range(10)]
            live_got = [await live.next() for _ in range(6)]
        ids = [int(m.id) for m in got]  # type: ignore[union-attr, arg-type]
        assert ids == sorted(ids) and len(set(ids)) == 10
        assert sorted(m.data["event"]["job_id"] for m in got) == sorted(posted)  # type: ignore[union-attr]
        assert {m.data["event"]["job_id"] for m in live_got} == set(posted[4:])  # type: ignore[union-attr]
