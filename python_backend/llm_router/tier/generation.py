"""Text generation with an optimum-exported ONNX decoder (`text-generation-with-past`) on onnxruntime.

No Triton here: unit tests and benchmarks use it directly; `llm_router.tier.model` wraps it for Triton.

Semantics (documented in the tier README section of the model configs):
- Greedy by default: `temperature` 0 (or absent) or `top_k` 1 picks the arg-max token. `temperature` > 0 samples
  from softmax(logits / temperature), restricted to the `top_k` most likely tokens (0 = no limit) and to the
  smallest set whose probability reaches `top_p` (1 = no limit); `random_seed` makes sampling repeatable.
- Reported log-probs are those of the chosen tokens under the model's own distribution, log_softmax(logits),
  before temperature/top-k/top-p: they measure the model's confidence and do not change with sampling settings.
- Generation stops at `max_tokens`, at an end token (`end_id`, default the generation config's eos ids; the end token
  is not part of the output, its text or its log-probs), at a stop word (matched on the decoded text; the text is cut
  before it, but the tokens generated up to it are counted) or when the caller cancels.
- Prompts: a tier whose tokenizer has a chat template (llm_router.tier.chat) templates a conversation, and a plain
  text as one user message; `raw` text, and any text for a model without a template, is tokenized as it is.
- Several requests are generated as one batch (`DecodeBatch`): each row's KV cache is left-padded to the batch's
  length, with its own attention mask and position ids, so rows join (the requests joining at one step prefilled
  together, in one left-padded call) and leave at any step and a row's tokens do not depend on the others beyond
  float noise. `InflightScheduler` runs one such batch on a thread and lets requests join it at the next step
  (in-flight / continuous batching). The KV cache of the chat template's head (`PrefixCache`: e.g. a default system
  prompt) is computed once; templated prompts are prefilled from after it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llm_router.protocol import context_rejection
from llm_router.tier.chat import ChatInputError, ChatTemplate, parse_messages, plain_conversation

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
log = logging.getLogger(__name__)


class GenerationInputError(ValueError):
    """A request the model cannot serve (bad sampling values, too long); the message says what is wrong."""


@dataclass(frozen=True)
class SamplingParams:
    """Per-request generation settings (the TensorRT-LLM input names in brackets)."""

    max_tokens: int  # [max_tokens]
    temperature: float = 0.0  # [temperature] 0 = greedy
    top_p: float = 1.0  # [top_p] in (0, 1]
    top_k: int = 0  # [top_k] 0 = no limit, 1 = greedy
    random_seed: int | None = None  # [random_seed]
    stop_words: tuple[str, ...] = ()  # [stop_words]
    end_ids: frozenset[int] | None = None  # [end_id]; None = the model's eos ids

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    def validate(self, max_tokens_limit: int) -> None:
        """Raise GenerationInputError for values the tier cannot honour."""
        if self.max_tokens <= 0:
            raise GenerationInputError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.max_tokens > max_tokens_limit:
            raise GenerationInputError(
                f"max_tokens {self.max_tokens} is above this model's limit of {max_tokens_limit}"
            )
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise GenerationInputError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not np.isfinite(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise GenerationInputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise GenerationInputError(f"top_k must be >= 0 (0 = no limit), got {self.top_k}")
        if any(not word for word in self.stop_words):
            raise GenerationInputError("stop_words must not contain an empty string")


@dataclass
class GenerationRequest:
    """One prompt (already tokenized) with its settings; `is_cancelled` is polled once per generated token."""

    prompt_ids: list[int]
    params: SamplingParams
    is_cancelled: Callable[[], bool] = field(default=lambda: False)


@dataclass
class TokenEvent:
    """What happened to one row of the batch at one step."""

    index: int  # position of the request in the list given to generate_batch
    token_id: int | None  # the new token (None when the row ended without one: end token, cancellation)
    logprob: float | None
    text_delta: str  # text that became final with this token ('' while held back)
    finished: bool = False
    finish_reason: str | None = None  # "length" | "stop" | "cancelled"


@dataclass
class GenerationResult:
    """A whole generation, for non-streaming callers and tests."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    input_tokens: int
    finish_reason: str

    @property
    def output_tokens(self) -> int:
        return len(self.token_ids)


def log_normalizers(logits: np.ndarray) -> np.ndarray:
    """logsumexp over the last axis (float32): a token's log-prob is its logit minus its row's value."""
    logits = logits.astype(np.float32, copy=False)
    top = logits.max(axis=-1, keepdims=True)
    return top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log_softmax over the last axis, in float32."""
    logits = logits.astype(np.float32, copy=False)
    return logits - log_normalizers(logits)[..., None]


def choose_token(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> tuple[int, float]:
    """Pick the next token from one row of logits; returns (token, its log-prob under the raw model)."""
    normalizer = float(log_normalizers(logits))  # only the chosen token's log-prob is needed
    if params.greedy:
        token = int(np.argmax(logits))
        return token, float(logits[token]) - normalizer
    scores = logits.astype(np.float64) / params.temperature
    if 0 < params.top_k < scores.size:
        kth = np.partition(scores, -params.top_k)[-params.top_k]
        scores = np.where(scores >= kth, scores, -np.inf)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = cumulative - probs[order] < params.top_p  # the smallest prefix whose mass reaches top_p
        mask = np.zeros_like(probs, dtype=bool)
        mask[order[keep]] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    token = int(rng.choice(probs.size, p=probs))
    return token, float(logits[token]) - normalizer


class TextAssembler:
    """Turns a growing list of token ids into final text deltas, holding back partial characters and stop words."""

    def __init__(self, decode: Callable[[list[int]], str], stop_words: Sequence[str] = ()) -> None:
        self._decode = decode
        self.stop_words = tuple(stop_words)
        self.token_ids: list[int] = []
        self.text = ""
        self.sent = 0  # characters of text already handed out
        self.stopped = False

    def _held_back(self, text: str) -> int:
        """Characters at the end of text that may still change or start a stop word."""
        held = 0
        while held < len(text) and text[len(text) - 1 - held] == "\ufffd":  # an incomplete UTF-8 sequence
            held += 1
        tail = text[: len(text) - held]
        for size in range(min(max((len(w) for w in self.stop_words), default=1) - 1, len(tail)), 0, -1):
            if any(word.startswith(tail[-size:]) for word in self.stop_words):
                return held + size
        return held

    def add(self, token_id: int) -> str:
        """Append a token; returns the text that became final (sets `stopped` when a stop word appeared)."""
        self.token_ids.append(token_id)
        text = self._decode(self.token_ids)
        # Text before `sent` holds no start of a stop word (see _held_back), so search from there.
        found = [at for at in (text.find(word, self.sent) for word in self.stop_words) if at >= 0]
        if found:
            text = text[: min(found)]
            self.stopped = True
        self.text = text
        end = len(text) if self.stopped else len(text) - self._held_back(text)
        if end <= self.sent:
            return ""
        delta, self.sent = text[self.sent : end], end
        return delta

    def flush(self) -> str:
        """The text still held back (at the end of generation)."""
        delta, self.sent = self.text[self.sent :], len(self.text)
        return delta


class OrtDecoder:
    """One optimum decoder-with-past on onnxruntime: feeds and fetches the KV cache as numpy arrays (CPU)."""

    def __init__(self, model_path: Path, provider: str = CPU_PROVIDER, intra_op_threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model_path), options, providers=self.providers(provider))
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        if not self.past_names or "input_ids" not in inputs:
            raise ValueError(
                f"{model_path} is not a decoder with KV cache (export it with task text-generation-with-past)"
            )
        self.present_names = [n.replace("past_key_values.", "present.") for n in self.past_names]
        self.has_position_ids = "position_ids" in inputs
        self.has_attention_mask = "attention_mask" in inputs
        first = inputs[self.past_names[0]]
        self.kv_heads, self.head_dim = int(first.shape[1]), int(first.shape[3])
        self.kv_dtype = np.float16 if first.type == "tensor(float16)" else np.float32

    def providers(self, provider: str) -> list[str]:
        return [provider] if provider == CPU_PROVIDER else [provider, CPU_PROVIDER]

    def empty_past(self, batch: int) -> dict[str, object]:
        shape = (batch, self.kv_heads, 0, self.head_dim)
        return {name: np.zeros(shape, dtype=self.kv_dtype) for name in self.past_names}

    def feeds(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray) -> dict:
        feeds = {"input_ids": input_ids}
        if self.has_attention_mask:
            feeds["attention_mask"] = attention_mask
        if self.has_position_ids:
            feeds["position_ids"] = position_ids
        return feeds

    def step(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray, past: dict
    ) -> tuple[np.ndarray, dict]:
        """Run one forward pass; returns (float32 logits of the last position [B, V], the new KV cache)."""
        outputs = self.session.run(
            ["logits", *self.present_names], {**self.feeds(input_ids, attention_mask, position_ids), **past}
        )
        present = dict(zip(self.past_names, outputs[1:], strict=True))
        return outputs[0][:, -1, :].astype(np.float32, copy=False), present

    # KV cache surgery when rows join or leave the batch; the cache is [batch, kv_heads, length, head_dim].
    def to_host(self, value: Any) -> np.ndarray:
        return value

    def from_host(self, array: np.ndarray) -> Any:
        return array

    def select_rows(self, past: dict, rows: np.ndarray, start: int = 0) -> dict:
        """The KV cache of some batch rows only, without its first `start` positions (padding no row needs)."""
        return {
            name: self.from_host(np.ascontiguousarray(self.to_host(value)[rows, :, start:]))
            for name, value in past.items()
        }

    def join(self, first: dict, second: dict, length: int) -> dict:
        """Stack two KV caches along the batch axis, each left-padded with zeros to `length` positions."""
        joined = {}
        for name in self.past_names:
            a, b = self.to_host(first[name]), self.to_host(second[name])
            out = np.zeros((a.shape[0] + b.shape[0], a.shape[1], length, a.shape[3]), dtype=a.dtype)
            out[: a.shape[0], :, length - a.shape[2] :] = a
            out[a.shape[0] :, :, length - b.shape[2] :] = b
            joined[name] = self.from_host(out)
        return joined


class CudaIoBindingDecoder(OrtDecoder):
    """GPU path: CUDA provider with IO binding; the KV cache stays on the device between steps.

    Only the last position's logits come back to the host each step. Untested here (no GPU on CI); selected by the
    tier config parameters `execution_provider: CUDAExecutionProvider` and `io_binding: true`.
    """

    def __init__(self, model_path: Path, device_id: int = 0, intra_op_threads: int = 1) -> None:
        self.device_id = device_id
        super().__init__(model_path, CUDA_PROVIDER, intra_op_threads)

    def providers(self, provider: str) -> list:
        return [(CUDA_PROVIDER, {"device_id": self.device_id}), CPU_PROVIDER]

    def _on_device(self, array: np.ndarray):
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(array, "cuda", self.device_id)

    def empty_past(self, batch: int) -> dict[str, object]:
        return {name: self._on_device(value) for name, value in super().empty_past(batch).items()}

    def step(self, input_ids, attention_mask, position_ids, past):
        binding = self.session.io_binding()
        for name, value in self.feeds(input_ids, attention_mask, position_ids).items():
            binding.bind_ortvalue_input(name, self._on_device(np.ascontiguousarray(value)))
        for name, value in past.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cuda", self.device_id)
        for name in self.present_names:
            binding.bind_output(name, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        logits = outputs[0].numpy()[:, -1, :].astype(np.float32, copy=False)
        return logits, dict(zip(self.past_names, outputs[1:], strict=True))

    # Rows join or leave at most once per request: the cache makes a round trip through the host then.
    def to_host(self, value: Any) -> np.ndarray:
        return value.numpy()

    def from_host(self, array: np.ndarray) -> Any:
        return self._on_device(np.ascontiguousarray(array))


@dataclass(frozen=True)
class ModelInfo:
    """What the tier needs from config.json and generation_config.json."""

    context_length: int
    eos_ids: frozenset[int]
    pad_id: int

    @classmethod
    def read(cls, model_dir: Path) -> ModelInfo:
        config = json.loads((model_dir / "config.json").read_text())
        generation_path = model_dir / "generation_config.json"
        generation = json.loads(generation_path.read_text()) if generation_path.exists() else {}
        eos = generation.get("eos_token_id", config.get("eos_token_id"))
        eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
        pad = generation.get("pad_token_id", config.get("pad_token_id"))
        if pad is None:
            pad = min(eos_ids) if eos_ids else 0
        context = config.get("max_position_embeddings") or config.get("n_positions") or 2048
        return cls(context_length=int(context), eos_ids=eos_ids, pad_id=int(pad))


class Generator:
    """Tokenizer + chat template + ONNX decoder of one exported tier directory (`model_repository/<tier>/1/model/`)."""

    def __init__(
        self,
        model_dir: Path,
        provider: str = CPU_PROVIDER,
        io_binding: bool = False,
        intra_op_threads: int = 1,
        device_id: int = 0,
        max_tokens_limit: int | None = None,
        prefix_cache: bool = True,
    ) -> None:
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        model_path = model_dir / "model.onnx"
        if not model_path.exists():
            raise FileNotFoundError(
                f"{model_path} not found; build the tier with `router-build-tiny-tiers` or `router-export-tier`"
            )
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.chat_template = ChatTemplate.load(model_dir)
        self.info = ModelInfo.read(model_dir)
        if provider == CUDA_PROVIDER and io_binding:
            self.decoder: OrtDecoder = CudaIoBindingDecoder(model_path, device_id, intra_op_threads)
        else:
            self.decoder = OrtDecoder(model_path, provider, intra_op_threads)
        self.max_tokens_limit = min(max_tokens_limit or self.info.context_length, self.info.context_length)
        head = self.template_head() if prefix_cache else ()
        self.prefix_cache: PrefixCache | None = PrefixCache(self.decoder, head) if len(head) >= 2 else None

    def template_head(self) -> tuple[int, ...]:
        """Token ids every templated one-user-message prompt starts with (e.g. a template's default system prompt)."""
        if self.chat_template is None:
            return ()
        first, second = (self.encode_chat([{"role": "user", "content": word}]) for word in ("Hello", "Bye"))
        return tuple(os.path.commonprefix([first, second]))  # element-wise: works on lists of ids

    # -- text ---------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Raw text -> ids, with the tokenizer's own special tokens (BOS where it adds one)."""
        return self.tokenizer.encode(text, add_special_tokens=True).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """The templated prompt of a validated conversation (the model must have a chat template)."""
        if self.chat_template is None:
            raise GenerationInputError("this model has no chat template")
        try:
            return self.chat_template.render(messages, add_generation_prompt=True)
        except ChatInputError as exc:
            raise GenerationInputError(str(exc)) from None

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """A conversation -> ids carrying exactly the template's special tokens (no second BOS)."""
        return self.tokenizer.encode(self.render_chat(messages), add_special_tokens=False).ids

    def prompt_ids(self, text: str | None = None, messages: str | list | None = None, raw: bool = False) -> list[int]:
        """Token ids of a request's prompt: `text` (one user message when templated) or `messages` (a JSON list).

        A model with a chat template templates both unless `raw`; one without a template tokenizes `text` as it is
        and a conversation as plain text (`plain_conversation`).
        """
        if messages is not None:
            if text:
                raise GenerationInputError(
                    "send either text_input or messages, not both (leave text_input empty when sending messages)"
                )
            if raw:
                raise GenerationInputError(
                    "raw applies to text_input only; send the conversation without raw, or one raw text in text_input"
                )
            try:
                conversation = parse_messages(messages) if isinstance(messages, str) else messages
            except ChatInputError as exc:
                raise GenerationInputError(str(exc)) from None
            if self.chat_template is None:
                return self.encode(plain_conversation(conversation))
            return self.encode_chat(conversation)
        if text is None or not text.strip():
            raise GenerationInputError("input 'text_input' is empty; send a non-empty prompt (or messages)")
        if raw or self.chat_template is None:
            return self.encode(text)
        return self.encode_chat([{"role": "user", "content": text}])

    def prepare(
        self, text: str | None, params: SamplingParams, *, messages: str | list | None = None, raw: bool = False
    ) -> list[int]:
        """Tokenize (and template) a prompt and check it against the context; raises GenerationInputError."""
        params.validate(self.max_tokens_limit)
        ids = self.prompt_ids(text, messages, raw)
        context = self.info.context_length
        if len(ids) >= context:
            raise GenerationInputError(context_rejection(len(ids), context) + self._counted(raw))
        if len(ids) + params.max_tokens > context:
            raise GenerationInputError(context_rejection(len(ids), context, params.max_tokens) + self._counted(raw))
        return ids

    def _counted(self, raw: bool) -> str:
        """Says that a rejected prompt was counted after templating."""
        return " (counted with the chat template applied)" if self.chat_template is not None and not raw else ""

    # -- generation ---------------------------------------------------------------------------------
    def generate(
        self, text: str | None, params: SamplingParams, *, messages: str | list | None = None, raw: bool = False
    ) -> GenerationResult:
        """Generate for one prompt (no streaming)."""
        ids = self.prepare(text, params, messages=messages, raw=raw)
        tokens: list[int] = []
        logprobs: list[float] = []
        pieces: list[str] = []
        reason = "length"
        for event in self.generate_batch([GenerationRequest(ids, params)]):
            if event.token_id is not None:
                tokens.append(event.token_id)
                logprobs.append(event.logprob)
            pieces.append(event.text_delta)
            if event.finished:
                reason = event.finish_reason or reason
        return GenerationResult("".join(pieces), tokens, logprobs, len(ids), reason)

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> Iterator[TokenEvent]:
        """Generate for several prompts at once; yields one event per row per step, then each row's final event."""
        batch = DecodeBatch(self)
        events = batch.admit(requests, keys=range(len(requests)))
        while True:
            for index, event in events:
                event.index = index
                yield event
            if not len(batch):
                return
            events = batch.step()


class PrefixCache:
    """The KV cache of one token prefix that many prompts share (a chat template's head), computed once.

    A prompt that starts with the prefix (compared token by token, so a tokenization that merges across its end is
    simply not a hit) is prefilled from its first token after it; the prefix's keys and values do not depend on what
    follows (causal attention). Kept on the host; tiled to the batch for each prefill.
    """

    def __init__(self, decoder: OrtDecoder, ids: Sequence[int]) -> None:
        self.decoder = decoder
        self.ids = tuple(ids)
        self._host: dict[str, np.ndarray] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.ids)

    def matches(self, prompt_ids: Sequence[int]) -> bool:
        """Whether the prompt starts with the prefix and has at least one token after it (to feed the model)."""
        return len(prompt_ids) > len(self.ids) and tuple(prompt_ids[: len(self.ids)]) == self.ids

    def past(self, batch: int) -> dict:
        """The prefix's KV cache repeated for `batch` rows, as the decoder takes it."""
        with self._lock:
            if self._host is None:
                ids = np.array([self.ids], dtype=np.int64)
                ones = np.ones_like(ids)
                positions = np.arange(len(self.ids), dtype=np.int64)[None]
                _, present = self.decoder.step(ids, ones, positions, self.decoder.empty_past(1))
                self._host = {name: self.decoder.to_host(value) for name, value in present.items()}
        return {name: self.decoder.from_host(np.repeat(value, batch, axis=0)) for name, value in self._host.items()}


@dataclass
class _Row:
    """One request in a DecodeBatch."""

    key: Any  # the caller's handle, handed back with each event
    request: GenerationRequest
    assembler: TextAssembler
    rng: np.random.Generator
    end_ids: frozenset[int]
    position: int  # position id of the next token fed to the model
    produced: int = 0
    next_token: int = 0


class DecodeBatch:
    """Rows generated together: a KV cache left-padded to one length, an attention mask and a position per row.

    `admit` prefills new requests (together, left-padded) and appends the unfinished ones to the batch; `step` feeds
    every row its last token. Rows that finish leave at once, and cache columns no remaining row attends to are cut.
    Both yield (key, TokenEvent) as tokens are chosen; `event.index` is left at 0 (the caller's key names the row).
    """

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.decoder = generator.decoder
        self.rows: list[_Row] = []
        self.past: dict | None = None
        self.attention = np.zeros((0, 0), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def keys(self) -> list[Any]:
        return [row.key for row in self.rows]

    def admit(self, requests: Sequence[GenerationRequest], keys: Sequence[Any]) -> Iterator[tuple[Any, TokenEvent]]:
        """Prefill `requests` and yield their first tokens; those not finished join the batch.

        All of them are prefilled in one left-padded call, except that prompts starting with the generator's cached
        prefix are prefilled (together) from after it, in a second call.
        """
        cache = self.generator.prefix_cache
        hits = [cache is not None and cache.matches(r.prompt_ids) for r in requests]
        for hit in (True, False):
            group = [i for i, h in enumerate(hits) if h is hit]
            if group:
                yield from self._prefill([requests[i] for i in group], [keys[i] for i in group], cache if hit else None)

    def _prefill(
        self, requests: Sequence[GenerationRequest], keys: Sequence[Any], prefix: PrefixCache | None
    ) -> Iterator[tuple[Any, TokenEvent]]:
        """One prefill call for `requests` (after `prefix`, which they all start with), then as `admit`."""
        info = self.generator.info
        skip = len(prefix) if prefix is not None else 0
        lengths = [len(r.prompt_ids) for r in requests]
        width = max(lengths) - skip
        input_ids = np.full((len(requests), width), info.pad_id, dtype=np.int64)
        # the cache columns are [prefix | left padding | the row's own tokens]: a row attends to its prefix and tokens
        attention = np.zeros((len(requests), skip + width), dtype=np.int64)
        attention[:, :skip] = 1
        for row, request in enumerate(requests):
            fed = lengths[row] - skip
            input_ids[row, width - fed :] = request.prompt_ids[skip:]
            attention[row, skip + width - fed :] = 1
        positions = np.clip(np.cumsum(attention, axis=1) - 1, 0, None)[:, skip:]
        past = prefix.past(len(requests)) if prefix is not None else self.decoder.empty_past(len(requests))
        logits, present = self.decoder.step(input_ids, attention, positions, past)
        rows = [
            _Row(
                key,
                request,
                TextAssembler(self.generator.decode, request.params.stop_words),
                np.random.default_rng(request.params.random_seed),
                request.params.end_ids if request.params.end_ids is not None else info.eos_ids,
                position=length,
            )
            for key, request, length in zip(keys, requests, lengths, strict=True)
        ]
        keep = yield from self._choose(rows, logits)
        if not keep:
            return
        present, attention = self._kept(present, attention, keep)
        rows = [rows[i] for i in keep]
        if not self.rows:
            self.rows, self.past, self.attention = rows, present, attention
            return
        length = max(self.attention.shape[1], attention.shape[1])
        self.past = self.decoder.join(self.past, present, length)
        joined = np.zeros((len(self.rows) + len(rows), length), dtype=np.int64)
        joined[: len(self.rows), length - self.attention.shape[1] :] = self.attention
        joined[len(self.rows) :, length - attention.shape[1] :] = attention
        self.rows, self.attention = self.rows + rows, joined

    def step(self) -> Iterator[tuple[Any, TokenEvent]]:
        """One decode step for every row; yields each row's event."""
        if not self.rows:
            return
        input_ids = np.array([[row.next_token] for row in self.rows], dtype=np.int64)
        positions = np.array([[row.position] for row in self.rows], dtype=np.int64)
        attention = np.concatenate([self.attention, np.ones((len(self.rows), 1), dtype=np.int64)], axis=1)
        logits, self.past = self.decoder.step(input_ids, attention, positions, self.past)
        self.attention = attention
        for row in self.rows:
            row.position += 1
        keep = yield from self._choose(self.rows, logits)
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self.past, self.attention = [], None, np.zeros((0, 0), dtype=np.int64)
            return
        self.past, self.attention = self._kept(self.past, self.attention, keep)
        self.rows = [self.rows[i] for i in keep]

    def _kept(self, past: dict, attention: np.ndarray, keep: list[int]) -> tuple[dict, np.ndarray]:
        """The cache and mask of the rows `keep`, without the columns that are padding for every one of them."""
        selected = np.array(keep)
        dropped_rows = len(keep) < attention.shape[0]
        attention = attention[selected]
        start = _first_used_column(attention)
        if dropped_rows or start:
            past = self.decoder.select_rows(past, selected, start)
        return past, attention[:, start:]

    def _choose(self, rows: list[_Row], logits: np.ndarray) -> Iterator[tuple[Any, TokenEvent]]:
        """Pick each row's token and yield its event; returns the indexes (into rows) of the rows that go on."""
        # greedy rows (the usual case) need the arg-max and one normaliser per row, not a whole log_softmax
        normalizers = log_normalizers(logits)
        greedy_tokens = logits.argmax(axis=-1)
        keep: list[int] = []
        for index, row in enumerate(rows):
            request = row.request
            if request.is_cancelled():
                yield row.key, TokenEvent(0, None, None, "", finished=True, finish_reason="cancelled")
                continue
            if request.params.greedy:
                token = int(greedy_tokens[index])
                logprob = float(logits[index, token] - normalizers[index])
            else:
                token, logprob = choose_token(logits[index], request.params, row.rng)
            if token in row.end_ids:
                yield row.key, TokenEvent(0, None, None, row.assembler.flush(), True, "stop")
                continue
            row.produced += 1
            delta = row.assembler.add(token)
            if row.assembler.stopped:
                yield row.key, TokenEvent(0, token, logprob, delta + row.assembler.flush(), True, "stop")
            elif row.produced >= request.params.max_tokens:
                yield row.key, TokenEvent(0, token, logprob, delta + row.assembler.flush(), True, "length")
            else:
                yield row.key, TokenEvent(0, token, logprob, delta)
                row.next_token = token
                keep.append(index)
        return keep


def _first_used_column(attention: np.ndarray) -> int:
    """The first cache position some row attends to (the columns before it are padding for every row)."""
    used = attention.any(axis=0)
    return int(np.argmax(used)) if used.any() else attention.shape[1]


class SchedulerStopped(RuntimeError):
    """The scheduler was stopped before the request finished (the tier is unloading)."""


@dataclass(eq=False)  # compared by identity
class _Entry:
    request: GenerationRequest
    on_event: Callable[[TokenEvent], None]
    on_error: Callable[[BaseException], None]
    done: bool = False
    broken: bool = False  # on_event raised: the caller can no longer be answered, so the row is dropped


class InflightScheduler:
    """In-flight (continuous) batching on one decode thread, as TensorRT-LLM's in-flight batcher and vLLM do.

    `submit` queues a prepared request; before each decode step the thread prefills the requests waiting (up to
    `max_rows` rows in all) and adds them to the running batch, so a request arriving mid-generation starts at the
    next step instead of waiting for the batch to finish. Events go to the request's `on_event` on the decode thread;
    a request cancelled while waiting is answered without being prefilled. A failed step fails every request in the
    batch through `on_error` and the thread goes on with the next ones.

    All the requests waiting at a step are prefilled in one call (`DecodeBatch.admit`). Clients that send a new
    request when one finishes (a closed loop, as perf_analyzer's concurrency mode and most callers) send their next
    requests together when rows finish together; so when the batch is empty and fewer requests wait than rows have
    finished since, the thread waits up to `gather_s` for the rest before prefilling, instead of prefilling the first
    alone and the others one step later (a second prefill call, and two groups that then finish apart). With rows
    running, nothing waits: requests that arrive during a step join at the next one.
    """

    def __init__(self, generator: Generator, max_rows: int = 8, name: str = "tier", gather_s: float = 0.05) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        if gather_s < 0:
            raise ValueError(f"gather_s must be >= 0, got {gather_s}")
        self.generator = generator
        self.max_rows = max_rows
        self.gather_s = gather_s
        self._owed = 0  # rows finished whose callers have not sent a next request yet (see gather_s)
        self._waiting: deque[_Entry] = deque()
        self._condition = threading.Condition()
        self._stopping = False
        self._batch = DecodeBatch(generator)
        self._thread = threading.Thread(target=self._run, name=f"{name}-decode", daemon=True)
        self._thread.start()

    def submit(
        self,
        request: GenerationRequest,
        on_event: Callable[[TokenEvent], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        """Queue a request (its prompt already checked against the context); raises SchedulerStopped when stopped."""
        entry = _Entry(request, on_event, on_error)
        cancelled = request.is_cancelled
        entry.request = GenerationRequest(
            request.prompt_ids, request.params, is_cancelled=lambda: entry.broken or cancelled()
        )
        with self._condition:
            if self._stopping:
                raise SchedulerStopped("the scheduler is stopped")
            self._waiting.append(entry)
            self._owed = max(0, self._owed - 1)
            self._condition.notify()

    @property
    def active_rows(self) -> int:
        return len(self._batch)

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop after the current step; requests not finished get on_error(SchedulerStopped)."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
        self._thread.join(timeout_s)

    def _deliver(self, entry: _Entry, event: TokenEvent) -> None:
        if event.finished:
            entry.done = True
            with self._condition:
                self._owed += 1
        try:
            entry.on_event(event)
        except Exception:  # noqa: BLE001 - one caller's failure must not stop the others' generation
            log.exception("delivering a token event failed; dropping that request")
            entry.broken = True

    def _fail(self, entries: Sequence[_Entry], exc: BaseException) -> None:
        for entry in entries:
            if not entry.done:
                entry.done = True
                try:
                    entry.on_error(exc)
                except Exception:  # noqa: BLE001
                    log.exception("reporting a generation error failed")

    def _gather(self) -> None:
        """With the lock held and the batch empty: wait up to gather_s for the requests that finished rows owe."""
        deadline = time.monotonic() + self.gather_s
        while self._owed and len(self._waiting) < self.max_rows and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                self._owed = 0  # those callers are not sending more now: do not wait for them again
                return
            self._condition.wait(left)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopping and not self._waiting and not len(self._batch):
                    self._condition.wait()
                if self._stopping:
                    break
                if not len(self._batch) and self._owed and self.gather_s:
                    self._gather()
                    if self._stopping:
                        break
                # a request cancelled while it waits for a row is answered now, not when a row frees
                cancelled = [entry for entry in self._waiting if entry.request.is_cancelled()]
                if cancelled:
                    self._waiting = deque(entry for entry in self._waiting if entry not in cancelled)
                room = self.max_rows - len(self._batch)
                starting = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
            try:
                for entry in cancelled:
                    self._deliver(entry, TokenEvent(0, None, None, "", finished=True, finish_reason="cancelled"))
                if starting:
                    for entry, event in self._batch.admit([e.request for e in starting], keys=starting):
                        self._deliver(entry, event)
                for entry, event in self._batch.step():
                    self._deliver(entry, event)
            except Exception as exc:  # noqa: BLE001 - answer every request of the failed batch, keep serving
                log.exception("generation step failed")
                self._fail([*starting, *self._batch.keys], exc)
                self._batch = DecodeBatch(self.generator)
        with self._condition:
            left = [*self._batch.keys, *self._waiting]
            self._waiting.clear()
        self._fail(left, SchedulerStopped("the tier is shutting down"))
