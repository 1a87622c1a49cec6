"""A tiny ONNX model (one dense layer) for smoke tests and benchmarks of the onnxruntime backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SMOKE_MODEL = "smoke_dense_onnx"
IN_FEATURES, OUT_FEATURES = 16, 8

BATCHED_CONFIG = f"""
name: "{SMOKE_MODEL}"
backend: "onnxruntime"
max_batch_size: 32
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ {IN_FEATURES} ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {OUT_FEATURES} ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
dynamic_batching {{ max_queue_delay_microseconds: 2000 }}
parameters {{ key: "intra_op_thread_count" value {{ string_value: "1" }} }}
"""


def dense_onnx_model(seed: int = 0) -> onnx.ModelProto:
    """y = tanh(x @ W + b), batch axis dynamic."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((IN_FEATURES, OUT_FEATURES)).astype(np.float32)
    bias = rng.standard_normal(OUT_FEATURES).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["INPUT0", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["z"]),
            helper.make_node("Tanh", ["z"], ["OUTPUT0"]),
        ],
        "dense",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", IN_FEATURES])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", OUT_FEATURES])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_smoke_repository(root: Path) -> Path:
    """A model repository with the small ONNX model that the stand-in backend serves."""
    model_dir = root / SMOKE_MODEL
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(BATCHED_CONFIG)
    onnx.save(dense_onnx_model(), str(model_dir / "1" / "model.onnx"))
    return root
