"""Tier models: ONNX decoder generation (generation.py, Triton-free) and its Triton glue (model.py)."""
