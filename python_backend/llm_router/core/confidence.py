"""Confidence functions: one number per answer from its per-token log-probabilities (higher = more confident).

Every function takes the sequence of per-token log-probs (each <= 0) as its first argument and keyword
parameters after it (e.g. ``k``). An EMPTY sequence means the tier produced no token to judge: every built-in
function returns ``-inf`` for it, so an empty answer is never accepted on confidence (it escalates, or is
accepted only when no higher tier remains). NaN log-probs are a caller bug and raise ``ValueError``.

More functions are added with ``@register_confidence("name")``; the policy file refers to them by name.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

ConfidenceFunction = Callable[..., float]

CONFIDENCE_FUNCTIONS: dict[str, ConfidenceFunction] = {}

NO_TOKENS_CONFIDENCE = -math.inf


def register_confidence(name: str) -> Callable[[ConfidenceFunction], ConfidenceFunction]:
    """Decorator: register a confidence function under `name` (a name can be registered only once)."""

    def wrap(fn: ConfidenceFunction) -> ConfidenceFunction:
        if name in CONFIDENCE_FUNCTIONS and CONFIDENCE_FUNCTIONS[name] is not fn:
            raise ValueError(f"confidence function {name!r} is already registered")
        CONFIDENCE_FUNCTIONS[name] = fn
        return fn

    return wrap


def _checked(logprobs: Sequence[float]) -> list[float]:
    values = [float(x) for x in logprobs]
    if any(math.isnan(x) for x in values):
        raise ValueError("log-probs contain NaN")
    return values


@register_confidence("mean_logprob")
def mean_logprob(logprobs: Sequence[float]) -> float:
    """Mean per-token log-prob (log of the geometric mean token probability)."""
    values = _checked(logprobs)
    return sum(values) / len(values) if values else NO_TOKENS_CONFIDENCE


@register_confidence("min_logprob")
def min_logprob(logprobs: Sequence[float]) -> float:
    """Log-prob of the least likely token: one shaky token makes the whole answer unsure."""
    values = _checked(logprobs)
    return min(values) if values else NO_TOKENS_CONFIDENCE


@register_confidence("first_k_mean")
def first_k_mean(logprobs: Sequence[float], k: int = 8) -> float:
    """Mean log-prob over the first `k` tokens (what a streaming router can score after a hold-back of k)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    values = _checked(logprobs)[:k]
    return sum(values) / len(values) if values else NO_TOKENS_CONFIDENCE


def get_confidence_function(name: str) -> ConfidenceFunction:
    """The registered function called `name`; ValueError listing the known names otherwise."""
    try:
        return CONFIDENCE_FUNCTIONS[name]
    except KeyError:
        known = ", ".join(sorted(CONFIDENCE_FUNCTIONS))
        raise ValueError(f"unknown confidence function {name!r} (known: {known})") from None


def check_confidence_params(name: str, params: dict[str, Any]) -> None:
    """Raise ValueError if `params` are not valid keyword arguments for the function `name`."""
    fn = get_confidence_function(name)
    try:
        inspect.signature(fn).bind([-0.1], **params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for {name}: {exc}") from None
    fn([-0.1], **params)  # lets the function check its own parameter values


def compute_confidence(name: str, logprobs: Sequence[float], params: dict[str, Any] | None = None) -> float:
    """Apply the registered confidence function `name` with `params` to `logprobs`."""
    return float(get_confidence_function(name)(logprobs, **(params or {})))
