"""Tenant isolation over HTTP (issue 16): bearer tokens from the secrets provider map to
tenants; a tenant sees and controls only its own jobs, and another tenant's job is
answered 404, exactly as an unknown one (so job ids do not leak). Real bus and stages."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import pytest

from qbus.bus.config import Config, GatewayConfig
from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.engines.registry import get_engine
from qbus.errors import ConfigError
from qbus.gateway.app import create_app
from qbus.secrets.base import SecretError
from tests.gateway_fixtures import assert_problem, served, sse
from tests.jobs import QASM2_BELL

pytestmark = pytest.mark.timeout(180)

# cirq is deployed (an executor consumer) but nothing runs it: a job the router sends
# there waits; so every job meant to finish names its engine.
AER = "qiskit-aer"
TOKENS = {"acme": "tok-acme-1f3e", "globex": "tok-globex-9a2b", "admin": "tok-admin-77c1"}


def tenant_config(config: Config) -> Config:
    return msgspec.structs.replace(
        config,
        gateway=GatewayConfig(
            tenants=["acme", "globex"], admin_token_secret="gateway/admin", lookup_seconds=0.5
        ),
    )


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    # The default secrets provider: QBUS_SECRET_<KEY> variables.
    for name, token in TOKENS.items():
        monkeypatch.setenv(f"QBUS_SECRET_GATEWAY_{name.upper()}", token)


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


async def routed(client: httpx.AsyncClient, job_id: str, who: str) -> None:
    for _ in range(400):
        response = await client.get(f"/v1/jobs/{job_id}", headers=auth(who))
        if (
            response.status_code == 200
            and (response.json()["state"] or {}).get("status") == "routed"
        ):
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"job {job_id} was never routed")


async def test_a_tenant_sees_and_controls_only_its_own_jobs(
    config: Config, bus: Bus, pipeline: Pipeline, tokens: None
):
    await bus.ensure_executor("cirq")  # no executor: a job routed to cirq waits
    # The route stage (in this process) loads cirq to weigh it: seconds of imports that
    # would stall this event loop mid-test, so they happen first, off the loop.
    await asyncio.to_thread(get_engine, "cirq")
    app = create_app(tenant_config(config), bus=bus)
    async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as client:
        nobody = await client.get("/v1/jobs")
        assert_problem(nobody, 401, "unauthorized")
        assert nobody.headers["www-authenticate"] == "Bearer"
        assert_problem(
            await client.get("/v1/jobs", headers={"Authorization": "Bearer guess"}),
            401,
            "unauthorized",
        )

        # acme's job claims to be globex's: the token decides, as the subject does on NATS.
        done = await client.post(
            "/v1/jobs",
            json={"source": QASM2_BELL, "shots": 100, "tenant": "globex", "engine": AER},
            headers=auth("acme"),
        )
        assert done.status_code == 202, done.text
        done_id = done.json()["job_id"]
        async with sse(client, f"/v1/jobs/{done_id}/events", headers=auth("acme")) as reader:
            final = (await reader.all())[-1]
        assert final.event == "job.completed" and final.data["event"]["tenant"] == "acme"

        waiting = await client.post(
            "/v1/jobs",
            content=QASM2_BELL,
            params={"engine": "cirq"},
            headers={**auth("acme"), "Content-Type": "text/plain"},
        )
        waiting_id = waiting.json()["job_id"]
        await routed(client, waiting_id, "acme")

        # globex: every per-job route answers 404, as for a job that does not exist.
        for job_id in (done_id, waiting_id):
            g = auth("globex")
            for response in (
                await client.get(f"/v1/jobs/{job_id}", headers=g),
                await client.get(f"/v1/jobs/{job_id}/events", headers=g),
                await client.get(
                    f"/v1/jobs/{job_id}/events", headers={**g, "Accept": "text/event-stream"}
                ),
                await client.get(
                    f"/v1/jobs/{job_id}/events",
                    params={"access_token": TOKENS["globex"]},
                    headers={"Accept": "text/event-stream"},
                ),
                await client.post(f"/v1/jobs/{job_id}/cancel", headers=g),
                await client.post(
                    f"/v1/jobs/{job_id}/reroute", json={"engine": "qiskit-aer"}, headers=g
                ),
            ):
                body = assert_problem(response, 404, "job_not_found")
                assert job_id in body["detail"]
        # ... and the waiting job is untouched by those attempts.
        state = (await client.get(f"/v1/jobs/{waiting_id}", headers=auth("acme"))).json()
        assert state["state"]["status"] == "routed" and state["final"] is None

        listed = {n: (await client.get("/v1/jobs", headers=auth(n))).json()["jobs"] for n in TOKENS}
        assert listed["globex"] == []
        assert {j["job_id"] for j in listed["acme"]} == {done_id, waiting_id}
        assert {j["job_id"] for j in listed["admin"]} == {done_id, waiting_id}

        # globex's result stream, replayed from the log's start (token as ?access_token=,
        # as an EventSource sends it): acme's final event is not in it, globex's own is.
        async with sse(
            client, "/v1/results", params={"access_token": TOKENS["globex"], "last_event_id": "0"}
        ) as results:
            own = await client.post(
                "/v1/jobs",
                json={"source": QASM2_BELL, "shots": 50, "engine": AER},
                headers=auth("globex"),
            )
            first = await results.next()
        assert first is not None and first.data["event"]["job_id"] == own.json()["job_id"]
        assert first.data["event"]["tenant"] == "globex"

        assert_problem(await client.get("/v1/audit/verify", headers=auth("acme")), 403, "forbidden")
        admin_audit = await client.get(
            "/v1/audit/verify", params={"chain": "false"}, headers=auth("admin")
        )
        assert admin_audit.status_code == 200 and admin_audit.json()["ok"] is True

        # The same idempotency key from two tenants: two jobs (keys never meet).
        key = {"Idempotency-Key": "same-key", "Content-Type": "text/plain"}
        a = await client.post("/v1/jobs", content=QASM2_BELL, headers={**auth("acme"), **key})
        g = await client.post("/v1/jobs", content=QASM2_BELL, headers={**auth("globex"), **key})
        assert a.json()["job_id"] != g.json()["job_id"]

        cancelled = await client.post(f"/v1/jobs/{waiting_id}/cancel", headers=auth("acme"))
        assert cancelled.status_code == 202 and cancelled.json()["cancelled"] is True


def test_gateway_tokens_fail_before_serving(config: Config, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(SecretError, match="QBUS_SECRET_GATEWAY_ACME"):
        create_app(tenant_config(config))
    bad = msgspec.structs.replace(config, gateway=GatewayConfig(tenants=["a.b"]))
    with pytest.raises(ConfigError, match="not a tenant name"):
        create_app(bad)
