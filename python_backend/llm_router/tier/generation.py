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
- Several requests can be generated as one batch (left padding); rows leave the batch as they finish.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


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


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log_softmax over the last axis, in float32."""
    logits = logits.astype(np.float32, copy=False)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def choose_token(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> tuple[int, float]:
    """Pick the next token from one row of logits; returns (token, its log-prob under the raw model)."""
    logprobs = log_softmax(logits)
    if params.greedy:
        token = int(np.argmax(logits))
        return token, float(logprobs[token])
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
    return token, float(logprobs[token])


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

    def select_rows(self, past: dict, rows: np.ndarray) -> dict:
        """The KV cache of some batch rows only (when others have finished)."""
        return {name: value[rows] for name, value in past.items()}


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

    def select_rows(self, past, rows):
        # Rare (a row finished early): round-trip through the host.
        return {name: self._on_device(np.ascontiguousarray(value.numpy()[rows])) for name, value in past.items()}


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
    """Tokenizer + ONNX decoder of one exported tier directory (`model_repository/<tier>/1/model/`)."""

    def __init__(
        self,
        model_dir: Path,
        provider: str = CPU_PROVIDER,
        io_binding: bool = False,
        intra_op_threads: int = 1,
        device_id: int = 0,
        max_tokens_limit: int | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        model_path = model_dir / "model.onnx"
        if not model_path.exists():
            raise FileNotFoundError(
                f"{model_path} not found; build the tier with `router-build-tiny-tiers` or `router-export-tier`"
            )
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.info = ModelInfo.read(model_dir)
        if provider == CUDA_PROVIDER and io_binding:
            self.decoder: OrtDecoder = CudaIoBindingDecoder(model_path, device_id, intra_op_threads)
        else:
            self.decoder = OrtDecoder(model_path, provider, intra_op_threads)
        self.max_tokens_limit = min(max_tokens_limit or self.info.context_length, self.info.context_length)

    # -- text ---------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=True).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def prepare(self, text: str, params: SamplingParams) -> list[int]:
        """Tokenize and check a prompt against the context; raises GenerationInputError."""
        params.validate(self.max_tokens_limit)
        ids = self.encode(text)
        context = self.info.context_length
        if len(ids) >= context:
            raise GenerationInputError(f"prompt is {len(ids)} tokens long; this model's context is {context} tokens")
        if len(ids) + params.max_tokens > context:
            raise GenerationInputError(
                f"prompt ({len(ids)} tokens) + max_tokens ({params.max_tokens}) exceed this model's context of "
                f"{context} tokens; lower max_tokens to at most {context - len(ids)}"
            )
        return ids

    # -- generation ---------------------------------------------------------------------------------
    def generate(self, text: str, params: SamplingParams) -> GenerationResult:
        """Generate for one prompt (no streaming)."""
        ids = self.prepare(text, params)
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
        count = len(requests)
        if count == 0:
            return
        lengths = [len(r.prompt_ids) for r in requests]
        width = max(lengths)
        pad = self.info.pad_id
        input_ids = np.full((count, width), pad, dtype=np.int64)
        attention = np.zeros((count, width), dtype=np.int64)
        for row, request in enumerate(requests):
            input_ids[row, width - lengths[row] :] = request.prompt_ids
            attention[row, width - lengths[row] :] = 1
        positions = np.clip(np.cumsum(attention, axis=1) - 1, 0, None)
        past = self.decoder.empty_past(count)
        rows = np.arange(count)  # batch row -> request index, for the rows still generating
        assemblers = [TextAssembler(self.decode, r.params.stop_words) for r in requests]
        rngs = [np.random.default_rng(r.params.random_seed) for r in requests]
        end_ids = [r.params.end_ids if r.params.end_ids is not None else self.info.eos_ids for r in requests]
        produced = [0] * count
        while rows.size:
            logits, past = self.decoder.step(input_ids, attention, positions, past)
            next_ids = np.full((rows.size, 1), pad, dtype=np.int64)
            keep: list[int] = []
            for batch_row, index in enumerate(rows.tolist()):
                request = requests[index]
                if request.is_cancelled():
                    yield TokenEvent(index, None, None, "", finished=True, finish_reason="cancelled")
                    continue
                token, logprob = choose_token(logits[batch_row], request.params, rngs[index])
                if token in end_ids[index]:
                    yield TokenEvent(index, None, None, assemblers[index].flush(), True, "stop")
                    continue
                produced[index] += 1
                delta = assemblers[index].add(token)
                if assemblers[index].stopped:
                    yield TokenEvent(index, token, logprob, delta + assemblers[index].flush(), True, "stop")
                elif produced[index] >= request.params.max_tokens:
                    yield TokenEvent(index, token, logprob, delta + assemblers[index].flush(), True, "length")
                else:
                    yield TokenEvent(index, token, logprob, delta)
                    next_ids[batch_row, 0] = token
                    keep.append(batch_row)
            if len(keep) < rows.size:
                if not keep:
                    break
                selected = np.array(keep)
                rows, next_ids = rows[selected], next_ids[selected]
                attention, positions = attention[selected], positions[selected]
                past = self.decoder.select_rows(past, selected)
            input_ids = next_ids
            attention = np.concatenate([attention, np.ones((rows.size, 1), dtype=np.int64)], axis=1)
            positions = positions[:, -1:] + 1
