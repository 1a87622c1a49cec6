"""CPU stand-in for Triton's onnxruntime backend, as a Python-based backend (logic in llm_router)."""

from llm_router.backends.onnxruntime_standin import TritonPythonModel  # noqa: F401
