"""The web console (qbus/gateway/console/) in a real browser, as a person uses it.

Debian's headless ``chromium`` (scripts/setup.sh installs it), driven by Playwright from
the lock pointed at that binary (no ``playwright install``, no browser download), opens
the console a real gateway serves on a real bus with the real stages:

* it submits the Bell template from the form, sees it complete live with a histogram of
  00 and 11 only summing to the shots, reads the job page's timeline and circuit, sees a
  job submitted elsewhere arrive live in the job list, reads the engines page, and sees
  a program with a syntax error refused with its code;
* with tenant tokens: no token is refused with a readable alert; a token typed in the
  header is kept in localStorage and sent (``?access_token=`` on event streams), and
  alice's console never lists bob's job;
* with the anchor stage on a real anvil node, the job page's Merkle proof verifies on the
  contract (the job's events list the ``result.anchored`` that follows its final event).

Any uncaught exception or console error in the page fails a test (the deliberate 4xx
answers are the only ones allowed, where a test provokes them). Without chromium these
tests skip, except under ``CI=true``, where they fail with the install hint so CI cannot
silently stop checking the console.

``QBUS_SCREENSHOT=docs/console.png`` saves the finished Bell job's page there.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from qbus.bus.config import Config, GatewayConfig, SecretsConfig
from qbus.bus.connection import Bus
from qbus.bus.job_log import stored_events
from qbus.consumers.pipeline import Pipeline
from qbus.gateway.app import create_app
from qbus.gateway.templates import TEMPLATES
from qbus.schemas.events import ResultAnchored
from qbus.verifier.chain import AnchorContract
from tests.gateway_fixtures import served, sse

pytestmark = pytest.mark.timeout(240)

SHOTS = 1000
# Every stage a completed job passes through, in order (its timeline's rows; the
# submission itself is not in a job's log, which starts at ingest).
STAGES = [
    "circuit.ingested",
    "circuit.rewritten",
    "execution.requested",
    "execution.completed",
    "job.completed",
]
CORE_STAGES = ("ingest", "rewrite", "route", "execute", "verify")
TOKENS = {"alice": "alice-token-1", "bob": "bob-token-2"}
DYNAMIC = """OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
h q[0];
rz(pi/4) q[0];
barrier q;
c[0] = measure q[0];
if (c[0]) x q[1];
reset q[0];
cx q[1], q[0];
c = measure q;
"""
BELL = next(t.source for t in TEMPLATES if t.name == "bell")


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        hint = (
            "chromium is not installed: run `bash scripts/setup.sh` as root (installs "
            "Debian's chromium) or `apt-get install -y chromium`"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(hint)
        pytest.skip(hint)
    return path


@pytest.fixture
async def gateway(config: Config, bus: Bus, pipeline: Pipeline) -> AsyncIterator[str]:
    """A real gateway on the test's bus and stages; yields its base URL."""
    async with served(create_app(config, bus=bus)) as url:
        yield url


@pytest.fixture
async def tenant_gateway(
    config: Config, bus: Bus, pipeline: Pipeline, tmp_path: Path
) -> AsyncIterator[str]:
    """A real gateway that needs a bearer token: tenants alice and bob, tokens from the
    file secrets provider."""
    secrets = tmp_path / "secrets"
    (secrets / "gateway").mkdir(parents=True)
    for tenant, token in TOKENS.items():
        (secrets / "gateway" / tenant).write_text(token)
    with_tokens = msgspec.structs.replace(
        config,
        gateway=GatewayConfig(tenants=list(TOKENS)),
        secrets=SecretsConfig(provider="file", directory=str(secrets)),
    )
    async with served(create_app(with_tokens, bus=bus)) as url:
        yield url


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = _chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable)
        yield browser
        await browser.close()


class PageErrors:
    """Uncaught exceptions and console errors of a page, collected to assert none."""

    def __init__(self, page: Page) -> None:
        self.seen: list[str] = []
        page.on("pageerror", lambda error: self.seen.append(f"uncaught: {error}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.seen.append(f"console.error: {message.text} at {message.location}")


async def _bars(page: Page) -> dict[str, int]:
    return await page.eval_on_selector_all(
        "article.job svg.hist g.bar",
        "bars => Object.fromEntries(bars.map(b => [b.dataset.outcome, Number(b.dataset.count)]))",
    )


async def _post_from_page(page: Page, program: str) -> str:
    """Submit ``program`` with the page's own fetch (as another tab would); its job id."""
    return await page.evaluate(
        """async (program) => {
            const r = await fetch("/v1/jobs?shots=10&engine=qiskit-aer", {
                method: "POST", headers: {"Content-Type": "text/plain"}, body: program});
            return (await r.json()).job_id;
        }""",
        program,
    )


async def _timeline(page: Page) -> list[str]:
    return await page.eval_on_selector_all(
        "article.job ol.timeline li", "rows => rows.map(r => r.dataset.type)"
    )


async def test_console_submits_a_bell_job_and_shows_it(browser: Browser, gateway: str):
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    errors = PageErrors(page)
    page.set_default_timeout(60_000)

    # The submit form: pick the Bell template (GET /v1/templates fills the program in).
    await page.goto(f"{gateway}/")  # redirects to /console/
    await page.get_by_role("link", name="Submit").click()
    await page.get_by_label("Template").select_option("bell")
    assert "cx q[0], q[1];" in await page.get_by_label("Program").input_value()
    await page.get_by_label("Shots").fill(str(SHOTS))
    await page.get_by_label("Engine").select_option("qiskit-aer")
    await page.get_by_role("button", name="Submit job").click()
    job = page.locator("#submitted article.job")
    await job.and_(page.locator("[data-state='job.completed']")).wait_for()
    job_id = await job.get_attribute("data-job")
    assert job_id

    bars = await _bars(page)
    assert set(bars) == {"00", "11"}, bars
    assert sum(bars.values()) == SHOTS
    assert all(count > 0 for count in bars.values())

    # The job page: every stage in order on the timeline, the result and the circuit.
    await page.goto(f"{gateway}/console/#/jobs/{job_id}")
    await page.locator("article.job[data-state='job.completed']").wait_for()
    assert await _timeline(page) == STAGES
    durations = await page.locator("article.job ol.timeline .dur").all_inner_texts()
    assert durations[0] == "start"
    assert all(d.endswith(("µs", "ms", " s")) for d in durations[1:]), durations
    assert await _bars(page) == bars
    assert await page.locator("article.job .verdict").inner_text() != ""
    result_hash = await page.locator("article.job dd code").first.inner_text()
    assert result_hash.startswith("sha256:")
    # The trace the job was published in (the gateway starts one for the form's POST).
    page_text = await page.locator("article.job").inner_text()
    assert re.search(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", page_text), page_text
    drawn = await page.eval_on_selector_all(
        "article.job svg.circuit g.op", "ops => ops.map(o => o.dataset.op)"
    )
    assert drawn[:2] == ["h", "cx"] and set(drawn[2:]) == {"measure"}, drawn
    assert await page.locator("article.job svg.circuit g.measure").count() == 2
    if target := os.environ.get("QBUS_SCREENSHOT"):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=target, full_page=True)

    # The job list shows it, and a job submitted elsewhere arrives live over /v1/results.
    await page.get_by_role("link", name="Jobs").click()
    await page.locator(f"tr[data-job='{job_id}']").wait_for()
    await page.get_by_text("live: final events stream in").wait_for()
    other = await _post_from_page(page, BELL)
    row = page.locator(f"tr[data-job='{other}'] td.state")
    await row.wait_for()
    assert await row.inner_text() == "completed"

    # A circuit with parameters, a barrier, a reset and a mid-circuit branch is drawn
    # op by op (each a <g data-op>), control flow as one box.
    dynamic = await _post_from_page(page, DYNAMIC)
    await page.goto(f"{gateway}/console/#/jobs/{dynamic}")
    await page.locator("article.job[data-state='job.completed']").wait_for()
    drawn = await page.eval_on_selector_all(
        "article.job svg.circuit g.op", "ops => ops.map(o => o.dataset.op)"
    )
    assert drawn == ["h", "rz", "barrier", "measure", "if", "reset", "cx", "measure", "measure"]

    # The engines page lists the installed engines with their queue depth.
    await page.get_by_role("link", name="Engines").click()
    await page.locator("tr[data-engine]").first.wait_for()
    engines = await page.eval_on_selector_all(
        "tr[data-engine]", "rows => rows.map(r => r.dataset.engine)"
    )
    assert "qiskit-aer" in engines and "reference" in engines, engines

    assert await page.locator("#alert").is_hidden()
    assert errors.seen == []

    # A program with a syntax error: the gateway refuses it (problem+json) and the form
    # says why, with the code and where; nothing is shown as a job.
    await page.get_by_role("link", name="Submit").click()
    await page.get_by_label("Program").fill("OPENQASM 2.0;\nqreg q[2];\nh q[0]\n")
    await page.get_by_role("button", name="Submit job").click()
    alert = page.get_by_role("alert")
    await alert.wait_for()
    text = await alert.inner_text()
    assert "[qasm_syntax]" in text and "line" in text, text
    assert await page.locator("#submitted article.job").count() == 0
    # The only error logged is Chromium's report of that refused request.
    assert len(errors.seen) == 1 and "status of 4" in errors.seen[0], errors.seen


async def _post_bell(client: httpx.AsyncClient, token: str) -> str:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.post(
        "/v1/jobs",
        content=BELL,
        params={"shots": 10, "engine": "qiskit-aer"},
        headers={"Content-Type": "text/plain", **auth},
    )
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


async def test_console_token_field_shows_only_the_tenants_jobs(
    browser: Browser, tenant_gateway: str
):
    page = await browser.new_page()
    errors = PageErrors(page)
    page.set_default_timeout(60_000)

    # No token yet: the job list's request is refused, and the page says why.
    await page.goto(f"{tenant_gateway}/console/#/jobs")
    alert = page.get_by_role("alert")
    await alert.wait_for()
    assert "[unauthorized]" in await alert.inner_text()
    # The refused fetch is the only error the page logs (Chromium reports the 401).
    assert errors.seen and all("401" in e for e in errors.seen), errors.seen
    errors.seen.clear()

    # Alice's token in the header field: kept in localStorage, sent on every request.
    await page.get_by_label("API token").fill(TOKENS["alice"])
    await page.get_by_role("button", name="Save").click()
    await page.get_by_text("live: final events stream in").wait_for()
    assert await page.evaluate("localStorage.getItem('qbus.token')") == TOKENS["alice"]
    assert await alert.is_hidden()

    # With alice's list live: bob's job finishes first, then alice's. Alice's live list
    # (EventSource with ?access_token=) shows hers and never bob's.
    async with httpx.AsyncClient(base_url=tenant_gateway, timeout=60) as client:
        bobs = await _post_bell(client, TOKENS["bob"])
        bob_auth = {"Authorization": f"Bearer {TOKENS['bob']}"}
        async with sse(client, f"/v1/jobs/{bobs}/events", headers=bob_auth) as reader:
            assert (await reader.all())[-1].event == "job.completed"
        alices = await _post_bell(client, TOKENS["alice"])
    await page.locator(f"tr[data-job='{alices}'] td.state").wait_for()
    assert await page.locator(f"tr[data-job='{bobs}']").count() == 0

    # A reload lists from GET /v1/jobs: still alice's only; her job page follows it.
    await page.reload()
    await page.locator(f"tr[data-job='{alices}']").wait_for()
    assert await page.locator("tr[data-job]").count() == 1
    await page.locator(f"tr[data-job='{alices}'] a").click()
    await page.locator("article.job[data-state='job.completed']").wait_for()
    assert await _timeline(page) == STAGES
    assert errors.seen == []


async def _anchored(bus: Bus, job_id: str) -> ResultAnchored:
    """The job's result.anchored event, read from the log once the anchor stage wrote it."""
    async for _, event in stored_events(bus, [bus.subjects.anchored(job_id)], timeout=90):
        assert isinstance(event, ResultAnchored)
        return event
    raise AssertionError("unreachable: stored_events ends only by raising TimeoutError")


async def test_console_job_page_shows_a_proof_that_verifies_on_chain(
    browser: Browser, chain_qbus_config: Config, bus: Bus, anchor_contract: AnchorContract
):
    # The stages with the anchor stage, on a real anvil node with the anchor contract.
    async with (
        Pipeline(chain_qbus_config, stages=(*CORE_STAGES, "anchor")),
        served(create_app(chain_qbus_config, bus=bus)) as base,
        httpx.AsyncClient(base_url=base, timeout=60) as client,
    ):
        # Three jobs at once: likely one batch, so the first one's proof has nodes.
        job_ids = await asyncio.gather(*(_post_bell(client, "") for _ in range(3)))
        anchored = await _anchored(bus, job_ids[0])
        page = await browser.new_page()
        errors = PageErrors(page)
        page.set_default_timeout(60_000)
        await page.goto(f"{base}/console/#/jobs/{job_ids[0]}")
        await page.locator("article.job[data-state='job.completed']").wait_for()

        shown = page.locator("article.job [data-anchor]")
        fields: dict[str, list[str]] = {}
        for i in range(await shown.count()):
            item = shown.nth(i)
            name = await item.get_attribute("data-anchor")
            fields.setdefault(name or "", []).append(await item.inner_text())
        assert fields["tx_hash"] == [anchored.tx_hash]
        assert fields["root"] == [anchored.root]
        assert fields["contract"] == [anchor_contract.address]
        assert fields.get("proof", []) == anchored.proof
        # What the page shows is a proof the contract accepts for this result.
        proof = [bytes.fromhex(node[2:]) for node in fields.get("proof", [])]
        assert await anchor_contract.verify_inclusion(
            int(fields["batch_id"][0]),
            anchored.result_hash,
            proof,
            int(fields["leaf_index"][0]),
        )
        assert await _timeline(page) == [*STAGES, "result.anchored"]
        assert errors.seen == []
