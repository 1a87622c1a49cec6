"""Python-based Triton backends that this project installs into the local server's backend directory."""

from pathlib import Path

# Copied to <backend-dir>/onnxruntime/model.py by router-serve: serves models whose config says
# `backend: "onnxruntime"` on CPU where the C++ onnxruntime backend is absent (the pytriton wheel).
ONNXRUNTIME_STANDIN_MODEL_PY = Path(__file__).parent / "onnxruntime" / "model.py"
