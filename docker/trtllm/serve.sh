#!/usr/bin/env bash
# Serves one TensorRT-LLM tier in nvcr.io/nvidia/tritonserver:24.10-trtllm-python-py3 (compose service `trtllm`).
# $TRTLLM_REPO: the repository written by `trtllm.py repo` (mounted read-only); $WORLD_SIZE: TP x PP ranks of the
# engine. One rank: tritonserver in the foreground. Several: one tritonserver per rank under mpirun (TensorRT-LLM's
# leader mode), each with its own Python-backend shared-memory prefix; rank 0 serves HTTP/gRPC/metrics on
# 8000/8001/8002, the others only load `tensorrt_llm` and take unused ports.
set -euo pipefail
repo="${TRTLLM_REPO:-/trtllm/repository}"
world="${WORLD_SIZE:-1}"
[ -f "${repo}/tensorrt_llm/config.pbtxt" ] || { echo "serve.sh: no TensorRT-LLM repository at ${repo}" >&2; exit 2; }
common=(--model-repository="${repo}" --disable-auto-complete-config --allow-metrics=true --allow-gpu-metrics=true)
if [ "${world}" -le 1 ]; then
  exec tritonserver "${common[@]}" --backend-config=python,shm-region-prefix-name=prefix0_
fi
args=(mpirun --allow-run-as-root)
for ((rank = 0; rank < world; rank++)); do
  [ "${rank}" -gt 0 ] && args+=(:)
  args+=(-n 1 tritonserver "${common[@]}" --backend-config=python,shm-region-prefix-name="prefix${rank}_")
  if [ "${rank}" -gt 0 ]; then
    off=$((100 * rank))
    args+=(--model-control-mode=explicit --load-model=tensorrt_llm
           --http-port=$((8000 + off)) --grpc-port=$((8001 + off)) --metrics-port=$((8002 + off)))
  fi
done
exec "${args[@]}"
