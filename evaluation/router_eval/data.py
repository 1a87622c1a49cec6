"""Labelled evaluation rows: the JSONL format, its validation (errors name the line) and the graders.

One JSON object per line:

    {"id": "cap-fr", "prompt": "What is the capital of France?", "answers": ["Paris"], "grader": "contains"}
    {"id": "s1", "messages": [{"role": "user", "content": "..."}], "answers": ["positive"], "grader": "choice",
     "choices": ["positive", "negative"]}

- ``id``: unique in the file. ``prompt`` (a string) or ``messages`` (OpenAI-style, text only), not both.
  Messages become one prompt as in the OpenAI front: one user message is sent verbatim, otherwise each message
  becomes ``<Role>: <content>``, separated by a blank line.
- ``answers``: the accepted answers (at least one). ``grader``: how an output is graded against them:
  ``contains`` (an answer appears in the output as whole words, after normalisation), ``exact`` (the output's
  first line equals an answer, after normalisation), ``number`` (the output's LAST number equals a numeric
  answer, GSM8K's convention), ``choice`` (of ``choices``, the one the output names first is an accepted answer).
- Optional: ``choices`` (required for and only for ``choice``; must contain every answer), ``source`` (a label
  for per-source figures, e.g. ``nq_open``).

Normalisation (SQuAD's): lower case, punctuation removed, the articles a/an/the removed, whitespace collapsed.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

GRADERS = ("contains", "exact", "number", "choice")
Grader = Literal["contains", "exact", "number", "choice"]


class EvalDataError(ValueError):
    """An evaluation file is unreadable or a row is invalid; the message names the file and line."""


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str


class EvalRow(BaseModel):
    """One labelled prompt (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    prompt: str | None = None
    messages: list[Message] | None = Field(default=None, min_length=1)
    answers: list[str] = Field(min_length=1)
    grader: Grader
    choices: list[str] | None = Field(default=None, min_length=2)
    source: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        # ids written as numbers are fine; anything else must be a string
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("answers", "choices")
    @classmethod
    def _non_blank(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not v.strip() for v in value):
            raise ValueError("must not contain empty strings")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EvalRow:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` and `messages`")
        if not self.prompt_text.strip():
            raise ValueError("the prompt is empty")
        if self.grader == "choice":
            if not self.choices:
                raise ValueError("grader `choice` needs `choices` (the labels the prompt offers)")
            known = {normalize(c) for c in self.choices}
            missing = [a for a in self.answers if normalize(a) not in known]
            if missing:
                raise ValueError(f"answers {missing} are not among the choices {self.choices}")
        elif self.choices is not None:
            raise ValueError(f"`choices` is only for grader `choice` (this row's grader is {self.grader!r})")
        if self.grader == "number":
            bad = [a for a in self.answers if parse_number(a) is None]
            if bad:
                raise ValueError(f"grader `number` needs numeric answers, got {bad}")
        return self

    @property
    def prompt_text(self) -> str:
        """The text sent to the server (messages rendered as the OpenAI front does)."""
        if self.prompt is not None:
            return self.prompt
        messages = self.messages or []
        if len(messages) == 1 and messages[0].role == "user":
            return messages[0].content
        return "\n\n".join(f"{m.role.capitalize()}: {m.content}" for m in messages if m.content)

    def grade(self, output: str) -> bool:
        return grade(self.grader, output, self.answers, self.choices)


def _format_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (fields: id, prompt, messages, answers, grader, choices, source)"
        elif err["type"] == "literal_error" and err["loc"] == ("grader",):
            msg = f"unknown grader {err['input']!r} (graders: {', '.join(GRADERS)})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_row(obj: Any, where: str) -> EvalRow:
    """Validate one decoded row; EvalDataError starting with `where` (file:line) otherwise."""
    if not isinstance(obj, dict):
        raise EvalDataError(f"{where}: a row must be a JSON object, got {type(obj).__name__}")
    try:
        return EvalRow.model_validate(obj)
    except ValidationError as exc:
        raise EvalDataError(f"{where}: {_format_error(exc)}") from None


def load_rows(path: str | Path) -> list[EvalRow]:
    """Every row of a JSONL file, validated; ids must be unique. Blank lines are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalDataError(f"{path}: cannot read: {exc}") from None
    rows: list[EvalRow] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalDataError(f"{where}: not valid JSON: {exc}") from None
        row = parse_row(obj, where)
        if row.id in seen:
            raise EvalDataError(f"{where}: id {row.id!r} already used on line {seen[row.id]}")
        seen[row.id] = n
        rows.append(row)
    if not rows:
        raise EvalDataError(f"{path}: no rows")
    return rows


def write_rows(rows: Sequence[EvalRow | dict[str, Any]], path: str | Path) -> None:
    """Write rows as JSONL (unset optional fields left out)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            data = row.model_dump(exclude_none=True) if isinstance(row, EvalRow) else row
            fh.write(json.dumps(data, ensure_ascii=False) + "\n")


# -- graders ----

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation + "‘’“”–—"})
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?|-?\.\d+")


def normalize(text: str) -> str:
    """SQuAD-style: lower case, punctuation and articles removed, whitespace collapsed."""
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def parse_number(text: str) -> float | None:
    """The number `text` is (thousands separators allowed), or None."""
    text = text.strip().replace(",", "")
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _contains(haystack: str, needle: str) -> bool:
    return bool(needle) and f" {needle} " in f" {haystack} "


def first_choice(output: str, choices: Sequence[str]) -> str | None:
    """The choice the output names first (whole words, normalised); the longer one when two start together."""
    text = f" {normalize(output)} "
    best: tuple[int, int, str] | None = None
    for choice in choices:
        norm = normalize(choice)
        pos = text.find(f" {norm} ") if norm else -1
        if pos >= 0 and (best is None or (pos, -len(norm)) < best[:2]):
            best = (pos, -len(norm), choice)
    return best[2] if best else None


def grade(grader: str, output: str, answers: Sequence[str], choices: Sequence[str] | None = None) -> bool:
    """True when `output` is a correct answer (see the module docstring for each grader)."""
    if grader == "contains":
        out = normalize(output)
        return any(_contains(out, normalize(a)) for a in answers)
    if grader == "exact":
        first_line = next((line for line in output.strip().splitlines() if line.strip()), "")
        return any(normalize(first_line) == normalize(a) for a in answers)
    if grader == "number":
        found = _NUMBER.findall(output)
        value = parse_number(found[-1]) if found else None
        if value is None:
            return False
        targets = [t for t in (parse_number(a) for a in answers) if t is not None]
        return any(math.isclose(value, t, rel_tol=1e-9, abs_tol=1e-9) for t in targets)
    if grader == "choice":
        if not choices:
            raise ValueError("grader `choice` needs choices")
        picked = first_choice(output, choices)
        return picked is not None and normalize(picked) in {normalize(a) for a in answers}
    raise ValueError(f"unknown grader {grader!r} (graders: {', '.join(GRADERS)})")


@dataclass(frozen=True)
class RowSummary:
    """Counts per source and grader (printed by build-data)."""

    n: int
    by_source: dict[str, int]
    by_grader: dict[str, int]

    @classmethod
    def of(cls, rows: Sequence[EvalRow]) -> RowSummary:
        by_source: dict[str, int] = {}
        by_grader: dict[str, int] = {}
        for r in rows:
            by_source[r.source or ""] = by_source.get(r.source or "", 0) + 1
            by_grader[r.grader] = by_grader.get(r.grader, 0) + 1
        return cls(len(rows), by_source, by_grader)
