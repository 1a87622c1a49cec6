"""Chat templates of a tier: OpenAI-style messages -> the prompt string its model was trained on.

The template is the tokenizer's own (`chat_template.jinja` next to the model, else `chat_template` in
tokenizer_config.json), rendered with jinja2 in a sandboxed environment the way transformers' apply_chat_template
does (trim_blocks, lstrip_blocks, loop controls, `raise_exception`, a `tojson` that does not escape HTML,
`strftime_now`, the `{% generation %}` tag, the special tokens as variables, add_generation_prompt=True), so the
tier's prompt equals what transformers, vLLM or Ollama would build. No transformers or torch import: this runs in the
Triton stub.

The rendered string already holds every special token the model expects (BOS included where the template writes
`bos_token`), so callers tokenize it WITHOUT adding special tokens; tokenizing it with them would add a second BOS.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROLES = ("system", "developer", "user", "assistant", "tool")
# Special-token variables a template may use (transformers passes the tokenizer's special_tokens_map).
SPECIAL_TOKEN_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
    "additional_special_tokens",
)


class ChatInputError(ValueError):
    """A conversation the tier cannot template; the message says which message or part is wrong."""


def _token_text(value: Any) -> Any:
    """A special token as written in tokenizer_config.json: a string or an AddedToken dict with `content`."""
    if isinstance(value, dict):
        return value.get("content")
    if isinstance(value, list):
        return [_token_text(item) for item in value]
    return value


def _pick_template(value: Any) -> str | None:
    """tokenizer_config's `chat_template`: a string, or a list of named templates (the one named "default")."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        return named.get("default")
    return None


def parse_messages(payload: str) -> list[dict[str, Any]]:
    """Validate an OpenAI-style `messages` JSON list; text content parts are joined into one string.

    Raises ChatInputError naming what to fix: not JSON, not a list, an empty list, a message that is not an object,
    an unknown role, missing content, a content part that is not text.
    """
    try:
        messages = json.loads(payload)
    except ValueError as exc:
        raise ChatInputError(f"input 'messages' is not valid JSON ({exc}); send a JSON list of messages") from None
    if not isinstance(messages, list):
        raise ChatInputError(
            'input \'messages\' must be a JSON list of message objects ({"role": ..., "content": ...}), '
            f"got a {type(messages).__name__}"
        )
    if not messages:
        raise ChatInputError("input 'messages' is an empty list; send at least one message")
    checked = []
    for number, message in enumerate(messages):
        where = f"messages[{number}]"
        if not isinstance(message, dict):
            raise ChatInputError(f"{where} must be an object with 'role' and 'content', got a {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise ChatInputError(f"{where} has role {role!r}; the role must be one of {', '.join(ROLES)}")
        content = message.get("content")
        if content is None:
            if role == "assistant" and message.get("tool_calls"):
                checked.append(dict(message))  # an assistant turn that only calls tools
                continue
            raise ChatInputError(f"{where} ({role}) has no 'content'; send its text as a string")
        if isinstance(content, list):
            texts = []
            for index, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                if kind != "text" or not isinstance(part.get("text"), str):
                    raise ChatInputError(
                        f"{where}.content[{index}] is a {kind!r} part; this tier accepts only text parts "
                        '({"type": "text", "text": "..."})'
                    )
                texts.append(part["text"])
            content = "\n".join(texts)  # as vLLM does for a text-only model
        elif not isinstance(content, str):
            raise ChatInputError(f"{where}.content must be a string or a list of text parts, got {content!r}")
        checked.append({**message, "content": content})
    return checked


def plain_conversation(conversation: list[dict[str, Any]]) -> str:
    """A conversation as one prompt for a model without a chat template.

    A single user message is its text; otherwise each message becomes `Role: content`, in order, separated by blank
    lines (what OpenAI-compatible servers do for base models).
    """
    if len(conversation) == 1 and conversation[0]["role"] == "user":
        return conversation[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m.get('content') or ''}" for m in conversation)


@dataclass(frozen=True)
class ChatTemplate:
    """A compiled chat template and the special-token variables it is rendered with."""

    source: str
    special_tokens: dict[str, Any]

    @classmethod
    def load(cls, model_dir: Path) -> ChatTemplate | None:
        """The template of an exported tier directory, or None when its tokenizer has none."""
        model_dir = Path(model_dir)
        config_path = model_dir / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        jinja_path = model_dir / "chat_template.jinja"
        source = jinja_path.read_text() if jinja_path.exists() else _pick_template(config.get("chat_template"))
        if not source:
            return None
        map_path = model_dir / "special_tokens_map.json"
        legacy = json.loads(map_path.read_text()) if map_path.exists() else {}
        special = {}
        for key in SPECIAL_TOKEN_KEYS:
            value = _token_text(config.get(key, legacy.get(key)))
            if value is not None:
                special[key] = value
        return cls(source, special)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", _compile(self.source))

    def render(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """The prompt string for a (validated) conversation; raises ChatInputError when the template refuses it."""
        import jinja2

        try:
            return self._compiled.render(  # type: ignore[attr-defined]
                messages=list(messages),
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except jinja2.TemplateError as exc:
            # raise_exception() in the template: its message says what the model's format does not allow
            raise ChatInputError(f"the chat template refused the conversation: {exc}") from None


def _compile(source: str) -> Any:
    import jinja2
    import jinja2.ext
    import jinja2.nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` marks assistant text for training masks; here it just renders."""

        tags = {"generation"}

        def parse(self, parser: Any) -> jinja2.nodes.Node:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys=False):
        # jinja's own tojson escapes HTML characters, which chat templates do not expect
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format: str) -> str:
        return datetime.now().strftime(format)

    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = strftime_now
    return environment.from_string(source)
