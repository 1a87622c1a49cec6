"""Self-verification confidence: ask the tier whether its own answer is correct and score its "Yes".

The signal Zellinger & Thomson ("Rational Tuning of LLM Cascades via Probabilistic Modeling", 2025) use for
TriviaQA and GSM8K: after the tier answered, it is called a second time with `build_verification_prompt`
(question + its answer + "Is the proposed answer correct? Answer Yes or No."), greedily, for a few tokens, with
log-probs, and its verdict becomes the confidence: an estimate of log P("Yes").

A tier returns the log-probs of the tokens it generated only (``return_log_probs``), not of arbitrary tokens, so
log P("Yes") is known exactly only when the tier's verdict is "Yes". The score is therefore:

- verdict "Yes" with log-prob ``lp``  ->  ``lp`` (exact: log P("Yes"));
- any other verdict ("No", or something else) with log-prob ``lp`` -> ``min(lp, log(1 - exp(lp)))``: the
  tightest upper bound on log P("Yes") that this one number gives. "Yes" and the verdict are different tokens, so
  P("Yes") <= 1 - P(verdict); greedy decoding picked the verdict, so P("Yes") <= P(verdict) as well.
- no verdict (empty answer) -> ``-inf`` (never confident).

So a confident "Yes" scores near 0, an unsure verdict near log 0.5, a confident "No" far below. The verdict is
the first non-blank piece of the verification answer; ``lp`` is the sum of that piece's token log-probs
(usually one token). Everything here is pure Python: no Triton.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

VERIFY_MAX_TOKENS = 4  # enough for "Yes"/"No" plus punctuation; the verdict is the first non-blank piece
MAX_ANSWER_CHARS = 600  # the answer is cut to this many characters in the verification prompt
_WORD = re.compile(r"[A-Za-z]+")

VerdictLabel = Literal["yes", "no", "other"]


@dataclass(frozen=True)
class Verdict:
    """The tier's verdict on its own answer: `label` and the log-prob of the piece that carries it (<= 0)."""

    label: VerdictLabel
    logprob: float

    def __post_init__(self) -> None:
        if math.isnan(self.logprob) or self.logprob > 1e-6:
            raise ValueError(f"a verdict's log-prob must be <= 0, got {self.logprob!r}")


NO_VERDICT = Verdict("other", -math.inf)


def build_verification_prompt(question: str, answer: str, max_answer_chars: int = MAX_ANSWER_CHARS) -> str:
    """The prompt that asks the tier whether `answer` (its own) answers `question` correctly."""
    answer = answer.strip()
    if len(answer) > max_answer_chars:
        answer = answer[:max_answer_chars] + " ..."
    return (
        f"Question: {question.strip()}\nProposed answer: {answer}\n\nIs the proposed answer correct? Answer Yes or No."
    )


def _label(text: str) -> VerdictLabel:
    word = _WORD.search(text)
    first = word.group(0).lower() if word else ""
    if first == "yes":
        return "yes"
    if first == "no":
        return "no"
    return "other"


def verdict_from_pieces(pieces: Iterable[tuple[str, Sequence[float]]]) -> Verdict:
    """The verdict from a streamed verification answer: (text delta, its tokens' log-probs) pairs, in order.

    The verdict is the first piece with non-blank text; its log-prob is the sum of that piece's log-probs.
    """
    for text, logprobs in pieces:
        if text.strip():
            values = [float(x) for x in logprobs]
            if any(math.isnan(x) for x in values):
                raise ValueError("log-probs contain NaN")
            # a piece without log-probs cannot be scored: count it as no verdict rather than a certain one
            return Verdict(_label(text), min(0.0, sum(values))) if values else NO_VERDICT
    return NO_VERDICT


def verdict_from_text(text: str, logprobs: Sequence[float]) -> Verdict:
    """The verdict from a whole (non-streamed) answer: the first token is taken to carry the verdict.

    Exact when the answer starts with the verdict word (no leading blank token); prefer `verdict_from_pieces`.
    """
    if not text.strip() or not logprobs:
        return NO_VERDICT
    return verdict_from_pieces([(text, [logprobs[0]])])


def verdict_score(verdict: Verdict) -> float:
    """log P("Yes") for a "Yes" verdict, else the upper bound min(lp, log(1 - exp(lp))) (see the module doc)."""
    lp = verdict.logprob
    if verdict.label == "yes" or lp == -math.inf:
        return lp
    return min(lp, math.log1p(-math.exp(lp)) if lp < 0 else -math.inf)
