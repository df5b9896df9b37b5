"""What the AI rewrite proposed, how it was checked, and the verdict (issue: AI assistant)."""

from __future__ import annotations

import msgspec


class AiRewriteReport(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The record of one AI rewrite attempt, carried by CircuitRewritten.

    Attributes:
        verdict: ``accepted``, ``rejected`` or ``unavailable`` (no model server).
        model: Model name as the server reports it.
        model_digest: The model's digest.
        prompt_version: Version of the prompt files used.
        proposed_qasm: The circuit the model proposed (OpenQASM 3), if any.
        check: Name of the equivalence check (``unitary``, ``statevector``,
            ``random_states``).
        check_detail: What the check found, for a person.
        warning: Why the AI step did not run or was not used.
    """

    verdict: str
    model: str = ""
    model_digest: str = ""
    prompt_version: str = ""
    proposed_qasm: str = ""
    check: str = ""
    check_detail: str = ""
    warning: str = ""
