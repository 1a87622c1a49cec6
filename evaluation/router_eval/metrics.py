"""How well a confidence separates right from wrong answers: AUROC and accuracy at coverage.

Confidences are log-scale (<= 0); ``-inf`` (no tokens, an error) and NaN (unknown) both mean "least confident":
they rank below every finite confidence and tie with each other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

COVERAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _ranked_scores(confidence: Sequence[float]) -> np.ndarray:
    """Finite scores with the same order: -inf / NaN replaced by a value below every finite confidence."""
    conf = np.asarray(confidence, dtype=float)
    finite = np.isfinite(conf) | (conf == np.inf)
    floor = (conf[np.isfinite(conf)].min() - 1.0) if np.isfinite(conf).any() else 0.0
    return np.where(finite, np.where(conf == np.inf, np.finfo(float).max, conf), floor)


def auroc(confidence: Sequence[float], correct: Sequence[bool]) -> float | None:
    """P(a random right answer has a higher confidence than a random wrong one), ties counting 1/2.

    None when every answer is right or every answer is wrong (undefined).
    """
    from sklearn.metrics import roc_auc_score  # only the evaluation needs scikit-learn

    y = np.asarray(correct, dtype=bool)
    if len(y) != len(confidence):
        raise ValueError(f"{len(confidence)} confidences for {len(y)} outcomes")
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, _ranked_scores(confidence)))


def _order(confidence: Sequence[float]) -> np.ndarray:
    # most confident first; a stable sort keeps the file order among ties, so results are reproducible
    return np.argsort(-_ranked_scores(confidence), kind="stable")


def coverage_curve(confidence: Sequence[float], correct: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """(coverage k/n, accuracy of the k most confident answers) for k = 1..n."""
    y = np.asarray(correct, dtype=float)
    if len(y) == 0:
        return np.zeros(0), np.zeros(0)
    hits = np.cumsum(y[_order(confidence)])
    k = np.arange(1, len(y) + 1)
    return k / len(y), hits / k


def accuracy_at_coverage(
    confidence: Sequence[float], correct: Sequence[bool], coverages: Sequence[float] = COVERAGES
) -> dict[str, float]:
    """Accuracy of the ceil(c * n) most confident answers, for each coverage c (keys like "0.5")."""
    y = np.asarray(correct, dtype=float)
    if len(y) == 0:
        return {}
    ordered = y[_order(confidence)]
    out: dict[str, float] = {}
    for c in coverages:
        if not 0 < c <= 1:
            raise ValueError(f"coverage must be in (0, 1], got {c}")
        k = max(1, math.ceil(round(c * len(y), 9)))
        out[f"{c:g}"] = float(ordered[:k].mean())
    return out


def threshold_for_coverage(confidence: Sequence[float], coverage: float) -> float:
    """The confidence threshold that accepts about `coverage` of these answers (accept when confidence >= it)."""
    conf = np.sort(_ranked_scores(confidence))[::-1]
    k = max(1, math.ceil(round(coverage * len(conf), 9)))
    return float(conf[k - 1])
