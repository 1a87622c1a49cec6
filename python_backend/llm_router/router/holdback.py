"""The streaming router's hold-back of one tier call, Triton-free: keep the first tokens back, then stream or drop.

The first `size` tokens of a tier's answer are held back and scored; when the policy would escalate on that score
the call is abandoned before any of its text reaches the client (the next tier answers), otherwise the held text
is flushed and the rest streams as it comes. With `size` 0 every piece streams at once. With `size` None the whole
answer is held back until the caller settles it with a confidence of its own (a self-verifying tier: its verdict
needs the whole answer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from llm_router.core import Attempt


@dataclass
class HoldBack:
    """The hold-back state of one streaming tier call; `on_delta` is the tier call's piece hook."""

    tier: str
    size: int | None  # tokens held back before deciding (0: stream at once; None: all, until `settle`)
    score: Callable[[list[float]], float]  # confidence of the held-back tokens
    escalates: Callable[[Attempt], bool]  # would the policy call another tier after this attempt?
    emit: Callable[[str], None]  # send text of this tier to the client
    committed: bool = False  # this tier answers: its text streams
    sent: bool = False  # text of this tier has reached the client
    held_text: list[str] = field(default_factory=list)
    held_logprobs: list[float] = field(default_factory=list)
    dropped: Attempt | None = None  # the scored held-back answer, when the tier was dropped for it
    confidence: float | None = None  # the held-back tokens' confidence, when they decided to commit

    def __post_init__(self) -> None:
        self.committed = self.committed or self.size == 0

    def on_delta(self, text: str, logprobs: list[float]) -> bool:
        """One streamed piece; True abandons the call (the held-back tokens scored too low)."""
        if self.committed:
            self._send(text)
            return False
        self.held_text.append(text)
        self.held_logprobs.extend(logprobs)
        return self.size is not None and len(self.held_logprobs) >= self.size and self.settle()

    def settle(self, confidence: float | None = None) -> bool:
        """Score the held-back tokens (or take `confidence`, e.g. a verdict on the whole answer): True to drop this
        tier (`dropped` says why), False to commit and flush."""
        score = self.score(self.held_logprobs) if confidence is None else confidence
        attempt = Attempt(self.tier, "ok", confidence=score, output_tokens=len(self.held_logprobs))
        if self.escalates(attempt):
            self.dropped = attempt
            return True
        self.committed = True
        self.confidence = attempt.confidence
        self._send("".join(self.held_text))
        return False

    def _send(self, text: str) -> None:
        if text:
            self.sent = True
            self.emit(text)
