"""Small helpers shared by the project's Python-backend models (they import triton_python_backend_utils)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

# Triton config data types <-> numpy dtypes.
TRITON_TO_NUMPY: dict[str, Any] = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


class RequestError(ValueError):
    """Bad input from a client: becomes an INVALID_ARG response carrying the message."""


def invalid_arg(message: str) -> pb_utils.InferenceResponse:
    """An error response with Triton's INVALID_ARG code."""
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))


def internal_error(message: str) -> pb_utils.InferenceResponse:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL))


def error_response(exc: BaseException) -> pb_utils.InferenceResponse:
    """INVALID_ARG for RequestError, INTERNAL for anything else."""
    if isinstance(exc, RequestError):
        return invalid_arg(str(exc))
    return internal_error(f"{type(exc).__name__}: {exc}")


def optional_input(request: Any, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def required_input(request: Any, name: str) -> np.ndarray:
    array = optional_input(request, name)
    if array is None:
        raise RequestError(f"missing required input '{name}'")
    return array


def decode_text(value: Any, what: str) -> str:
    """A BYTES tensor element as text; RequestError naming `what` when it is not UTF-8 text."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"{what} is not valid UTF-8 (byte {exc.start})") from None
    if not isinstance(value, str):
        raise RequestError(f"{what} must be BYTES (a UTF-8 string), got {type(value).__name__}")
    return value


def text_input(request: Any, name: str = "text_input", allow_empty: bool = False) -> str:
    """One UTF-8 string from a BYTES input of one element (any leading batch dims of size 1)."""
    array = required_input(request, name)
    if array.size != 1:
        raise RequestError(f"input '{name}' must hold exactly one string, got shape {list(array.shape)}")
    value = decode_text(array.reshape(-1)[0], f"input '{name}'")
    if not allow_empty and not value.strip():
        raise RequestError(f"input '{name}' is empty; send a non-empty prompt")
    return value


def scalar_input(request: Any, name: str, default: Any = None) -> Any:
    """A one-element optional input as a Python scalar (default when absent)."""
    array = optional_input(request, name)
    if array is None:
        return default
    if array.size != 1:
        raise RequestError(f"input '{name}' must hold one value, got shape {list(array.shape)}")
    value = array.reshape(-1)[0]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="strict")
    return value.item() if hasattr(value, "item") else value


def request_parameters(request: Any) -> dict[str, Any]:
    """The request's parameters (sent by clients as `parameters=`) as a dict."""
    raw = request.parameters()
    if not raw:
        return {}
    try:
        params = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"malformed request parameters: {exc}") from None
    if not isinstance(params, dict):
        raise RequestError("request parameters must be a JSON object")
    return params


def bytes_tensor(name: str, values: list[str] | str, shape: tuple[int, ...] | None = None) -> pb_utils.Tensor:
    if isinstance(values, str):
        values = [values]
    array = np.array([v.encode("utf-8") for v in values], dtype=np.object_)
    if shape is not None:
        array = array.reshape(shape)
    return pb_utils.Tensor(name, array)


def model_parameter(model_config: dict[str, Any], key: str, default: str | None = None) -> str | None:
    """A `parameters { key: ... value { string_value: ... } }` entry of config.pbtxt."""
    entry = model_config.get("parameters", {}).get(key)
    if entry is None:
        return default
    value = entry.get("string_value", default)
    return value if value not in ("", None) else default


GIL_SWITCH_INTERVAL_S = 0.0005
GIL_SWITCH_INTERVAL_ENV = "LLM_ROUTER_GIL_SWITCH_INTERVAL_S"


def shorten_gil_switch_interval(seconds: float = GIL_SWITCH_INTERVAL_S) -> None:
    """Hand the GIL between threads every `seconds` instead of Python's default 5 ms.

    A stub process has several threads (the stub's own, an asyncio loop, BLS reader threads); with the default
    interval a thread woken by a response can wait up to 5 ms for the GIL. The environment variable
    LLM_ROUTER_GIL_SWITCH_INTERVAL_S overrides the value (0 keeps Python's default), e.g. to measure its effect.
    """
    override = os.environ.get(GIL_SWITCH_INTERVAL_ENV)
    if override is not None:
        seconds = float(override)
    if seconds > 0:
        sys.setswitchinterval(seconds)


class KeepAlive:
    """Holds objects the stub's C++ side also references for `grace_s`, then lets them go from a Python thread.

    Triton 24.10's stub drops its own references to some Python-owned objects on C++ threads that do not hold the
    GIL: a finished decoupled BLS response iterator (Stub::SendCleanupId erases it from response_iterator_map_),
    and a decoupled model's requests once their FINAL response is sent. When that is the last reference, the
    object - and the numpy arrays cached in its tensors by as_numpy() - is freed without the GIL and the heap is
    corrupted (pymalloc segfaults: the router's stub within 250-3,000 requests at concurrency 32, a tier's stub
    rarely under perf_analyzer streaming). Keeping a reference here for a few seconds makes ours the last one,
    released by a Python thread holding the GIL.
    """

    def __init__(self, grace_s: float = 10.0) -> None:
        self.grace_s = grace_s
        self._held: deque[tuple[float, object]] = deque()
        self._lock = threading.Lock()

    def keep(self, obj: object) -> None:
        now = time.monotonic()
        expired = []
        with self._lock:
            self._held.append((now, obj))
            while self._held and now - self._held[0][0] > self.grace_s:
                expired.append(self._held.popleft())
        del expired  # released here, in a Python thread, outside the lock

    def __len__(self) -> int:
        return len(self._held)


KEEP_ALIVE = KeepAlive(10.0)  # BLS response iterators and their responses (one holder per stub process)
# Requests of a decoupled model after their FINAL response: their input tensors live in the stub's shm region, so
# they are held only briefly (the stub's own reference goes within milliseconds of the FINAL flag).
REQUEST_KEEP_ALIVE = KeepAlive(2.0)
