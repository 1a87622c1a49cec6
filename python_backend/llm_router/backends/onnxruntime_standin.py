"""CPU stand-in for Triton's C++ onnxruntime backend, written as a Python-based backend.

It reads the same config.pbtxt as the real backend (inputs, outputs, max_batch_size, dynamic batching,
`default_model_filename`, the `intra_op_thread_count` / `inter_op_thread_count` parameters), so one model
repository serves here and in the NGC image. Requests that Triton batches run as one session call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from llm_router.triton_utils import (
    TRITON_TO_NUMPY,
    RequestError,
    error_response,
    model_parameter,
    shorten_gil_switch_interval,
)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of config.pbtxt (dims without the batch dimension)."""

    name: str
    dtype: Any
    dims: tuple[int, ...]
    optional: bool = False

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> TensorSpec:
        data_type = entry["data_type"]
        if data_type not in TRITON_TO_NUMPY:
            raise ValueError(f"tensor '{entry['name']}': data type {data_type} is not supported by the stand-in")
        dims = tuple(int(d) for d in entry.get("dims", []))
        if "reshape" in entry and entry["reshape"].get("shape") is not None:
            raise ValueError(f"tensor '{entry['name']}': reshape is not supported by the stand-in")
        return cls(entry["name"], TRITON_TO_NUMPY[data_type], dims, bool(entry.get("optional", False)))

    def check(self, array: np.ndarray, batched: bool) -> None:
        """RequestError naming the tensor when the array does not fit the spec."""
        expected_dtype = np.dtype(self.dtype)
        if array.dtype != expected_dtype and not (expected_dtype == np.object_ and array.dtype.kind in "OSU"):
            raise RequestError(f"input '{self.name}': expected data type {expected_dtype}, got {array.dtype}")
        shape = array.shape[1:] if batched else array.shape
        if batched and array.ndim == 0:
            raise RequestError(f"input '{self.name}': missing the batch dimension")
        if len(shape) != len(self.dims) or any(d != -1 and d != s for d, s in zip(self.dims, shape, strict=False)):
            full = ["-1", *map(str, self.dims)] if batched else list(map(str, self.dims))
            raise RequestError(f"input '{self.name}': expected shape [{', '.join(full)}], got {list(array.shape)}")


def session_options(model_config: dict[str, Any]) -> ort.SessionOptions:
    options = ort.SessionOptions()
    intra = model_parameter(model_config, "intra_op_thread_count")
    inter = model_parameter(model_config, "inter_op_thread_count")
    if intra is not None:
        options.intra_op_num_threads = int(intra)
    if inter is not None:
        options.inter_op_num_threads = int(inter)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class TritonPythonModel:
    """Serves `<model>/<version>/model.onnx` with onnxruntime's CPU provider."""

    def initialize(self, args: dict[str, str]) -> None:
        shorten_gil_switch_interval()
        self.model_config = json.loads(args["model_config"])
        self.max_batch_size = int(self.model_config.get("max_batch_size", 0))
        self.batched = self.max_batch_size > 0
        filename = self.model_config.get("default_model_filename") or "model.onnx"
        model_path = Path(args["model_repository"]) / args["model_version"] / filename
        if not model_path.exists():
            raise FileNotFoundError(
                f"{self.model_config['name']}: {model_path} not found (build it with `make models`)"
            )
        self.session = ort.InferenceSession(
            str(model_path),
            sess_options=session_options(self.model_config),
            providers=["CPUExecutionProvider"],
        )
        self.inputs = [TensorSpec.from_config(e) for e in self.model_config.get("input", [])]
        self.outputs = [TensorSpec.from_config(e) for e in self.model_config.get("output", [])]
        session_inputs = {i.name for i in self.session.get_inputs()}
        session_outputs = {o.name for o in self.session.get_outputs()}
        for spec in self.inputs:
            if spec.name not in session_inputs:
                raise ValueError(f"config input '{spec.name}' is not an input of {model_path.name}: {session_inputs}")
        for spec in self.outputs:
            if spec.name not in session_outputs:
                raise ValueError(
                    f"config output '{spec.name}' is not an output of {model_path.name}: {session_outputs}"
                )
        self.output_names = [o.name for o in self.outputs]

    def _request_inputs(self, request: Any) -> dict[str, np.ndarray]:
        feeds = {}
        for spec in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
            if tensor is None:
                if spec.optional:
                    continue
                raise RequestError(f"missing required input '{spec.name}'")
            array = tensor.as_numpy()
            spec.check(array, self.batched)
            feeds[spec.name] = array
        return feeds

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, results, strict=True))

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        # Valid requests whose non-batch shapes agree run together as one session call.
        groups: dict[tuple, list[tuple[int, dict[str, np.ndarray]]]] = {}
        for index, request in enumerate(requests):
            try:
                feeds = self._request_inputs(request)
            except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error response
                responses[index] = error_response(exc)
                continue
            if not self.batched:
                groups[("single", index)] = [(index, feeds)]
                continue
            key = tuple((name, array.shape[1:]) for name, array in sorted(feeds.items()))
            groups.setdefault(key, []).append((index, feeds))
        for members in groups.values():
            try:
                if len(members) == 1:
                    outputs = self._run(members[0][1])
                    per_request = [outputs]
                else:
                    names = members[0][1].keys()
                    joined = {n: np.concatenate([feeds[n] for _, feeds in members], axis=0) for n in names}
                    outputs = self._run(joined)
                    sizes = [next(iter(feeds.values())).shape[0] for _, feeds in members]
                    bounds = np.cumsum([0, *sizes])
                    per_request = [
                        {n: out[bounds[i] : bounds[i + 1]] for n, out in outputs.items()} for i in range(len(members))
                    ]
                for (index, _), outs in zip(members, per_request, strict=True):
                    tensors = [
                        pb_utils.Tensor(spec.name, np.ascontiguousarray(outs[spec.name]).astype(spec.dtype, copy=False))
                        for spec in self.outputs
                    ]
                    responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            except Exception as exc:  # noqa: BLE001 - a failed run fails its requests, never the server
                for index, _ in members:
                    responses[index] = error_response(exc)
        return responses

    def finalize(self) -> None:
        self.session = None
