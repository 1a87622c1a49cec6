"""Chat templates of the tiers (llm_router.tier.chat) against transformers' apply_chat_template, and bad messages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import export_tiny_tier
from llm_router.protocol import CONTEXT_MARKER
from llm_router.tier.chat import ChatInputError, ChatTemplate, parse_messages, plain_conversation
from llm_router.tier.generation import GenerationInputError, Generator, SamplingParams

# A ChatML-like template written for these tests: BOS first (the pitfall: the tiny tokenizer adds BOS itself too),
# the tiny vocabulary's <s>/</s> as turn markers, raise_exception, loop controls and the generation tag.
TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and not loop.first %}"
    "{{ raise_exception('Conversation roles: a system message may only come first') }}"
    "{% endif %}"
    "{% if message['role'] == 'tool' %}{% continue %}{% endif %}"
    "[{{ message['role'] }}]\n"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}{% endgeneration %}"
    "{% else %}{{ message['content'] }}{% endif %}"
    "{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}[assistant]\n{% endif %}"
)
# tojson must not escape HTML characters and must keep non-ASCII text (transformers' override of jinja's filter)
TOJSON_TEMPLATE = "{% for m in messages %}{{ m | tojson }}{{ m['content'] | tojson(indent=2) }}\n{% endfor %}"
CONVERSATIONS = [
    [{"role": "user", "content": "Hello world, what is the capital of France?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one, <b>bold</b> & café?"},
    ],
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small tiny tier, exported once (its HF source dir is `<dir>/hf`)."""
    return export_tiny_tier(tmp_path_factory.mktemp("chat"))


def with_template(source: Path, target: Path, template: str, as_file: bool = False) -> Path:
    """A copy of an exported tier (and of its HF dir) whose tokenizer has `template`."""
    for name in ("model", "hf"):
        src = source if name == "model" else source.parent.parent.parent.parent / "hf"
        shutil.copytree(src, target / name)
        config_path = target / name / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        if as_file:
            (target / name / "chat_template.jinja").write_text(template)
            config["chat_template"] = "{{ raise_exception('tokenizer_config template used') }}"
        else:
            config["chat_template"] = template
        config_path.write_text(json.dumps(config))
    return target


@pytest.fixture(scope="module")
def chat_tier(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Generator]:
    target = with_template(exported, tmp_path_factory.mktemp("chat_tier"), TEMPLATE)
    return target, Generator(target / "model")


def hf_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_prompt_equals_transformers_apply_chat_template(chat_tier: tuple[Path, Generator], conversation) -> None:
    directory, generator = chat_tier
    tokenizer = hf_tokenizer(directory / "hf")
    expected_text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    expected_ids = tokenizer.apply_chat_template(conversation, tokenize=True, add_generation_prompt=True)
    assert generator.render_chat(conversation) == expected_text
    assert generator.prompt_ids(messages=json.dumps(conversation)) == list(expected_ids)


def test_templated_prompt_has_exactly_one_bos(chat_tier: tuple[Path, Generator]) -> None:
    _, generator = chat_tier
    bos = generator.tokenizer.token_to_id("<s>")
    ids = generator.prompt_ids("Hello there")
    assert ids[0] == bos and ids.count(bos) == 1
    # the pitfall this guards against: the template's text tokenized again with special tokens gets a second BOS
    assert generator.encode(generator.render_chat([{"role": "user", "content": "Hello there"}]))[:2] == [bos, bos]


def test_text_input_is_one_user_message_and_raw_skips_the_template(chat_tier: tuple[Path, Generator]) -> None:
    _, generator = chat_tier
    text = "Write a haiku about routers."
    assert generator.prompt_ids(text) == generator.prompt_ids(messages=[{"role": "user", "content": text}])
    assert generator.prompt_ids(text, raw=True) == generator.encode(text)
    assert generator.prompt_ids(text, raw=True) != generator.prompt_ids(text)


def test_text_content_parts_are_joined(chat_tier: tuple[Path, Generator]) -> None:
    _, generator = chat_tier
    parts = [{"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]}]
    joined = [{"role": "user", "content": "first\nsecond"}]
    assert generator.prompt_ids(messages=json.dumps(parts)) == generator.prompt_ids(messages=json.dumps(joined))


def test_template_raise_exception_is_an_input_error(chat_tier: tuple[Path, Generator]) -> None:
    _, generator = chat_tier
    late_system = [{"role": "user", "content": "hi"}, {"role": "system", "content": "be nice"}]
    with pytest.raises(GenerationInputError, match="a system message may only come first"):
        generator.prepare(None, SamplingParams(max_tokens=4), messages=json.dumps(late_system))


def test_tojson_and_generation_tag_render_as_transformers_does(exported: Path, tmp_path: Path) -> None:
    directory = with_template(exported, tmp_path, TOJSON_TEMPLATE)
    template = ChatTemplate.load(directory / "model")
    assert template is not None
    expected = hf_tokenizer(directory / "hf").apply_chat_template(
        CONVERSATIONS[1], tokenize=False, add_generation_prompt=True
    )
    rendered = template.render(CONVERSATIONS[1])
    assert rendered == expected
    assert "<b>bold</b> & café" in rendered  # not HTML-escaped, not ASCII-escaped


def test_chat_template_jinja_wins_over_tokenizer_config(exported: Path, tmp_path: Path) -> None:
    directory = with_template(exported, tmp_path, TEMPLATE, as_file=True)
    generator = Generator(directory / "model")
    tokenizer = hf_tokenizer(directory / "hf")
    expected = tokenizer.apply_chat_template(CONVERSATIONS[1], tokenize=True, add_generation_prompt=True)
    assert generator.prompt_ids(messages=json.dumps(CONVERSATIONS[1])) == list(expected)


def test_named_templates_use_the_default_one(exported: Path, tmp_path: Path) -> None:
    directory = with_template(exported, tmp_path, TEMPLATE)
    config_path = directory / "model" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = [{"name": "tool_use", "template": "unused"}, {"name": "default", "template": TEMPLATE}]
    config_path.write_text(json.dumps(config))
    template = ChatTemplate.load(directory / "model")
    assert template is not None and template.source == TEMPLATE


def test_template_runs_sandboxed(exported: Path, tmp_path: Path) -> None:
    directory = with_template(exported, tmp_path, "{{ messages.append({'role': 'user', 'content': 'x'}) }}")
    template = ChatTemplate.load(directory / "model")
    assert template is not None
    with pytest.raises(ChatInputError, match="chat template refused"):
        template.render(CONVERSATIONS[0])  # the immutable sandbox forbids changing the messages


def test_greedy_chat_generation_equals_transformers_generate(chat_tier: tuple[Path, Generator]) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    directory, generator = chat_tier
    tokenizer = hf_tokenizer(directory / "hf")
    model = AutoModelForCausalLM.from_pretrained(directory / "hf").eval()
    ids = tokenizer.apply_chat_template(CONVERSATIONS[1], tokenize=True, add_generation_prompt=True)
    out = model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=12,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    new = out.sequences[0, len(ids) :].tolist()
    logprobs = [torch.log_softmax(s[0].float(), -1)[t].item() for s, t in zip(out.logits, new, strict=True)]
    result = generator.generate(None, SamplingParams(max_tokens=12), messages=json.dumps(CONVERSATIONS[1]))
    assert result.input_tokens == len(ids)
    assert result.token_ids == new
    np.testing.assert_allclose(result.logprobs, logprobs, atol=1e-3)


def test_a_conversation_above_the_context_names_the_limit(chat_tier: tuple[Path, Generator]) -> None:
    _, generator = chat_tier
    long = [{"role": "user", "content": "word " * 1200}, {"role": "assistant", "content": "ok " * 1200}]
    with pytest.raises(GenerationInputError) as caught:
        generator.prepare(None, SamplingParams(max_tokens=4), messages=json.dumps(long))
    message = str(caught.value)
    assert CONTEXT_MARKER in message and "2048 tokens" in message and "chat template" in message


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"role": "user", "content": "hi"}', "must be a JSON list"),
        ("[]", "empty list"),
        ('["hi"]', "messages[0] must be an object"),
        ('[{"role": "wizard", "content": "hi"}]', "messages[0] has role 'wizard'; the role must be one of"),
        ('[{"content": "hi"}]', "messages[0] has role None"),
        ('[{"role": "user", "content": "a"}, {"role": "user"}]', "messages[1] (user) has no 'content'"),
        ('[{"role": "user", "content": null}]', "messages[0] (user) has no 'content'"),
        (
            '[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]',
            "messages[0].content[0] is a 'image_url' part; this tier accepts only text parts",
        ),
        ('[{"role": "user", "content": 7}]', "messages[0].content must be a string or a list of text parts"),
    ],
)
def test_malformed_messages_say_what_is_wrong(payload: str, message: str) -> None:
    with pytest.raises(ChatInputError) as caught:
        parse_messages(payload)
    assert message in str(caught.value)


def test_assistant_turn_with_tool_calls_needs_no_content() -> None:
    calls = [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    parsed = parse_messages(json.dumps([{"role": "assistant", "content": None, "tool_calls": calls}]))
    assert parsed[0]["tool_calls"] == calls


def test_messages_and_raw_combinations_are_rejected(chat_tier: tuple[Path, Generator]) -> None:
    _, generator = chat_tier
    messages = json.dumps(CONVERSATIONS[0])
    with pytest.raises(GenerationInputError, match="either text_input or messages"):
        generator.prompt_ids("hello", messages)
    with pytest.raises(GenerationInputError, match="raw applies to text_input only"):
        generator.prompt_ids(None, messages, raw=True)


def test_model_without_template_takes_text_as_it_is(exported: Path) -> None:
    generator = Generator(exported)
    assert generator.chat_template is None
    text = "Hello world"
    assert generator.prompt_ids(text) == generator.encode(text) == generator.prompt_ids(text, raw=True)
    assert generator.prompt_ids(messages=json.dumps([{"role": "user", "content": text}])) == generator.encode(text)
    flat = plain_conversation(CONVERSATIONS[1])
    assert flat.startswith(f"{CONVERSATIONS[1][0]['role'].capitalize()}: ") and "\n\n" in flat
    assert generator.prompt_ids(messages=json.dumps(CONVERSATIONS[1])) == generator.encode(flat)


def test_templating_imports_neither_transformers_nor_torch(chat_tier: tuple[Path, Generator]) -> None:
    directory, _ = chat_tier
    script = (
        "import sys; from llm_router.tier.generation import Generator; "
        f"g = Generator({str(directory / 'model')!r}); g.prompt_ids('hi'); "
        "bad = [m for m in ('transformers', 'torch') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
