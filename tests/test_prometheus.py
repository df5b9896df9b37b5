"""A real Prometheus (Debian's ``prometheus``) with the shipped scrape config
(deploy/prometheus/prometheus.yml and its rules) scrapes real stage processes started by
``qbus up``: PromQL over its HTTP API counts the jobs that ran, every rule and every
Grafana panel query evaluates, and every metric name they use is one the stages export."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from qbus.bus.config import BusConfig
from qbus.bus.connection import Bus
from qbus.observability.endpoints import TARGETS_FILE, free_ports
from tests.jobs import QASM2_BELL, job, run_jobs
from tests.test_observability import (
    DASHBOARD,
    STAGES,
    Up,
    _exported_names,
    _metric_names,
    up,  # noqa: F401 - the module's running `qbus up`
)

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "deploy" / "prometheus"
JOBS = 5  # Bell jobs that complete; one more submission is rejected
# Series Prometheus makes itself, not the stages.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


class Prometheus:
    """A prometheus server process and its HTTP API."""

    def __init__(self, url: str, proc: subprocess.Popen[str], log: Path) -> None:
        self.url = url
        self.proc = proc
        self.log = log

    def get(self, path: str, **params: str) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as reply:
            return json.loads(reply.read())

    def query(self, expr: str) -> list[dict]:
        """The instant vector ``expr`` evaluates to (raises on a PromQL error)."""
        try:
            answer = self.get("/api/v1/query", query=expr)
        except urllib.error.HTTPError as exc:  # 400/422: the expression is not valid
            raise AssertionError(f"{expr}: {exc.read().decode()}") from exc
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The single number ``expr`` gives, or None when it gives no series."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, want: float, timeout: float = 60.0) -> float | None:
        """Query ``expr`` until it is ``want`` (scrapes come every second); the last value."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.value(expr)
            if got == want or time.monotonic() > deadline:
                return got
            time.sleep(0.5)


def _prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail(
            "prometheus is not installed: run `bash scripts/setup.sh` (installs Debian's "
            "prometheus as root) or `apt-get install -y prometheus`"
        )
    return path


@pytest.fixture(scope="module")
def ran(up: Up) -> Up:  # noqa: F811 - the fixture imported above
    """``up`` after JOBS Bell jobs completed and one submission was rejected."""

    async def go() -> None:
        async with await Bus.connect(BusConfig(url=up.url)) as bus:
            bad = job(QASM2_BELL.replace("h q[0]", "hh q[0]"))
            finals = await run_jobs(
                bus, [*(job(QASM2_BELL) for _ in range(JOBS)), bad], timeout=120
            )
            tags = [f.__struct_config__.tag for f in finals]
            assert tags == ["job.completed"] * JOBS + ["job.rejected"]

    asyncio.run(go())
    return up


@pytest.fixture(scope="module")
def prometheus(ran: Up, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus on the shipped config, its only change a 1 s scrape and rule interval,
    its targets the file ``qbus up`` wrote, put where the config reads targets."""
    binary = _prometheus_binary()
    home = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((SHIPPED / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    for rule_file in config["rule_files"]:
        shutil.copy(SHIPPED / rule_file, home / rule_file)
    (home / "targets").mkdir()
    shutil.copy(ran.state / TARGETS_FILE, home / "targets" / "qbus-up.json")
    port = next(free_ports(0))
    log = home / "prometheus.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"prometheus exited:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"prometheus not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_promql_counts_the_jobs_that_ran(prometheus: Prometheus):
    # Every stage process is a target, and up.
    assert prometheus.wait_for('count(up{job="qbus"} == 1)', len(STAGES)) == len(STAGES)
    targets = prometheus.get("/api/v1/targets")["data"]["activeTargets"]
    assert sorted(t["labels"]["qbus_stage"] for t in targets) == sorted(STAGES)
    # The job counter: final events stored, summed over the stages that write them.
    completed = 'sum(qbus_events_out_total{type="job.completed"})'
    assert prometheus.wait_for(completed, JOBS) == JOBS
    assert prometheus.value('sum(qbus_events_out_total{type="job.rejected"})') == 1
    assert prometheus.value('sum(qbus_events_in_total{stage="ingest"})') == JOBS + 1
    assert prometheus.value('sum(qbus_engine_run_seconds_count{engine="qiskit-aer"})') == JOBS
    # The recording rules ran on those series (a rate needs two scrapes of them).
    finished = 'count(qbus:jobs_finished:rate5m{type=~"job.completed|job.rejected"})'
    assert prometheus.wait_for(finished, 2, timeout=30) == 2


def test_every_rule_loads_and_names_only_exported_metrics(prometheus: Prometheus, ran: Up):
    groups = prometheus.get("/api/v1/rules")["data"]["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    shipped = yaml.safe_load((SHIPPED / "qbus-rules.yml").read_text())["groups"]
    exprs = {r.get("record") or r["alert"]: r["expr"] for g in shipped for r in g["rules"]}
    assert set(loaded) == set(exprs)
    for name, rule in loaded.items():
        assert rule["health"] in ("ok", "unknown"), (name, rule.get("lastError"))
    exported = _exported_names({}, ran)
    for name, expr in exprs.items():
        names = _metric_names(expr)
        assert names and not names - PROMETHEUS_OWN - exported, (name, names - exported)
    # No alert fires on a healthy bus that just ran good jobs.
    alerts = prometheus.get("/api/v1/alerts")["data"]["alerts"]
    assert not [a for a in alerts if a["state"] == "firing"], alerts


def test_every_grafana_query_evaluates_on_the_real_series(prometheus: Prometheus):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 20
    answered = 0
    for expr in exprs:
        # Grafana's own variable; on a 1 s scrape, 1m holds enough samples for rate().
        result = prometheus.query(expr.replace("$__rate_interval", "1m"))
        answered += bool(result)
    # The panels of what ran (events, latency, engine runs, verdicts, audit) have series.
    for expr in (
        "sum by (stage) (rate(qbus_events_in_total[1m]))",
        "max(qbus_audit_last_sequence)",
        "sum by (verdict, test) (rate(qbus_verifications_total[1m]))",
    ):
        assert prometheus.query(expr), expr
    assert answered >= 10, answered
