"""What the router sends to a tier, Triton-free: a prompt (`text_input`) or a conversation (`messages`), and `raw`.

A conversation is an OpenAI-style JSON list of messages (`{"role": ..., "content": str or text parts}`), validated
by the tier's own parser (llm_router.tier.chat.parse_messages, so router and tier accept the same conversations) plus
the router's rules: at least one user message, and the last one has text (the classifier reads it). Each tier gets
the conversation in its own form: the tier's `messages` input (the tier applies its chat template), OpenAI chat
messages, or, for an endpoint that takes one string, the flattened text (`Role: content` per message, separated by
blank lines; a lone user message verbatim, as the OpenAI front renders it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llm_router.tier.chat import ChatInputError, parse_messages


class PromptError(ValueError):
    """The prompt or conversation cannot be routed; the message says what to fix."""


def check_printable(name: str, text: str) -> None:
    """PromptError when `text` has no printable character (only whitespace, NUL or other control characters)."""
    if not any(ch.isprintable() and not ch.isspace() for ch in text):
        what = "is empty" if not text.strip() else "has only control characters (e.g. NUL) and whitespace"
        raise PromptError(f"{name} {what}; send a prompt with printable text")


@dataclass(frozen=True)
class Conversation:
    """A validated conversation: the messages (content as one string each) and the JSON sent to tiers."""

    messages: tuple[dict[str, Any], ...]

    @property
    def payload(self) -> str:
        """The conversation as the tiers' `messages` input (content parts already joined)."""
        return json.dumps(list(self.messages), ensure_ascii=False)

    @property
    def last_user_text(self) -> str:
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")

    def flattened(self) -> str:
        """One prompt string for endpoints without a conversation input."""
        if len(self.messages) == 1 and self.messages[0]["role"] == "user":
            return self.messages[0]["content"]
        return "\n\n".join(f"{m['role'].capitalize()}: {m.get('content') or ''}" for m in self.messages)


def parse_conversation(payload: str) -> Conversation:
    """Validate the `messages` input; PromptError naming what is wrong (JSON, list, role, content, user message)."""
    try:
        messages = parse_messages(payload)
    except ChatInputError as exc:
        raise PromptError(str(exc)) from None
    users = [m for m in messages if m["role"] == "user"]
    if not users:
        roles = ", ".join(sorted({str(m["role"]) for m in messages}))
        raise PromptError(f"input 'messages' has no user message (roles: {roles}); the router routes on the last one")
    last = len(messages) - 1 - [m["role"] for m in reversed(messages)].index("user")
    check_printable(f"messages[{last}].content (the last user message)", str(users[-1].get("content") or ""))
    return Conversation(tuple(messages))


@dataclass(frozen=True)
class Prompt:
    """What one routed request asks the tiers: `text` (text_input) or a conversation, and `raw` (no chat template)."""

    text: str
    conversation: Conversation | None = None
    raw: bool = False

    @property
    def classify_text(self) -> str:
        """What the intent classifier reads: the prompt, or the conversation's last user message."""
        return self.conversation.last_user_text if self.conversation is not None else self.text

    @property
    def flat_text(self) -> str:
        """The prompt as one string (for endpoints without a conversation input, and token estimates)."""
        return self.conversation.flattened() if self.conversation is not None else self.text

    @property
    def messages(self) -> str | None:
        return None if self.conversation is None else self.conversation.payload
