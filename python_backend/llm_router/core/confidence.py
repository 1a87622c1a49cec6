"""Confidence functions: one number per answer from its per-token log-probabilities (higher = more confident).

Every function takes the sequence of per-token log-probs (each <= 0) as its first argument and keyword
parameters after it (e.g. ``k``). An EMPTY sequence means the tier produced no token to judge: every built-in
function returns ``-inf`` for it, so an empty answer is never accepted on confidence (it escalates, or is
accepted only when no higher tier remains). NaN log-probs are a caller bug and raise ``ValueError``.

More functions are added with ``@register_confidence("name")``; the policy file refers to them by name.

Verification functions (``@register_confidence("name", needs_verification=True)``, e.g. ``self_verify``) score
a second call instead: the caller asks the tier whether its own answer is correct
(``llm_router.core.self_verify.build_verification_prompt``) and passes the resulting ``Verdict`` as the first
argument. ``needs_verification(name)`` tells a caller which kind a policy names.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

from llm_router.core.self_verify import Verdict, verdict_score

ConfidenceFunction = Callable[..., float]

CONFIDENCE_FUNCTIONS: dict[str, ConfidenceFunction] = {}
VERIFICATION_FUNCTIONS: set[str] = set()  # names whose first argument is a Verdict, not the answer's log-probs

NO_TOKENS_CONFIDENCE = -math.inf


def register_confidence(
    name: str, *, needs_verification: bool = False
) -> Callable[[ConfidenceFunction], ConfidenceFunction]:
    """Decorator: register a confidence function under `name` (a name can be registered only once).

    `needs_verification`: the function scores the tier's verdict on its own answer (a `Verdict`), not the
    answer's log-probs.
    """

    def wrap(fn: ConfidenceFunction) -> ConfidenceFunction:
        if name in CONFIDENCE_FUNCTIONS and CONFIDENCE_FUNCTIONS[name] is not fn:
            raise ValueError(f"confidence function {name!r} is already registered")
        CONFIDENCE_FUNCTIONS[name] = fn
        if needs_verification:
            VERIFICATION_FUNCTIONS.add(name)
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


@register_confidence("self_verify", needs_verification=True)
def self_verify(verdict: Verdict) -> float:
    """log P("Yes") when the tier, asked whether its own answer is correct, says Yes; an upper bound on it
    otherwise (llm_router.core.self_verify). An empty answer has no verdict: pass NO_VERDICT (-> -inf)."""
    if not isinstance(verdict, Verdict):
        raise ValueError(
            "self_verify scores the tier's verdict on its own answer (a Verdict from a second, verification "
            f"call), not the answer's log-probs; got {type(verdict).__name__}"
        )
    return verdict_score(verdict)


def needs_verification(name: str) -> bool:
    """True when the function `name` scores a verification call's Verdict (the caller must make that call)."""
    get_confidence_function(name)
    return name in VERIFICATION_FUNCTIONS


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
    probe: Any = Verdict("yes", -0.1) if name in VERIFICATION_FUNCTIONS else [-0.1]
    try:
        inspect.signature(fn).bind(probe, **params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for {name}: {exc}") from None
    fn(probe, **params)  # lets the function check its own parameter values


def compute_confidence(name: str, logprobs: Sequence[float] | Verdict, params: dict[str, Any] | None = None) -> float:
    """Apply the registered confidence function `name` with `params` to `logprobs` (a Verdict for a
    verification function; an empty answer's verification is NO_VERDICT)."""
    return float(get_confidence_function(name)(logprobs, **(params or {})))
