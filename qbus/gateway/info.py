"""Engines, templates and the audit: the routes that are about the bus, not one job."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import msgspec
from fastapi import APIRouter, Request

from qbus.engines.catalog import engine_listing
from qbus.engines.registry import get_engine
from qbus.errors import QbusError
from qbus.gateway.jobs import CallerDep, bus_of, config_of
from qbus.gateway.problems import Problem
from qbus.gateway.templates import TEMPLATES
from qbus.gateway.views import MsgspecJSON
from qbus.router.cost import FALLBACK, FEATURES, CostModel
from qbus.verifier.anchor_check import chain_root_reader
from qbus.verifier.chain import close_connections
from qbus.verifier.log_audit import audit_log

router = APIRouter(prefix="/v1", tags=["bus"])


@functools.cache
def _capabilities(name: str) -> dict[str, Any]:
    """An engine's methods and widths, loading it (its framework: seconds, once)."""
    try:
        caps = get_engine(name).capabilities
    except (ImportError, QbusError) as exc:
        return {"methods": [], "max_qubits": {}, "device": "", "error": str(exc)}
    return {
        "methods": list(caps.methods),
        "max_qubits": dict(caps.max_qubits),
        "device": caps.device,
        "error": "",
    }


@functools.cache
def _cost_model() -> CostModel:
    return CostModel.load_defaults()


def _cost_row(name: str) -> dict[str, Any]:
    """The cost model's coefficients for an engine (the fallback row when uncalibrated)."""
    model = _cost_model()
    calibrated = name in model.coefficients
    return {
        "calibrated": calibrated,
        "features": list(FEATURES),
        "coefficients": model.coefficients.get(name) or model.coefficients.get(FALLBACK, {}),
        "measured": model.meta.get("date", ""),
    }


@router.get("/engines", response_class=MsgspecJSON, summary="Engines and their load")
async def engines(request: Request, caller: CallerDep) -> MsgspecJSON:
    """Every installed engine: whether an executor serves it on this bus, its methods and
    widths (loaded for deployed engines only: a framework takes seconds to import), the
    jobs waiting for it, and its cost-model row."""
    bus = bus_of(request)
    deployed = await bus.deployed_engines()
    rows = []
    for listing in engine_listing():
        row: dict[str, Any] = {
            "name": listing.name,
            "version": listing.version,
            "installed": listing.installed,
            "deployed": listing.name in deployed,
            "methods": [],
            "max_qubits": {},
            "queue_depth": 0,
            "cost": _cost_row(listing.name),
        }
        if row["deployed"]:
            row.update(await asyncio.to_thread(_capabilities, listing.name))
            row["queue_depth"] = await bus.executor_backlog(
                listing.name
            ) + await bus.executor_backlog(listing.name, "heavy")
        rows.append(row)
    return MsgspecJSON({"engines": rows})


@router.get("/templates", response_class=MsgspecJSON, summary="Programs for the submit form")
async def templates(caller: CallerDep) -> MsgspecJSON:
    """Small programs to submit (``name``, ``description``, ``source``, ``format``)."""
    return MsgspecJSON({"templates": [msgspec.to_builtins(t) for t in TEMPLATES]})


@router.get("/audit/verify", response_class=MsgspecJSON, summary="Verify the whole log")
async def audit_verify(request: Request, caller: CallerDep, chain: bool = True) -> MsgspecJSON:
    """``qbus audit verify``: replay the log from sequence 1 (hash chain, result hashes,
    Merkle proofs, anchored roots with ``chain``) and report. The report pins events of
    every tenant, so with auth on only the operator's token may ask for it."""
    if caller.tenant is not None:
        raise Problem(
            403,
            "forbidden",
            "the audit covers every tenant's events: it needs the operator's token "
            "([gateway] admin_token_secret)",
        )
    config = config_of(request)
    reader, note = chain_root_reader(config.chain) if chain else (None, "chain=false given")
    try:
        report, _ = await audit_log(bus_of(request), root_reader=reader, chain_note=note)
    finally:
        if reader is not None:
            await close_connections()
    return MsgspecJSON(msgspec.to_builtins(report))
