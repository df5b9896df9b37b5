"""What the AI rewrite proposed, how it was checked, and the verdict (issue: AI assistant)."""

from __future__ import annotations

import msgspec


class AiRewriteReport(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The record of one AI rewrite attempt, carried by CircuitRewritten.

    Attributes:
        verdict: ``accepted``, ``rejected``, ``unavailable`` (no model server, or the
            AI is switched off) or ``skipped`` (the circuit is too large to send or check).
        model: Model name as the server reports it.
        model_digest: The model's digest.
        prompt_version: Version of the prompt files used.
        proposed_qasm: The circuit the model proposed (OpenQASM 3), if any.
        check: What decided: ``unitary`` (exact comparison), ``random_states``
            (randomized, see ``confidence``), ``structure`` (registers, parameters or
            final measurements differ), ``parse`` (no answer parsed) or ``none``.
        check_detail: What the check found, for a person.
        warning: Why the AI step did not run or was not used.
        confidence: The check's stated confidence (``exact``, or the bound of the
            randomized check).
        attempts: Requests made to the model (answers that did not parse were retried
            with the parser's error).
        gates_proposed: Gate count of the proposal (the deterministic result's is in
            the event's ``after`` when the proposal was rejected).
        depth_proposed: Depth of the proposal.
    """

    verdict: str
    model: str = ""
    model_digest: str = ""
    prompt_version: str = ""
    proposed_qasm: str = ""
    check: str = ""
    check_detail: str = ""
    warning: str = ""
    confidence: str = ""
    attempts: int = 0
    gates_proposed: int | None = None
    depth_proposed: int | None = None
