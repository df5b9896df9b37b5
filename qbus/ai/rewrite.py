"""The AI step of the rewrite stage: propose, prove equivalent, compare, decide.

The model sees the deterministic passes' result as OpenQASM 3 and proposes a rewrite.
The proposal is used only when (a) ``check_equivalence`` finds it equivalent to that
result (same final measurements, unitary equal up to global phase: exact up to 12
qubits, randomized with a stated confidence above) and (b) it is not worse in gate
count, two-qubit gate count or depth. Otherwise the deterministic result stands. Either
way the returned ``AiRewriteReport`` records the proposal, the check and the verdict.

Nothing here can fail a job: no server, a slow server, a missing model or garbage
answers all end in ``unavailable``/``rejected`` with the deterministic result kept.
The whole step is bounded by ``[ai] timeout``; the HTTP calls are async and the
numerical check runs in a worker thread, so the stage's event loop keeps running.
"""

from __future__ import annotations

import asyncio
import logging

from qbus.ai.assistant import ask_until_valid, qasm_validator
from qbus.ai.client import AiReply, OllamaClient
from qbus.ai.equivalence import check_equivalence
from qbus.ai.errors import AiAnswerError, AiError, start_hint
from qbus.ai.extract import extract_qasm
from qbus.ai.prompting import load_prompt
from qbus.bus.config import AiConfig, Limits
from qbus.errors import MissingOptionalLibraryError, QbusError
from qbus.frontends.qasm import to_qasm3
from qbus.schemas.ai import AiRewriteReport
from qbus.schemas.ir import Circuit, CircuitStats, has_control_flow, stats

log = logging.getLogger("qbus.ai.rewrite")

KEPT = "; the deterministic result is kept"


def _record(reply: AiReply | None) -> dict[str, str]:
    if reply is None:
        return {}
    return {
        "model": reply.model,
        "model_digest": reply.model_digest,
        "prompt_version": reply.prompt_version,
    }


def not_worse(proposed: CircuitStats, current: CircuitStats) -> str | None:
    """Why ``proposed`` is worse than ``current`` (None when it is not worse)."""
    worse = [
        f"{what} {p} > {c}"
        for what, p, c in (
            ("gates", proposed.gates, current.gates),
            ("two-qubit gates", proposed.two_qubit_gates, current.two_qubit_gates),
            ("depth", proposed.depth, current.depth),
        )
        if p > c
    ]
    return ", ".join(worse) or None


class AiRewriter:
    """Asks the model for a rewrite of a circuit and decides whether to use it.

    Args:
        config: The ``[ai]`` settings.
        limits: Ingest limits, applied to the model's program too.
    """

    def __init__(self, config: AiConfig, limits: Limits | None = None) -> None:
        self.config = config
        self.limits = limits or Limits()

    async def rewrite(self, circuit: Circuit) -> tuple[Circuit | None, AiRewriteReport]:
        """Propose and check a rewrite of ``circuit`` (the deterministic result).

        Returns:
            The accepted circuit (None when the deterministic result stands) and the
            report for ``CircuitRewritten.ai``.
        """
        try:
            return await self._rewrite(circuit)
        except Exception as exc:
            # An optional step: a bug or an odd circuit here must not cost the job its
            # result. Logged with the traceback; the event says what happened.
            log.exception("AI rewrite failed")
            return None, AiRewriteReport(
                verdict="unavailable",
                warning=f"the AI step failed: {type(exc).__name__}: {exc}" + KEPT,
            )

    async def _rewrite(self, circuit: Circuit) -> tuple[Circuit | None, AiRewriteReport]:
        cfg = self.config
        if not cfg.enabled:
            return None, AiRewriteReport(
                verdict="unavailable", warning="the AI assistant is switched off in [ai]" + KEPT
            )
        if len(circuit.ops) > cfg.max_ops or circuit.num_qubits > cfg.max_check_qubits:
            return None, AiRewriteReport(
                verdict="skipped",
                warning=f"{circuit.num_qubits} qubits / {len(circuit.ops)} ops is beyond what "
                f"is sent to the model ([ai] max_check_qubits={cfg.max_check_qubits}, "
                f"max_ops={cfg.max_ops})" + KEPT,
            )
        if has_control_flow(circuit):
            # The equivalence check compares unitaries; a dynamic circuit has none.
            return None, AiRewriteReport(
                verdict="skipped",
                warning="circuits with classical control (if/while) are not sent to the "
                "model: their equivalence cannot be checked" + KEPT,
            )
        prompt = load_prompt("rewrite")
        try:
            user = f"```qasm\n{to_qasm3(circuit)}```"
        except QbusError as exc:
            return None, AiRewriteReport(
                verdict="skipped",
                warning=f"the circuit cannot be shown to the model as OpenQASM 3: {exc}" + KEPT,
            )
        try:
            async with asyncio.timeout(cfg.timeout):
                async with OllamaClient(cfg) as client:
                    answer, proposed = await ask_until_valid(
                        client,
                        prompt.messages(user),
                        prompt_version=prompt.version,
                        extract=extract_qasm,
                        validate=qasm_validator(self.limits),
                        what="OpenQASM 3 program",
                        max_retries=cfg.max_retries,
                    )
        except AiAnswerError as exc:
            return None, AiRewriteReport(
                verdict="rejected",
                proposed_qasm=exc.last_answer,
                check="parse",
                check_detail=exc.last_error,
                attempts=exc.attempts,
                **_record(exc.reply if isinstance(exc.reply, AiReply) else None),
            )
        except TimeoutError:
            return None, AiRewriteReport(
                verdict="unavailable",
                warning=f"the model did not answer within [ai] timeout = {cfg.timeout:g} s" + KEPT,
            )
        except (AiError, MissingOptionalLibraryError) as exc:
            warning = str(exc)
            if exc.code == "ai_unavailable" and "ollama serve" not in warning:
                warning += f" ({start_hint(cfg.host, cfg.model)})"
            log.warning("AI rewrite unavailable: %s", warning)
            return None, AiRewriteReport(verdict="unavailable", warning=warning + KEPT)
        record = _record(answer.reply)
        proposed_stats = stats(proposed)
        base = {
            "proposed_qasm": answer.text,
            "attempts": answer.attempts,
            "gates_proposed": proposed_stats.gates,
            "depth_proposed": proposed_stats.depth,
            **record,
        }
        # Seconds of numpy for wide circuits: off the event loop.
        result = await asyncio.to_thread(
            check_equivalence,
            circuit,
            proposed,
            max_qubits=cfg.max_check_qubits,
            time_limit=cfg.check_timeout,
        )
        if not result.equivalent:
            return None, AiRewriteReport(
                verdict="rejected",
                check=result.method,
                check_detail=result.detail,
                confidence=result.confidence,
                **base,
            )
        worse = not_worse(proposed_stats, stats(circuit))
        if worse is not None:
            return None, AiRewriteReport(
                verdict="rejected",
                check=result.method,
                check_detail=f"{result.detail}; but worse than the deterministic result: {worse}",
                confidence=result.confidence,
                **base,
            )
        return proposed, AiRewriteReport(
            verdict="accepted",
            check=result.method,
            check_detail=result.detail,
            confidence=result.confidence,
            **base,
        )
