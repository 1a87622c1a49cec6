"""Triton glue of a tier model (decoupled Python backend); the generation itself is llm_router.tier.generation.

Interface (TensorRT-LLM `tensorrt_llm_bls` names; max_batch_size > 0, so every tensor has a leading batch dim and
each request carries ONE prompt, shape [1, 1]):
  inputs  text_input BYTES [1], max_tokens INT32 [1], optional messages BYTES [1], raw BOOL [1], temperature FP32 [1],
          top_p FP32 [1], top_k INT32 [1], random_seed UINT64 [1], stop_words BYTES [-1], end_id INT32 [1],
          return_log_probs BOOL [1], stream BOOL [1]
  outputs text_output BYTES [-1] (batch, beam=1), output_log_probs FP32 [-1, -1] (batch, beam=1, tokens),
          cum_log_probs FP32 [-1] (batch, beam=1), input_tokens INT32 [1], output_tokens INT32 [1]
Decoupled: `stream` false -> exactly one response (whole text) with the FINAL flag; `stream` true -> one response
per text delta (its tokens' log-probs, running counts) and the FINAL flag on the last one. Errors: one error response
with the FINAL flag (INVALID_ARG for bad input). A cancelled request stops generating and gets CANCELLED + FINAL.

Prompts and chat templates (llm_router.tier.chat): `messages` holds an OpenAI-style conversation as one JSON string
(`[{"role": "system"|"developer"|"user"|"assistant"|"tool", "content": "..." or [{"type": "text", "text": "..."}]}]`)
and `text_input` is then sent empty. A tier whose tokenizer has a chat template renders the conversation with it, and
a plain `text_input` as one user message; `raw` true sends `text_input` untouched. A tier without a template takes
`text_input` as it is (and a conversation only if it is one user message). `input_tokens` counts the templated prompt.
`end_id` -1 never matches: the tier generates `max_tokens` tokens (TensorRT-LLM benchmarks' ignore_eos).

Differences from TensorRT-LLM's tensorrt_llm_bls (all_models/inflight_batcher_llm/tensorrt_llm_bls/config.pbtxt):
extra inputs messages / raw (a conversation, and opting out of the chat template); extra outputs input_tokens /
output_tokens (token counts for cost); no bad_words, pad_id, penalties, beam_width,
context/generation logits, prompt tables or draft models; return_log_probs has no `reshape: { shape: [ ] }` (the
model accepts [1] or [1, 1]); greedy unless temperature > 0 (TRT-LLM: top_k 0 and top_p 0 mean greedy; here top_p must
be in (0, 1] and top_k 0 means no limit); stop words are matched on the decoded text and cut from text_output (OpenAI
`stop` semantics); text_output never contains the prompt; log-probs are of the raw model distribution.

Config parameters: model_dir (default "model"), execution_provider (CPUExecutionProvider | CUDAExecutionProvider),
io_binding (true: KV cache stays on the GPU), intra_op_thread_count, batching (true: in-flight batching - one decode
loop per instance, a request joins the running batch at its next step and leaves it when done; false: each request
generated alone on one of `generation_threads` worker threads), inflight_max_rows (rows of the in-flight batch,
default max_batch_size; more requests wait for a free row), inflight_gather_ms (default 50: when the batch is empty
and rows finished since, how long the decode loop waits for their callers' next requests so that it prefills them
together - see InflightScheduler), prefix_cache (default true: the KV cache of the chat template's head, e.g. its
default system prompt, is computed once and templated prompts are prefilled from after it), response_threads
(threads sending responses, default 2), generation_threads, max_tokens_limit.
"""

from __future__ import annotations

import faulthandler
import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
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
    InflightScheduler,
    SamplingParams,
    SchedulerStopped,
    TokenEvent,
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
# How often a generating request asks Triton whether its client cancelled it: each ask is a round trip from the stub
# to the Triton process, too dear to make for every row at every step.
CANCEL_POLL_S = 0.02
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompt:
    """What a request asks to generate from: text_input, or a conversation (`messages` JSON), and the raw switch."""

    text: str
    messages: str | None
    raw: bool


def parse_sampling(request: Any) -> tuple[Prompt, SamplingParams, bool, bool]:
    """(prompt, sampling params, stream, return_log_probs) of one request; raises RequestError."""
    messages = optional_input(request, "messages")
    conversation = None if messages is None else text_input(request, "messages", allow_empty=True)
    # text_input stays required (TensorRT-LLM's interface); it is sent empty beside a conversation
    text = text_input(request, "text_input", allow_empty=conversation is not None)
    raw = bool(scalar_input(request, "raw", False))
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
    return Prompt(text, conversation, raw), params, stream, return_log_probs


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
    failed: bool = False  # sending failed (the client is gone): generation for it stops

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

    def on_event(self, event: TokenEvent) -> None:
        """Send what one generation event makes final (called on the generating thread)."""
        if event.token_id is not None:
            self.logprobs.append(event.logprob)
            self.unsent_logprobs.append(event.logprob)
        self.pieces.append(event.text_delta)
        if event.finish_reason == "cancelled":
            self.send_error(
                pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("request cancelled", pb_utils.TritonError.CANCELLED)
                )
            )
        elif event.finished:
            self.done = True
            if self.stream:
                self.sender.send(self.response(event.text_delta, self.unsent_logprobs), flags=FINAL)
            else:
                self.sender.send(self.response("".join(self.pieces), self.logprobs), flags=FINAL)
            REQUEST_KEEP_ALIVE.keep((self.request, self.sender))
        elif self.stream and event.text_delta:
            self.sender.send(self.response(event.text_delta, self.unsent_logprobs))
            self.unsent_logprobs = []

    def send_error(self, response: pb_utils.InferenceResponse) -> None:
        if not self.done:
            self.done = True
            self.sender.send(response, flags=FINAL)
            REQUEST_KEEP_ALIVE.keep((self.request, self.sender))


class Responder:
    """Sends responses on threads of their own, so that decoding goes on while a send waits for the Triton process.

    A decoupled send is a round trip from the stub to the Triton process; on the decode thread it would stall every
    row of the batch. Each request is bound to one of the threads, so its responses keep their order.
    """

    def __init__(self, name: str, threads: int = 2) -> None:
        self._queues: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(max(1, threads))]
        self._next = itertools.cycle(range(len(self._queues)))
        self._threads = [
            threading.Thread(target=self._run, args=(q,), name=f"{name}-send{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]
        for thread in self._threads:
            thread.start()

    def lane(self) -> int:
        """A thread for a new request."""
        return next(self._next)

    def put(self, lane: int, pending: Pending, call: Callable[..., None], *args: Any) -> None:
        self._queues[lane].put((pending, call, args))

    def _run(self, jobs: queue.SimpleQueue) -> None:
        while (job := jobs.get()) is not None:
            pending, call, args = job
            try:
                call(*args)
            except Exception:  # noqa: BLE001 - the client is gone; stop generating for it
                log.exception("sending a response failed")
                pending.failed = True

    def stop(self) -> None:
        """Send what is queued, then end the threads."""
        for jobs in self._queues:
            jobs.put(None)
        for thread in self._threads:
            thread.join()


class TierModel:
    """A tier: validates requests in execute() and generates on a decode thread (onnxruntime releases the GIL)."""

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
            prefix_cache=(model_parameter(config, "prefix_cache", "true") or "true").lower() == "true",
        )
        if self.generator.prefix_cache is not None:
            self.generator.prefix_cache.past(1)  # computed at load, not by the first request
        self.stopping = threading.Event()
        self.responder = Responder(self.name, int(model_parameter(config, "response_threads", "2") or 2))
        self.scheduler: InflightScheduler | None = None
        self.pool: ThreadPoolExecutor | None = None
        if (model_parameter(config, "batching", "true") or "true").lower() == "true":
            rows = model_parameter(config, "inflight_max_rows") or max(1, int(config.get("max_batch_size") or 1))
            gather_ms = float(model_parameter(config, "inflight_gather_ms", "50") or 50)
            self.scheduler = InflightScheduler(
                self.generator, max_rows=int(rows), name=self.name, gather_s=gather_ms / 1000
            )
        else:
            threads = int(model_parameter(config, "generation_threads", "4") or 4)
            self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"{self.name}-gen")

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                prompt, params, stream, return_log_probs = parse_sampling(request)
                prompt_ids = self.generator.prepare(prompt.text, params, messages=prompt.messages, raw=prompt.raw)
            except (RequestError, GenerationInputError) as exc:
                sender.send(invalid_arg(f"{self.name}: {exc}"), flags=FINAL)
                REQUEST_KEEP_ALIVE.keep((request, sender))
                continue
            except Exception as exc:  # noqa: BLE001 - a decoupled model must always answer
                sender.send(error_response(exc), flags=FINAL)
                REQUEST_KEEP_ALIVE.keep((request, sender))
                continue
            pending = Pending(request, sender, prompt_ids, params, stream, return_log_probs)
            if self.stopping.is_set():
                pending.send_error(self.unavailable())
            elif self.scheduler is not None:
                job = GenerationRequest(prompt_ids, params, is_cancelled=self._cancel_check(pending))
                lane = self.responder.lane()
                try:
                    self.scheduler.submit(
                        job,
                        lambda event, p=pending, lane=lane: self.responder.put(lane, p, p.on_event, event),
                        lambda exc, p=pending, lane=lane: self.responder.put(lane, p, self._fail, p, exc),
                    )
                except SchedulerStopped:
                    pending.send_error(self.unavailable())
            else:
                assert self.pool is not None
                self.pool.submit(self.generate_alone, pending)
        return None

    def unavailable(self) -> pb_utils.InferenceResponse:
        return pb_utils.InferenceResponse(
            error=pb_utils.TritonError(f"{self.name} is shutting down", pb_utils.TritonError.UNAVAILABLE)
        )

    def _fail(self, pending: Pending, exc: BaseException) -> None:
        stopped = self.stopping.is_set() or isinstance(exc, SchedulerStopped)
        pending.send_error(self.unavailable() if stopped else error_response(exc))

    def generate_alone(self, pending: Pending) -> None:
        """Worker thread (batching false): generate one request and send its responses."""
        try:
            if self.stopping.is_set():
                raise RuntimeError("shutting down")
            job = GenerationRequest(pending.prompt_ids, pending.params, is_cancelled=self._cancel_check(pending))
            for event in self.generator.generate_batch([job]):
                pending.on_event(event)
        except Exception as exc:  # noqa: BLE001 - every request must get its FINAL flag
            self._fail(pending, exc)
        finally:  # the generator never finished it (should not happen): still close it
            pending.send_error(error_response(RuntimeError("generation ended without a result")))

    def _cancel_check(self, pending: Pending) -> Callable[[], bool]:
        """Whether to stop generating for `pending`; asks Triton at most every CANCEL_POLL_S."""
        next_poll = 0.0

        def cancelled() -> bool:
            nonlocal next_poll
            if self.stopping.is_set() or pending.failed:
                return True
            now = time.monotonic()
            if now < next_poll:
                return False
            next_poll = now + CANCEL_POLL_S
            return pending.sender.is_cancelled()

        return cancelled

    def finalize(self) -> None:
        self.stopping.set()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        self.responder.stop()


class TritonPythonModel(TierModel):
    """Name the Python backend looks for."""
