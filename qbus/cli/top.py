"""``qbus top``: the dashboard's key figures, live in a terminal.

Scrapes every stage's ``/metrics`` (the endpoints ``qbus up`` lists in
``<state_dir>/prometheus-targets.json``, or ``--endpoint`` URLs), sums the series over
processes, turns counter deltas into rates and histogram buckets into quantiles the way
PromQL's ``rate`` and ``histogram_quantile`` do, and reads each durable consumer's
pending counts straight from JetStream. Plain ANSI (clear screen, bold); no curses.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import click

from qbus.bus.config import BusConfig
from qbus.cli.context import config_of
from qbus.observability.endpoints import TARGETS_FILE, read_targets

Labels = tuple[tuple[str, str], ...]
Series = dict[tuple[str, Labels], float]

CLEAR = "\x1b[H\x1b[2J"
BOLD, DIM, RED, RESET = "\x1b[1m", "\x1b[2m", "\x1b[31m", "\x1b[0m"


@dataclass
class Snapshot:
    """One scrape of every endpoint, summed over processes.

    Attributes:
        at: ``time.monotonic()`` of the scrape.
        series: ``(sample name, sorted labels) -> value``.
        down: Endpoints that did not answer, with the reason.
        consumers: Durable consumer name → (pending, ack pending, redelivered), from
            JetStream; empty when NATS was not read.
    """

    at: float
    series: Series = field(default_factory=dict)
    down: dict[str, str] = field(default_factory=dict)
    consumers: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    nats_error: str | None = None


def parse_metrics(text: str) -> Series:
    """Prometheus text exposition → series (``_created`` timestamps dropped)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def scrape(urls: Iterable[str], timeout: float = 2.0) -> Snapshot:
    """Read every ``/metrics`` URL and sum the same series across them."""
    import urllib.request

    snap = Snapshot(at=time.monotonic())
    total: Series = defaultdict(float)
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                text = reply.read().decode()
        except OSError as exc:
            snap.down[url] = str(getattr(exc, "reason", exc))
            continue
        for key, value in parse_metrics(text).items():
            total[key] += value
    snap.series = dict(total)
    return snap


async def consumer_pending(
    config: BusConfig, timeout: float = 2.0
) -> dict[str, tuple[int, int, int]]:
    """Pending, ack-pending and redelivered counts of every consumer on the event log."""
    import nats

    nc = await asyncio.wait_for(
        nats.connect(config.server_urls, allow_reconnect=False, connect_timeout=timeout), timeout
    )
    try:
        infos = await nc.jetstream().consumers_info(config.stream)
        return {
            i.name or "?": (i.num_pending or 0, i.num_ack_pending or 0, i.num_redelivered or 0)
            for i in infos
        }
    finally:
        await nc.close()


# -- arithmetic on series -----------------------------------------------------------------


def select(series: Series, name: str, **match: str) -> dict[Labels, float]:
    """The samples of ``name`` whose labels include ``match``."""
    return {
        labels: v
        for (n, labels), v in series.items()
        if n == name and all(dict(labels).get(k) == want for k, want in match.items())
    }


def total(series: Series, name: str, **match: str) -> float:
    return sum(select(series, name, **match).values())


def by(series: Series, name: str, label: str, **match: str) -> dict[str, float]:
    """``sum by (label) (name{match})``."""
    out: dict[str, float] = defaultdict(float)
    for labels, v in select(series, name, **match).items():
        out[dict(labels).get(label, "")] += v
    return dict(out)


def delta(cur: Series, prev: Series | None) -> Series:
    """Counter increase between two snapshots (a reset counts from zero, as PromQL does)."""
    if prev is None:
        return dict(cur)
    out = {}
    for key, value in cur.items():
        before = prev.get(key, 0.0)
        out[key] = value - before if value >= before else value
    return out


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """``histogram_quantile``: ``buckets`` maps upper bound ``le`` → cumulative count."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower  # the largest finite bound, as Prometheus answers
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def histogram(series: Series, name: str, **match: str) -> dict[float, float]:
    """Cumulative buckets of histogram ``name`` summed over the other labels."""
    out: dict[float, float] = defaultdict(float)
    for labels, v in select(series, f"{name}_bucket", **match).items():
        out[float(dict(labels)["le"])] += v
    return dict(out)


# -- rendering ----------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def _rate(value: float, seconds: float | None) -> str:
    return "-" if not seconds else f"{value / seconds:.1f}"


def render(cur: Snapshot, prev: Snapshot | None = None, *, color: bool = True) -> str:
    """One screen of figures. With ``prev``, rates and quantiles cover the interval."""
    b, d, r, z = (BOLD, DIM, RED, RESET) if color else ("", "", "", "")
    s = cur.series
    window = cur.at - prev.at if prev is not None else None
    moved = delta(s, prev.series if prev is not None else None)
    span = f"last {window:.1f} s" if window else "since start"
    lines = [f"{b}qbus top{z}  {time.strftime('%H:%M:%S')}  {d}rates and quantiles: {span}{z}"]
    if cur.down:
        lines += [f"{r}down: {url} ({why}){z}" for url, why in sorted(cur.down.items())]
    if cur.nats_error:
        lines.append(f"{r}JetStream not read: {cur.nats_error}{z}")

    lines += ["", f"{b}{'stage':<12}{'in/s':>8}{'out/s':>8}{'ok':>8}{'rejected':>9}"
              f"{'failed':>8}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}{'pending':>9}"
              f"{'unacked':>9}{z}"]  # fmt: skip
    stages = sorted(
        set(by(s, "qbus_events_in_total", "stage")) | set(by(s, "qbus_events_out_total", "stage"))
    )
    pending = _pending_by_stage(cur)
    for stage in stages:
        outcomes = by(s, "qbus_events_processed_total", "outcome", stage=stage)
        lat = histogram(moved, "qbus_stage_latency_seconds", stage=stage)
        p, u = pending.get(stage, (None, None))
        lines.append(
            f"{stage:<12}"
            f"{_rate(total(moved, 'qbus_events_in_total', stage=stage), window):>8}"
            f"{_rate(total(moved, 'qbus_events_out_total', stage=stage), window):>8}"
            f"{outcomes.get('ok', 0):>8.0f}{outcomes.get('rejected', 0):>9.0f}"
            f"{outcomes.get('failed', 0):>8.0f}"
            f"{outcomes.get('error', 0) + outcomes.get('undecodable', 0):>8.0f}"
            f"{_ms(quantile(0.5, lat)):>9}{_ms(quantile(0.99, lat)):>9}"
            f"{'-' if p is None else f'{p:.0f}':>9}{'-' if u is None else f'{u:.0f}':>9}"
        )
    if not stages:
        lines.append(f"{d}(no stage has reported yet){z}")

    engines = by(s, "qbus_engine_run_seconds_count", "engine")
    if engines:
        lines += ["", f"{b}{'engine':<14}{'runs':>8}{'runs/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
                  f"{'max qubits':>12}{z}"]  # fmt: skip
        for engine in sorted(engines):
            runs = histogram(moved, "qbus_engine_run_seconds", engine=engine)
            widths = by(s, "qbus_engine_run_seconds_count", "qubits", engine=engine)
            widest = max((int(q) for q, n in widths.items() if n and q.isdigit()), default=0)
            lines.append(
                f"{engine:<14}{engines[engine]:>8.0f}"
                f"{_rate(total(moved, 'qbus_engine_run_seconds_count', engine=engine), window):>8}"
                f"{_ms(quantile(0.5, runs)):>9}{_ms(quantile(0.99, runs)):>9}{widest:>12}"
            )

    verdicts = by(s, "qbus_verifications_total", "verdict")
    tvd_n, tvd_sum = total(s, "qbus_verification_tvd_count"), total(s, "qbus_verification_tvd_sum")
    fid_n = total(s, "qbus_verification_fidelity_count")
    fid_sum = total(s, "qbus_verification_fidelity_sum")
    lines += [
        "",
        f"{b}verification{z}  pass {verdicts.get('pass', 0):.0f}  "
        f"fail {verdicts.get('fail', 0):.0f}  skipped {verdicts.get('skipped', 0):.0f}  "
        f"mean TVD {f'{tvd_sum / tvd_n:.4f}' if tvd_n else '-'}  "
        f"mean fidelity {f'{fid_sum / fid_n:.6f}' if fid_n else '-'}",
    ]
    rss = histogram(s, "qbus_sandbox_peak_rss_bytes")
    rss_p99 = quantile(0.99, rss)
    kills = total(s, "qbus_sandbox_failures_total")
    lines.append(
        f"{b}sandbox{z}  runs {total(s, 'qbus_sandbox_peak_rss_bytes_count'):.0f}  "
        f"peak RSS p99 {'-' if rss_p99 is None else f'{rss_p99 / 2**20:.0f} MiB'}  "
        f"stopped {kills:.0f}"
    )
    lookups = by(s, "qbus_cache_lookups_total", "result")
    hits, misses = lookups.get("hit", 0.0), lookups.get("miss", 0.0)
    ratio = f"{hits / (hits + misses):.1%}" if hits + misses else "-"
    chain = histogram(s, "qbus_chain_tx_seconds", outcome="ok")
    chain_n = total(s, "qbus_chain_tx_seconds_count")
    lines.append(
        f"{b}cache{z}  hit ratio {ratio} ({hits + misses:.0f} lookups)   "
        f"{b}chain{z}  tx {chain_n:.0f}  p50 {_ms(quantile(0.5, chain))} ms  "
        f"errors {total(s, 'qbus_chain_tx_seconds_count', outcome='error'):.0f}"
    )
    chained = select(s, "qbus_audit_events_chained_total")
    if chained:
        lines.append(
            f"{b}audit{z}  events chained {sum(chained.values()):.0f}  "
            f"up to #{max(select(s, 'qbus_audit_last_sequence').values(), default=0):.0f}"
        )
    return "\n".join(lines)


def _pending_by_stage(snap: Snapshot) -> dict[str, tuple[float, float]]:
    """Pending / unacked per stage: from JetStream when read, else the stages' gauges."""
    out: dict[str, tuple[float, float]] = {}
    if snap.consumers:
        for name, (pending, unacked, _) in snap.consumers.items():
            stage = "execute" if name.startswith("execute-") else name
            p, u = out.get(stage, (0.0, 0.0))
            out[stage] = (p + pending, u + unacked)
        return out
    # Every copy of a stage reports the same consumer: take one copy's figure (max).
    for gauge, slot in (
        ("qbus_consumer_pending_messages", 0),
        ("qbus_consumer_ack_pending_messages", 1),
    ):
        per: dict[tuple[str, str], float] = {}
        for labels, v in select(snap.series, gauge).items():
            key = (dict(labels).get("stage", ""), dict(labels).get("consumer", ""))
            per[key] = max(per.get(key, 0.0), v)
        for (stage, _), v in per.items():
            current = list(out.get(stage, (0.0, 0.0)))
            current[slot] += v
            out[stage] = (current[0], current[1])
    return out


def endpoints_from(state_dir: str | Path, given: tuple[str, ...]) -> list[str]:
    """``given`` URLs, else those in the targets file ``qbus up`` wrote."""
    if given:
        return [u if "://" in u else f"http://{u}/metrics" for u in given]
    path = Path(state_dir) / TARGETS_FILE
    if not path.exists():
        raise click.ClickException(
            f"no endpoints: {path} does not exist (start `qbus up`, or pass --endpoint URL)"
        )
    return read_targets(path)


@click.command()
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    metavar="URL",
    help="A /metrics URL or host:port (repeatable); default: those `qbus up` wrote.",
)
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds per frame.")
@click.option("--once", is_flag=True, help="Print one frame (totals) and exit.")
@click.option("--no-nats", is_flag=True, help="Do not read consumer info from JetStream.")
@click.option("--no-color", is_flag=True, help="No ANSI colours or screen clearing.")
@click.pass_context
def top(
    ctx: click.Context,
    endpoints: tuple[str, ...],
    interval: float,
    once: bool,
    no_nats: bool,
    no_color: bool,
) -> None:
    """Live figures of the running stages: rates, latency, pending, engines, verdicts."""
    config = config_of(ctx)
    urls = endpoints_from(config.state_dir, endpoints)
    color = not no_color and sys.stdout.isatty()
    prev: Snapshot | None = None
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            snap = scrape(urls)
            if not no_nats:
                try:
                    snap.consumers = asyncio.run(consumer_pending(config.bus))
                except Exception as exc:  # NATS down: show the stages' own gauges
                    snap.nats_error = str(exc) or type(exc).__name__
            frame = render(snap, prev, color=color)
            if once:
                click.echo(frame)
                return
            click.echo((CLEAR if color else "\n") + frame, nl=True)
            prev = snap
            time.sleep(interval)
