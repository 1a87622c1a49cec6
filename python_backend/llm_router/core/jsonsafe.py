"""Strict JSON from figures that may be NaN or infinite (json.dumps would write the invalid tokens NaN/Infinity).

The one such helper of the project: the router's route trace, router-bench's reports and the offline tools use it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def json_safe(value: Any) -> Any:
    """`value` with NaN as None and +/-infinity as "inf"/"-inf", through dicts, lists and tuples.

    numpy scalars become Python numbers (numpy registers them as numbers.Integral / numbers.Real), so the result
    needs no `default=` in json.dumps.
    """
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isfinite(number):
            return number
        return None if math.isnan(number) else ("-inf" if number < 0 else "inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
