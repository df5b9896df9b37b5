"""Versioned prompt files: ``qbus/ai/prompts/<name>.md``.

A prompt file starts with ``version: N`` and a ``---`` line; the system prompt follows,
then optional few-shot turns, each introduced by a line ``=== user`` or
``=== assistant``. The recorded prompt version is ``<name>@<N>+<sha256[:8] of the
file>``, so an edit that forgets to bump ``N`` still shows up in every event.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

import msgspec

from qbus.errors import ConfigError


class Prompt(msgspec.Struct, frozen=True, kw_only=True):
    """One prompt: the system text and few-shot turns.

    Attributes:
        name: File stem (``qasm``, ``rewrite``, ``explain``, ``plan``).
        version: ``<name>@<N>+<hash>``: what events record.
        system: The system message.
        examples: Few-shot turns as ``(role, content)`` pairs, in order.
    """

    name: str
    version: str
    system: str
    examples: tuple[tuple[str, str], ...] = ()

    def messages(self, user: str) -> list[dict[str, str]]:
        """Chat messages: system, the few-shot turns, then ``user``."""
        out = [{"role": "system", "content": self.system}]
        out.extend({"role": role, "content": content} for role, content in self.examples)
        out.append({"role": "user", "content": user})
        return out


@functools.cache
def load_prompt(name: str) -> Prompt:
    """Read ``prompts/<name>.md`` from the package.

    Raises:
        ConfigError: The file is missing or malformed.
    """
    try:
        raw = resources.files("qbus.ai").joinpath("prompts", f"{name}.md").read_text("utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"no prompt file prompts/{name}.md in qbus.ai") from exc
    head, sep, body = raw.partition("\n---\n")
    if not sep or not head.startswith("version:"):
        raise ConfigError(f"prompts/{name}.md must start with 'version: N' and a '---' line")
    number = head.removeprefix("version:").strip()
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    chunks: list[tuple[str, list[str]]] = [("system", [])]
    for line in body.splitlines():
        if line in ("=== user", "=== assistant"):
            chunks.append((line.removeprefix("=== "), []))
        else:
            chunks[-1][1].append(line)
    texts = [(role, "\n".join(lines).strip()) for role, lines in chunks]
    return Prompt(
        name=name,
        version=f"{name}@{number}+{digest}",
        system=texts[0][1],
        examples=tuple(texts[1:]),
    )
