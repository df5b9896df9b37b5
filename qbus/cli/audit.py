"""``qbus audit``: verify the whole log, replay a job, export a per-job report (docs/audit.md)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
import msgspec

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.signing import load_trust
from qbus.cli.context import config_of
from qbus.consumers.execute import ExecuteHandler
from qbus.verifier.anchor_check import chain_root_reader
from qbus.verifier.chain import close_connections
from qbus.verifier.log_audit import audit_log
from qbus.verifier.replay import replay_job

_json = msgspec.json.Encoder()


@click.group()
def audit() -> None:
    """Prove the event log: hash chain, result hashes, anchors, replays."""


def _root_reader(config: Config, chain: bool):
    if not chain:
        return None, "--no-chain given"
    return chain_root_reader(config.chain)


async def _audit(config: Config, chain: bool, keep_jobs: bool):
    reader, note = _root_reader(config, chain)
    async with await Bus.connect(config.bus, name="qbus-audit") as bus:
        bus.trust = load_trust(config)  # who wrote each final event (bus/signing.py)
        try:
            return await audit_log(bus, root_reader=reader, keep_jobs=keep_jobs, chain_note=note)
        finally:
            if reader is not None:
                await close_connections()


_chain_option = click.option(
    "--chain/--no-chain",
    default=True,
    show_default=True,
    help="Compare anchored roots with the contract on the configured [chain] node.",
)
_require_chain_option = click.option(
    "--require-chain",
    is_flag=True,
    help="Fail when anchors exist but their roots could not be compared on chain.",
)


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_chain_option
@_require_chain_option
@click.pass_context
def audit_verify(ctx: click.Context, as_json: bool, chain: bool, require_chain: bool) -> None:
    """Replay the whole log from sequence 1 and report every problem, pinned to its event.

    Checks the hash chain, re-derives every result hash from the events it came from,
    checks every Merkle proof and (with a reachable chain) every anchored root. Exits 1
    when anything is wrong.
    """
    report, _ = asyncio.run(_audit(config_of(ctx), chain, keep_jobs=False))
    chain_unchecked = report.anchors_checked > 0 and report.chain_status != "checked"
    failed = not report.ok or (require_chain and chain_unchecked)
    if as_json:
        click.echo(_json.encode(report).decode())
        sys.exit(1 if failed else 0)
    summary = (
        f"{report.events} events, {report.checked} matched to the chain "
        f"({report.chain_records} records"
        + (f", {report.unaudited} newer events not yet chained" if report.unaudited else "")
        + f"); {report.results_checked} result hashes re-derived; "
        f"{report.anchors_checked} anchor proofs checked; chain: {report.chain_status}; "
        f"{report.signatures_checked} stage signatures checked"
        + ("" if report.provenance == "checked" else f" ({report.provenance})")
    )
    if report.ok:
        click.echo(f"audit OK: {summary}")
    else:
        click.echo(f"audit FAILED: {len(report.problems)} problem(s) in {summary}", err=True)
        for p in report.problems:
            seq = f"#{p.seq}" if p.seq is not None else "#?"
            click.echo(
                f"  {seq:<7} {p.subject or '?':<40} {p.type or '?':<20} {p.event_id or '?'}",
                err=True,
            )
            click.echo(f"          [{p.check}] {p.message}", err=True)
    if require_chain and chain_unchecked:
        click.echo(f"audit FAILED: --require-chain: {report.chain_status}", err=True)
    sys.exit(1 if failed else 0)


@audit.command("replay")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def audit_replay(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Re-execute JOB_ID from its logged IR, options and engine; compare with the record.

    On the recorded engine version a seeded result must match bit for bit. Exits 1 on a
    mismatch or when the job cannot be replayed.
    """
    config = config_of(ctx)

    async def go():
        async with await Bus.connect(config.bus, name="qbus-audit") as bus:
            return await replay_job(bus, job_id, config, executor=ExecuteHandler)

    report = asyncio.run(go())
    if as_json:
        click.echo(_json.encode(report).decode())
    else:
        for warning in report.warnings:
            click.echo(f"warning: {warning}", err=True)
        where = " ".join(
            f"{name} #{seq}"
            for name, seq in (
                ("request", report.request_seq),
                ("result", report.recorded_seq),
                ("final", report.final_seq),
            )
            if seq is not None
        )
        if report.cached_from:
            where = f"cached from {report.cached_from}" + (f"; {where}" if where else "")
        if report.chunks:
            where = f"{report.chunks} chunks" + (f"; {where}" if where else "")
        line = f"replay {report.status.upper()}: job {job_id}" + (f" ({where})" if where else "")
        click.echo(line, err=not report.ok)
        click.echo(f"  {report.detail}", err=not report.ok)
    sys.exit(0 if report.ok else 1)


@audit.command("export")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the JSON-lines report here (default: standard output).",
)
@_chain_option
@click.pass_context
def audit_export(ctx: click.Context, out: str | None, chain: bool) -> None:
    """Write a JSON-lines report: one line per job, then a summary line.

    Each job line holds its events (sequence, type, subject, id, timestamp), final status,
    result hash, verification, anchor (proof, tx, block, proof and chain checks) and the
    problems found in its events. Exits 1 when the audit found problems.
    """
    report, checker = asyncio.run(_audit(config_of(ctx), chain, keep_jobs=True))
    summary = {
        "kind": "summary",
        "ok": report.ok,
        "jobs": len(checker.jobs),
        "jobs_with_problems": sum(1 for j in checker.jobs.values() if not j.ok),
        "events": report.events,
        "checked": report.checked,
        "unaudited": report.unaudited,
        "chain_records": report.chain_records,
        "results_checked": report.results_checked,
        "anchors_checked": report.anchors_checked,
        "chain_roots_checked": report.chain_roots_checked,
        "chain_status": report.chain_status,
        "problems": len(report.problems),
        # Problems that name no job in the log (a deleted event of an unknown job …).
        "other_problems": [
            p for p in report.problems if not p.job_id or p.job_id not in checker.jobs
        ],
    }
    lines = [_json.encode(job) for job in checker.jobs.values()]
    lines.append(_json.encode(summary))
    text = b"\n".join(lines) + b"\n"
    if out:
        Path(out).write_bytes(text)
        click.echo(
            f"wrote {len(checker.jobs)} job lines and a summary to {out}"
            f" ({'OK' if report.ok else f'{len(report.problems)} problem(s)'})",
            err=True,
        )
    else:
        sys.stdout.buffer.write(text)
        sys.stdout.flush()
    sys.exit(0 if report.ok else 1)
