"""Metrics of real stage processes started by ``qbus up``, the Grafana dashboard bound to
them, the Prometheus scrape config, and ``qbus top``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from qbus.bus.config import BusConfig, Config
from qbus.bus.connection import Bus
from qbus.cli.top import Snapshot, parse_metrics, quantile, render
from qbus.observability.endpoints import TARGETS_FILE, read_targets
from qbus.supervisor import Supervisor
from tests.jobs import QASM2_BELL, job, run_jobs

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "qbus" / "observability" / "grafana" / "qbus.json"
PROMETHEUS = ROOT / "qbus" / "observability" / "prometheus.yml"
STAGES = ("ingest", "rewrite", "route", "execute-qiskit-aer", "verify", "audit", "control")

# Sample names a family of each type exposes.
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
    "summary": ("", "_count", "_sum"),
}
# 3 submissions; ingested, rewritten, exec, executed, result of 2 jobs; 1 rejection.
CHAINED = 3 + 2 * 5 + 1
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}


@dataclass
class Up:
    """A running ``qbus up``: its NATS URL and each stage's /metrics URL."""

    url: str
    metrics: dict[str, str]
    state: Path
    output: str


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("up")
    conf = tmp / "qbus.toml"
    # Poll consumer info often, so the pending gauges are there within the test.
    conf.write_text("[observability]\nconsumer_poll_seconds = 0.2\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "QBUS_STATE_DIR": str(tmp / "state"),
        "QBUS_CONFIG": str(conf),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "qbus", "up", "--port", "-1", "--metrics-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines: list[str] = []
        while not any(ln.startswith("logs in") for ln in lines):
            line = proc.stdout.readline()
            assert line, "qbus up exited early:\n" + "".join(lines)
            lines.append(line)
        text = "".join(lines)
        url = re.search(r"nats://[\d.]+:\d+", lines[0]).group(0)
        metrics = dict(re.findall(r"stage (\S+)#1 .* metrics (http://\S+/metrics)", text))
        yield Up(url, metrics, tmp / "state", text)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    return parse_metrics(_get(url))


def _value(series: dict, name: str, **labels: str) -> float:
    return sum(
        v for (n, lab), v in series.items() if n == name and labels.items() <= dict(lab).items()
    )


def _wait_scrape(url: str, ready, timeout: float = 30.0) -> dict:
    """Scrape ``url`` until ``ready(series)`` (a stage settles its input just after a
    client sees the result; its endpoint starts with the process)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            series = _scrape(url)
            if ready(series):
                return series
        except OSError:
            series = {}
        if time.monotonic() > deadline:
            return series
        time.sleep(0.1)


@pytest.fixture(scope="module")
def after_jobs(up: Up) -> dict[str, dict]:
    """Each stage's scrape after two Bell jobs and one rejected job ran."""

    async def go() -> None:
        async with await Bus.connect(BusConfig(url=up.url)) as bus:
            bad = job(QASM2_BELL.replace("h q[0]", "hh q[0]"))
            finals = await run_jobs(bus, [job(QASM2_BELL), job(QASM2_BELL), bad], timeout=120)
            assert [f.__struct_config__.tag for f in finals] == [
                "job.completed",
                "job.completed",
                "job.rejected",
            ]

    asyncio.run(go())
    expected_in = {"ingest": 3, "rewrite": 2, "route": 2, "execute": 2, "verify": 2, "control": 0}

    def ready(stage: str):
        short = stage.split("-")[0]

        def check(series: dict) -> bool:
            if stage == "audit":
                return _value(series, "qbus_audit_events_chained_total") >= CHAINED
            return (
                _value(series, "qbus_events_processed_total", stage=short)
                >= expected_in[short]
                and _value(series, "qbus_consumer_pending_messages", stage=short) == 0
                and bool(
                    [k for k in series if k[0] == "qbus_consumer_pending_messages"]
                )
            )  # fmt: skip

        return check

    return {stage: _wait_scrape(url, ready(stage)) for stage, url in up.metrics.items()}


def test_up_prints_an_endpoint_per_stage_and_writes_the_targets(up: Up):
    assert set(up.metrics) == set(STAGES), up.output
    ports = {int(u.rsplit(":", 1)[1].split("/")[0]) for u in up.metrics.values()}
    assert len(ports) == len(STAGES)  # each stage process its own port
    targets = read_targets(up.state / TARGETS_FILE)
    assert sorted(targets) == sorted(up.metrics.values())
    groups = json.loads((up.state / TARGETS_FILE).read_text())
    assert {g["labels"]["qbus_process"] for g in groups} == {f"{s}#1" for s in STAGES}


def test_each_stage_endpoint_shows_its_counters_moving(after_jobs: dict[str, dict]):
    ingest = after_jobs["ingest"]
    assert _value(ingest, "qbus_events_in_total", stage="ingest", type="job.submitted") == 3
    assert _value(ingest, "qbus_events_processed_total", stage="ingest", outcome="ok") == 2
    assert _value(ingest, "qbus_events_processed_total", stage="ingest", outcome="rejected") == 1
    assert _value(ingest, "qbus_rejections_total", stage="ingest", code="unknown_gate") == 1
    assert _value(ingest, "qbus_stage_latency_seconds_count", stage="ingest") == 3
    for stage, tag in (
        ("rewrite", "circuit.ingested"),
        ("route", "circuit.rewritten"),
        ("execute", "execution.requested"),
        ("verify", "execution.completed"),
    ):
        series = after_jobs[stage if stage != "execute" else "execute-qiskit-aer"]
        assert _value(series, "qbus_events_in_total", stage=stage, type=tag) == 2, stage
        assert _value(series, "qbus_events_out_total", stage=stage) == 2, stage
        assert _value(series, "qbus_handler_seconds_count", stage=stage) == 2, stage
        # Each process reports only its own stage.
        assert _value(series, "qbus_events_in_total", stage="ingest") == 0
        # Pending counts come from JetStream consumer info: everything was consumed.
        assert _value(series, "qbus_consumer_pending_messages", stage=stage) == 0
    execute = after_jobs["execute-qiskit-aer"]
    assert (
        _value(
            execute,
            "qbus_engine_run_seconds_count",
            engine="qiskit-aer",
            method="sample",
            qubits="2",
        )
        == 2
    )
    assert _value(execute, "qbus_engine_run_seconds_sum", engine="qiskit-aer") > 0
    verify = after_jobs["verify"]
    assert _value(verify, "qbus_verifications_total", verdict="pass", test="chi2") == 2
    assert _value(verify, "qbus_verification_tvd_count", engine="qiskit-aer") == 2
    assert 0 < _value(verify, "qbus_verification_tvd_sum", engine="qiskit-aer") < 2 * 0.2
    assert _value(verify, "qbus_events_out_total", stage="verify", type="job.completed") == 2
    # The auditor chained the 3 submissions and every event they caused.
    assert _value(after_jobs["audit"], "qbus_audit_events_chained_total") >= CHAINED


def _exported_names(after_jobs: dict[str, dict], up: Up) -> set[str]:
    """Every sample name the stages' endpoints declare, by family type (from the text)."""
    names: set[str] = set()
    for url in up.metrics.values():
        for family in text_string_to_metric_families(_get(url)):
            names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
            names |= {s.name for s in family.samples}
    return names


def _metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, label
    names inside ``{…}``/``by (…)``, keywords, numbers or strings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\boffset\s+-?[0-9a-z]+", "", expr)  # offsets
    expr = re.sub(r"(?<![A-Za-z0-9_:])\d[\d.]*(?:[eE][-+]?\d+)?", "0", expr)  # numbers
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[m.end() :].lstrip()
        if rest.startswith("(") or m.group(0) in PROMQL_WORDS:
            continue  # a function call
        names.add(m.group(0))
    return names


def test_grafana_dashboard_is_valid_and_bound_to_exported_metrics(
    up: Up, after_jobs: dict[str, dict]
):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    assert len(panels) >= 10
    assert len({p["id"] for p in panels}) == len(panels)
    exported = _exported_names(after_jobs, up)
    referenced: set[str] = set()
    for panel in panels:
        assert panel["type"] in {"timeseries", "stat", "gauge", "table", "bargauge"}
        assert panel["title"] and {"x", "y", "w", "h"} <= set(panel["gridPos"])
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert target["refId"] and expr.count("(") == expr.count(")"), expr
            names = _metric_names(expr)
            assert names and all(n.startswith("qbus_") for n in names), (expr, names)
            missing = names - exported
            assert not missing, f"panel {panel['title']!r} queries {missing}, not exported"
            referenced |= names
    # The figures the issue names are all on the dashboard.
    for name in (
        "qbus_events_in_total",
        "qbus_events_out_total",
        "qbus_events_processed_total",
        "qbus_stage_latency_seconds_bucket",
        "qbus_engine_run_seconds_bucket",
        "qbus_verification_tvd_sum",
        "qbus_verification_fidelity_sum",
        "qbus_sandbox_peak_rss_bytes_bucket",
        "qbus_consumer_pending_messages",
        "qbus_cache_lookups_total",
        "qbus_chain_tx_seconds_bucket",
    ):
        assert name in referenced, name


def test_promql_name_extraction():
    assert _metric_names(
        'histogram_quantile(0.99, sum by (stage, le) (rate(a_bucket{x="y(z)"}[5m]))) / b'
    ) == {"a_bucket", "b"}
    assert _metric_names("clamp_min(sum(rate(c2_total[5m])), 1e-9) offset 5m") == {"c2_total"}


def test_prometheus_config_matches_the_default_up_layout(tmp_path: Path):
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job_config,) = config["scrape_configs"]
    assert job_config["job_name"] == "qbus" and job_config["metrics_path"] == "/metrics"
    static = [(g["labels"]["qbus_stage"], g["targets"][0]) for g in job_config["static_configs"]]
    sup = Supervisor("nats://127.0.0.1:4222", tmp_path, metrics_ports=iter(range(9464, 9500)))
    planned = [(p.name.split("#")[0], f"127.0.0.1:{p.metrics_port}") for p in sup.processes]
    assert static == planned


def test_qbus_top_shows_the_key_figures(up: Up, after_jobs: dict[str, dict]):
    env = {**os.environ, "QBUS_STATE_DIR": str(up.state)}
    out = subprocess.run(
        [sys.executable, "-m", "qbus", "--url", up.url, "top", "--once", "--no-color"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    lines = {ln.split()[0]: ln.split() for ln in out.stdout.splitlines() if ln.strip()}
    # stage in/s out/s ok rejected failed errors p50 p99 pending unacked
    assert lines["ingest"][3:5] == ["2", "1"]
    assert lines["verify"][3] == "2" and lines["verify"][-2:] == ["0", "0"]
    assert lines["qiskit-aer"][1] == "2"  # engine runs
    assert "pass 2" in out.stdout and "JetStream not read" not in out.stdout
    assert int(re.search(r"events chained (\d+)", out.stdout).group(1)) >= CHAINED
    # Without NATS it falls back to the stages' own pending gauges.
    bad = subprocess.run(
        [sys.executable, "-m", "qbus", "top", "--once", "--endpoint", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "QBUS_URL": "nats://127.0.0.1:9"},
    )
    assert bad.returncode == 0
    assert "down: http://127.0.0.1:9/metrics" in bad.stdout
    assert "JetStream not read" in bad.stdout


def test_top_arithmetic_matches_promql():
    # histogram_quantile: linear inside the bucket holding the rank.
    assert quantile(0.5, {0.1: 5.0, 0.5: 10.0, float("inf"): 10.0}) == pytest.approx(0.1)
    assert quantile(0.75, {0.1: 5.0, 0.5: 10.0, float("inf"): 10.0}) == pytest.approx(0.3)
    assert quantile(0.99, {0.1: 0.0, float("inf"): 4.0}) == 0.1  # above the last bound
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    text = (
        "# TYPE qbus_events_in_total counter\n"
        'qbus_events_in_total{stage="ingest",type="job.submitted"} 10.0\n'
    )
    before = Snapshot(at=0.0, series=parse_metrics(text))
    after = Snapshot(at=2.0, series=parse_metrics(text.replace("10.0", "30.0")))
    frame = render(after, before, color=False)
    row = next(ln for ln in frame.splitlines() if ln.startswith("ingest"))
    assert row.split()[1] == "10.0"  # (30 - 10) / 2 s


async def test_a_stage_whose_metrics_port_is_taken_still_works(config: Config, bus: Bus):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "QBUS_URL": config.bus.url}
        proc = subprocess.Popen(
            [sys.executable, "-m", "qbus", "stage", "ingest", "--metrics-port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            j = job(QASM2_BELL)
            sub = await bus.js.subscribe(
                bus.subjects.ingested(j.job_id), stream=bus.config.stream, ordered_consumer=True
            )
            await bus.publish(j)
            msg = await sub.next_msg(timeout=60)
            await sub.unsubscribe()
            assert json.loads(msg.data)["job_id"] == j.job_id
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    assert f"cannot serve /metrics on port {port}" in err
    assert proc.returncode == 0, err[-2000:]
