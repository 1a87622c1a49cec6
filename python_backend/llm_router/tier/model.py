"""Triton glue of a tier model (decoupled Python backend); the generation itself is llm_router.tier.generation.

Interface (TensorRT-LLM `tensorrt_llm_bls` names; max_batch_size > 0, so every tensor has a leading batch dim and
each request carries ONE prompt, shape [1, 1]):
  inputs  text_input BYTES [1], max_tokens INT32 [1], optional temperature FP32 [1], top_p FP32 [1], top_k INT32 [1],
          random_seed UINT64 [1], stop_words BYTES [-1], end_id INT32 [1], return_log_probs BOOL [1], stream BOOL [1]
  outputs text_output BYTES [-1] (batch, beam=1), output_log_probs FP32 [-1, -1] (batch, beam=1, tokens),
          cum_log_probs FP32 [-1] (batch, beam=1), input_tokens INT32 [1], output_tokens INT32 [1]
Decoupled: `stream` false -> exactly one response (whole text) with the FINAL flag; `stream` true -> one response
per text delta (its tokens' log-probs, running counts) and the FINAL flag on the last one. Errors: one error response
with the FINAL flag (INVALID_ARG for bad input). A cancelled request stops generating and gets CANCELLED + FINAL.

Differences from TensorRT-LLM's tensorrt_llm_bls (all_models/inflight_batcher_llm/tensorrt_llm_bls/config.pbtxt):
extra outputs input_tokens / output_tokens (token counts for cost); no bad_words, pad_id, penalties, beam_width,
context/generation logits, prompt tables or draft models; return_log_probs has no `reshape: { shape: [ ] }` (the
model accepts [1] or [1, 1]); greedy unless temperature > 0 (TRT-LLM: top_k 0 and top_p 0 mean greedy; here top_p must
be in (0, 1] and top_k 0 means no limit); stop words are matched on the decoded text and cut from text_output (OpenAI
`stop` semantics); text_output never contains the prompt; log-probs are of the raw model distribution.

Config parameters: model_dir (default "model"), execution_provider (CPUExecutionProvider | CUDAExecutionProvider),
io_binding (true: KV cache stays on the GPU), intra_op_thread_count, generation_threads (requests or batches
generated at the same time per instance), batching (true: the requests of one execute() call, gathered by the
dynamic batcher, are generated as one batch), max_tokens_limit.
"""

from __future__ import annotations

import faulthandler
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from llm_router.tier.generation import (
    CPU_PROVIDER,
    GenerationInputError,
    GenerationRequest,
    Generator,
    SamplingParams,
)
from llm_router.triton_utils import (
    REQUEST_KEEP_ALIVE,
    RequestError,
    error_response,
    invalid_arg,
    model_parameter,
    optional_input,
    scalar_input,
    text_input,
)

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def parse_sampling(request: Any) -> tuple[str, SamplingParams, bool, bool]:
    """(prompt, sampling params, stream, return_log_probs) of one request; raises RequestError."""
    text = text_input(request, "text_input")
    max_tokens = scalar_input(request, "max_tokens")
    if max_tokens is None:
        raise RequestError("missing required input 'max_tokens'")
    stop_array = optional_input(request, "stop_words")
    stop_words: list[str] = []
    for value in [] if stop_array is None else stop_array.reshape(-1).tolist():
        word = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        if word:
            stop_words.append(word)
    end_id = scalar_input(request, "end_id")
    seed = scalar_input(request, "random_seed")
    params = SamplingParams(
        max_tokens=int(max_tokens),
        temperature=float(scalar_input(request, "temperature", 0.0)),
        top_p=float(scalar_input(request, "top_p", 1.0)),
        top_k=int(scalar_input(request, "top_k", 0)),
        random_seed=None if seed is None else int(seed),
        stop_words=tuple(stop_words),
        end_ids=None if end_id is None else frozenset([int(end_id)]),
    )
    stream = bool(scalar_input(request, "stream", False))
    return_log_probs = bool(scalar_input(request, "return_log_probs", False))
    return text, params, stream, return_log_probs


@dataclass
class Pending:
    """One accepted request: where its responses go and what has been generated so far."""

    request: Any  # held until the FINAL response is sent, then by REQUEST_KEEP_ALIVE (see llm_router.triton_utils)
    sender: Any
    prompt_ids: list[int]
    params: SamplingParams
    stream: bool
    return_log_probs: bool
    pieces: list[str] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    unsent_logprobs: list[float] = field(default_factory=list)
    done: bool = False

    def response(self, text: str, logprobs: list[float]) -> pb_utils.InferenceResponse:
        values = np.array(logprobs if self.return_log_probs else [0.0] * len(logprobs), dtype=np.float32)
        cumulative = float(np.sum(self.logprobs, dtype=np.float64)) if self.return_log_probs else 0.0
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("text_output", np.array([[text.encode("utf-8")]], dtype=np.object_)),
                pb_utils.Tensor("output_log_probs", values.reshape(1, 1, -1)),
                pb_utils.Tensor("cum_log_probs", np.array([[cumulative]], dtype=np.float32)),
                pb_utils.Tensor("input_tokens", np.array([[len(self.prompt_ids)]], dtype=np.int32)),
                pb_utils.Tensor("output_tokens", np.array([[len(self.logprobs)]], dtype=np.int32)),
            ]
        )

    def send_error(self, response: pb_utils.InferenceResponse) -> None:
        if not self.done:
            self.done = True
            self.sender.send(response, flags=FINAL)


class TierModel:
    """A tier: validates requests in execute() and generates on worker threads (onnxruntime releases the GIL)."""

    def initialize(self, args: dict[str, Any]) -> None:
        faulthandler.enable(all_threads=True)  # a crash of this stub prints every thread's stack to Triton's log
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(
                f"{args['model_name']}: a tier must be decoupled (model_transaction_policy {{ decoupled: true }})"
            )
        version_dir = Path(args["model_repository"]) / args["model_version"]
        model_dir = version_dir / (model_parameter(config, "model_dir", "model") or "model")
        provider = model_parameter(config, "execution_provider", CPU_PROVIDER) or CPU_PROVIDER
        io_binding = (model_parameter(config, "io_binding", "false") or "false").lower() == "true"
        limit = model_parameter(config, "max_tokens_limit")
        device_id = int(args.get("model_instance_device_id") or 0)
        self.name = args["model_name"]
        self.generator = Generator(
            model_dir,
            provider=provider,
            io_binding=io_binding,
            intra_op_threads=int(model_parameter(config, "intra_op_thread_count", "1") or 1),
            device_id=device_id,
            max_tokens_limit=int(limit) if limit else None,
        )
        self.batching = (model_parameter(config, "batching", "false") or "false").lower() == "true"
        threads = int(model_parameter(config, "generation_threads", "4") or 4)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"{self.name}-gen")
        self.stopping = threading.Event()

    def execute(self, requests: list[Any]) -> None:
        accepted: list[Pending] = []
        for request in requests:
            sender = request.get_response_sender()
            try:
                text, params, stream, return_log_probs = parse_sampling(request)
                prompt_ids = self.generator.prepare(text, params)
            except (RequestError, GenerationInputError) as exc:
                sender.send(invalid_arg(f"{self.name}: {exc}"), flags=FINAL)
                REQUEST_KEEP_ALIVE.keep((request, sender))
                continue
            except Exception as exc:  # noqa: BLE001 - a decoupled model must always answer
                sender.send(error_response(exc), flags=FINAL)
                REQUEST_KEEP_ALIVE.keep((request, sender))
                continue
            accepted.append(Pending(request, sender, prompt_ids, params, stream, return_log_probs))
        if self.stopping.is_set():
            for pending in accepted:
                pending.send_error(self.unavailable())
                REQUEST_KEEP_ALIVE.keep((pending.request, pending.sender))
            return None
        if self.batching and len(accepted) > 1:
            self.pool.submit(self.generate, accepted)
        else:
            for pending in accepted:
                self.pool.submit(self.generate, [pending])
        return None

    def unavailable(self) -> pb_utils.InferenceResponse:
        return pb_utils.InferenceResponse(
            error=pb_utils.TritonError(f"{self.name} is shutting down", pb_utils.TritonError.UNAVAILABLE)
        )

    def generate(self, batch: list[Pending]) -> None:
        """Worker thread: generate for a batch of accepted requests and send their responses."""
        try:
            if self.stopping.is_set():
                raise RuntimeError("shutting down")
            jobs = [GenerationRequest(p.prompt_ids, p.params, is_cancelled=self._cancel_check(p)) for p in batch]
            for event in self.generator.generate_batch(jobs):
                pending = batch[event.index]
                if event.token_id is not None:
                    pending.logprobs.append(event.logprob)
                    pending.unsent_logprobs.append(event.logprob)
                pending.pieces.append(event.text_delta)
                if event.finish_reason == "cancelled":
                    pending.send_error(
                        pb_utils.InferenceResponse(
                            error=pb_utils.TritonError("request cancelled", pb_utils.TritonError.CANCELLED)
                        )
                    )
                elif event.finished:
                    pending.done = True
                    if pending.stream:
                        pending.sender.send(pending.response(event.text_delta, pending.unsent_logprobs), flags=FINAL)
                    else:
                        pending.sender.send(pending.response("".join(pending.pieces), pending.logprobs), flags=FINAL)
                elif pending.stream and event.text_delta:
                    pending.sender.send(pending.response(event.text_delta, pending.unsent_logprobs))
                    pending.unsent_logprobs = []
        except Exception as exc:  # noqa: BLE001 - every request must get its FINAL flag
            failure = self.unavailable() if self.stopping.is_set() else error_response(exc)
            for pending in batch:
                pending.send_error(failure)
        finally:
            for pending in batch:  # a row the generator never finished (should not happen): still close it
                pending.send_error(error_response(RuntimeError("generation ended without a result")))
                REQUEST_KEEP_ALIVE.keep((pending.request, pending.sender))

    def _cancel_check(self, pending: Pending):
        return lambda: self.stopping.is_set() or pending.sender.is_cancelled()

    def finalize(self) -> None:
        self.stopping.set()
        self.pool.shutdown(wait=True)


class TritonPythonModel(TierModel):
    """Name the Python backend looks for."""
