"""The streaming router's hold-back (llm_router.router.holdback): hold, score, then stream or drop the tier."""

from __future__ import annotations

from llm_router.core import Attempt
from llm_router.router.holdback import HoldBack


def _holdback(size: int, threshold: float) -> tuple[HoldBack, list[str], list[Attempt]]:
    sent: list[str] = []
    scored: list[Attempt] = []

    def escalates(attempt: Attempt) -> bool:
        scored.append(attempt)
        return attempt.score < threshold

    hold = HoldBack("tier_small", size, score=lambda lp: sum(lp) / len(lp), escalates=escalates, emit=sent.append)
    return hold, sent, scored


def test_confident_tokens_are_flushed_then_streamed() -> None:
    hold, sent, scored = _holdback(size=3, threshold=-1.0)
    assert not hold.on_delta("Hel", [-0.1, -0.2])
    assert sent == [] and not hold.committed
    assert not hold.on_delta("lo", [-0.3])  # the third token: scored, committed, flushed
    assert sent == ["Hello"] and hold.committed and hold.sent
    assert scored == [Attempt("tier_small", "ok", confidence=hold.confidence, output_tokens=3)]
    assert not hold.on_delta(" world", [-5.0])  # after the commit: streamed, never scored again
    assert sent == ["Hello", " world"] and len(scored) == 1 and hold.dropped is None


def test_unconfident_tokens_drop_the_tier_before_any_text_is_sent() -> None:
    hold, sent, _ = _holdback(size=2, threshold=-1.0)
    assert not hold.on_delta("Hm", [-3.0])
    assert hold.on_delta("m", [-3.0])  # True: abandon the call
    assert sent == [] and not hold.sent and not hold.committed
    assert hold.dropped is not None and hold.dropped.confidence == -3.0 and hold.dropped.output_tokens == 2


def test_size_zero_streams_at_once() -> None:
    hold, sent, scored = _holdback(size=0, threshold=-1.0)
    assert hold.committed
    assert not hold.on_delta("a", [-9.0]) and not hold.on_delta("", [-9.0])
    assert sent == ["a"] and scored == []


def test_a_short_answer_is_settled_when_the_call_ends() -> None:
    hold, sent, _ = _holdback(size=8, threshold=-1.0)
    hold.on_delta("Yes.", [-0.2])
    assert not hold.settle() and sent == ["Yes."] and hold.confidence == -0.2
