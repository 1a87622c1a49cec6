"""llm_router.core.jsonsafe: strict JSON from figures that may be NaN or infinite."""

from __future__ import annotations

import json
import math

import numpy as np
from llm_router.core.jsonsafe import json_safe


def test_non_finite_numbers_become_strict_json() -> None:
    value = {"nan": math.nan, "inf": math.inf, "neg": -math.inf, "ok": 1.5, "flag": True, "none": None, "s": "nan"}
    assert json_safe(value) == {
        "nan": None,
        "inf": "inf",
        "neg": "-inf",
        "ok": 1.5,
        "flag": True,
        "none": None,
        "s": "nan",
    }
    nested = {"rows": [(1, math.nan), {"p50": [math.inf]}]}
    assert json.dumps(json_safe(nested), allow_nan=False) == '{"rows": [[1, null], {"p50": ["inf"]}]}'


def test_numpy_scalars_become_python_numbers() -> None:
    value = json_safe({"i": np.int64(3), "f": np.float32(0.5), "nan": np.float64("nan"), "inf": np.float32("-inf")})
    assert value == {"i": 3, "f": 0.5, "nan": None, "inf": "-inf"}
    assert type(value["i"]) is int and type(value["f"]) is float
    json.dumps(value, allow_nan=False)  # no `default=` needed
