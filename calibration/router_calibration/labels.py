"""Labels for the router's live outcome records: `router-calibrate join-labels`.

    router-calibrate join-labels --records DIR_OR_FILE [...] --labels FEEDBACK.jsonl --out LABELLED.jsonl
        [--group-by request|prompt] [--keep-unlabelled] [--proxy-labels] [--json]

Records (core/records.py: one row per attempt, `prompt_id` = the request id, no label) are joined to a labels file:
the OpenAI front's feedback JSONL, or any JSONL/CSV with `id` (or `prompt_id`) and `score` (0..1) or `correct`
(true/false). A later label for the same id replaces an earlier one.

A label judges the answer the client got, so it goes to the request's accepted attempt (its tier). It says nothing
about an attempt escalated from (its answer was discarded unseen: a right final answer does not make the cheaper one
wrong, nor right), so such attempts get no label and are left out of the output (`--keep-unlabelled` writes them,
and the unlabelled requests, without a label: replay reads them, fitting refuses them and names the column). Failed
attempts (error/timeout) need no label and are kept: replay counts them as failures, as a missing row.

`fit` needs every tier's labelled answer for every prompt. Live traffic has one answered tier per request, so the
labelled sample for a fit is collected by sending each sampled prompt to every tier (OpenAI model = the tier name)
and labelling each answer; with records that carry the prompt text (`outcome_records_prompts`), `--group-by prompt`
joins the requests of one prompt text into one prompt (prompt_id: its first request id) with a row per tier.

Shadow evaluation (policy `shadow_rate`) adds a `shadow` row of the largest allowed tier with `agreement`, the token
F1 of the request's answer against that tier's. With `--proxy-labels`, a request without a label but with such a row
is labelled by it: its accepted attempt scores `agreement` and the shadow row 1 (the larger tier is the reference),
so quality is measured relative to the largest tier without a human. Without the flag shadow rows are unlabelled.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from router_calibration.logs import OutcomeLogError, OutcomeRow, _number, iter_raw_rows, record_files

ID_COLUMNS = ("id", "prompt_id", "request_id")


@dataclass
class JoinReport:
    """What `join_labels` matched: counts of requests, labels and rows."""

    records: int = 0  # attempt rows read
    requests: int = 0  # distinct request ids in the records
    labels: int = 0  # distinct label ids
    matched: int = 0  # requests with a label on their accepted attempt
    unmatched_labels: int = 0  # label ids with no request in the records
    labels_without_answer: int = 0  # labelled requests that no tier answered (failed)
    unlabelled_requests: int = 0  # requests without a label
    rows_written: int = 0
    unlabelled_attempts_left_out: int = 0  # OK attempts without a label (escalated from, or unlabelled requests)
    prompts: int = 0  # distinct prompt_ids written
    duplicate_tier_rows: int = 0  # --group-by prompt: a second row for a (prompt, tier), dropped
    proxy_labelled: int = 0  # requests labelled by their shadow row's agreement (--proxy-labels)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def label_value(raw: dict[str, Any], where: str) -> tuple[str, float]:
    """(id, score in [0, 1]) of one labels row; OutcomeLogError naming the column otherwise."""
    ident = next((str(raw[c]) for c in ID_COLUMNS if raw.get(c) not in (None, "")), None)
    if ident is None:
        raise OutcomeLogError(f"{where}: missing column 'id' (or 'prompt_id'): which completion is labelled")
    given = [c for c in ("score", "correct") if raw.get(c) not in (None, "")]
    if len(given) != 1:
        raise OutcomeLogError(f"{where}: give exactly one of the columns 'score' (0..1) or 'correct' (true/false)")
    value = _number(raw[given[0]])
    if isinstance(value, bool):
        value = float(value)
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise OutcomeLogError(f"{where}: {given[0]}: not a number or true/false: {raw[given[0]]!r}") from None
    if not 0.0 <= score <= 1.0:  # also refuses NaN
        raise OutcomeLogError(f"{where}: {given[0]} must be in [0, 1], got {raw[given[0]]!r}")
    return ident, score


def read_labels(path: str | Path) -> tuple[dict[str, float], int]:
    """{id: score} of a labels file (JSONL or CSV, .gz too; the last label of an id wins) and how many labels were
    replaced by a later one."""
    labels: dict[str, float] = {}
    replaced = 0
    for where, raw in iter_raw_rows(path):
        ident, score = label_value(raw, where)
        replaced += ident in labels
        labels[ident] = score
    return labels, replaced


def read_records(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The raw record rows of files and directories (a directory: its .jsonl files, rotated ones included), each
    checked against the outcome-log format."""
    rows = []
    for path in paths:
        files = record_files(path) if Path(path).is_dir() else [Path(path)]
        for f in files:
            for where, raw in iter_raw_rows(f):
                OutcomeRow.from_raw(raw, where)  # a malformed record is named here, not in fit
                rows.append(raw)
    return rows


def _flag(row: dict[str, Any], column: str) -> bool:
    """A record's boolean column: JSON true, or "true" in a CSV."""
    value = row.get(column)
    return value is True or str(value).lower() == "true"


def _is_accepted(row: dict[str, Any]) -> bool:
    return _flag(row, "accepted") or row.get("result") == "accepted"


def _ok(row: dict[str, Any]) -> bool:
    return str(row.get("outcome") or row.get("status") or "ok").lower() == "ok"


def _proxy_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The request's answered shadow row that has an agreement, if any."""
    for row in rows:
        if _flag(row, "shadow") and _ok(row) and row.get("agreement") not in (None, ""):
            return row
    return None


def join_labels(
    records: Iterable[dict[str, Any]],
    labels: dict[str, float],
    group_by: str = "request",
    keep_unlabelled: bool = False,
    proxy: bool = False,
) -> tuple[list[dict[str, Any]], JoinReport]:
    """Outcome-log rows: each labelled request's accepted attempt with `score`, its failed attempts, and (with
    `keep_unlabelled`) every other attempt without a label. `group_by` "prompt" makes requests with the same
    `prompt` text one prompt; `proxy` labels unlabelled requests by their shadow rows (see the module docstring)."""
    if group_by not in ("request", "prompt"):
        raise ValueError(f"group_by must be 'request' or 'prompt', got {group_by!r}")
    by_request: dict[str, list[dict[str, Any]]] = defaultdict(list)
    report = JoinReport(labels=len(labels))
    for row in records:
        by_request[str(row["prompt_id"])].append(row)
        report.records += 1
    report.requests = len(by_request)
    report.unmatched_labels = sum(1 for ident in labels if ident not in by_request)
    kept: list[tuple[str, dict[str, Any], bool]] = []  # (request id, row, labelled)
    for request_id, rows in by_request.items():
        score = labels.get(request_id)
        answered = any(_is_accepted(r) for r in rows)
        shadow = _proxy_row(rows) if proxy and score is None and answered else None
        if shadow is not None:
            score = float(shadow["agreement"])
            report.proxy_labelled += 1
        elif score is None:
            report.unlabelled_requests += 1
        elif answered:
            report.matched += 1
        else:
            report.labels_without_answer += 1
        for row in rows:
            if score is not None and _is_accepted(row):
                kept.append((request_id, {**row, "score": score}, True))
            elif row is shadow:
                kept.append((request_id, {**row, "score": 1.0}, True))
            elif not _ok(row):
                if score is not None or keep_unlabelled:
                    kept.append((request_id, row, False))
            elif keep_unlabelled:
                kept.append((request_id, row, False))
            else:
                report.unlabelled_attempts_left_out += 1
    out = _group_by_prompt(kept, report) if group_by == "prompt" else [row for _, row, _ in kept]
    report.rows_written = len(out)
    report.prompts = len({r["prompt_id"] for r in out})
    return out, report


def _group_by_prompt(kept: list[tuple[str, dict[str, Any], bool]], report: JoinReport) -> list[dict[str, Any]]:
    """One prompt per prompt text (prompt_id: its first request id); per tier a labelled row beats an unlabelled
    one, then the earlier one stays."""
    missing = sum(1 for _, row, _ in kept if not row.get("prompt"))
    if missing:
        raise OutcomeLogError(
            f"--group-by prompt needs the prompt text in the records: {missing} row(s) have no 'prompt' column "
            "(write records with outcome_records_prompts true)"
        )
    first_id: dict[str, str] = {}
    chosen: dict[tuple[str, str], tuple[dict[str, Any], bool]] = {}
    for request_id, row, labelled in kept:
        pid = first_id.setdefault(row["prompt"], request_id)
        key = (pid, str(row["tier"]))
        if key in chosen:
            report.duplicate_tier_rows += 1
            if not labelled or chosen[key][1]:
                continue
        chosen[key] = ({**row, "prompt_id": pid, "request_id": request_id}, labelled)
    return [row for row, _ in chosen.values()]


def write_rows(rows: Iterable[dict[str, Any]], path: str | Path) -> None:
    """JSONL, one row a line (strict JSON)."""
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n")


def add_parser(sub: Any) -> None:
    """The `join-labels` command on router-calibrate's subparsers."""
    p = sub.add_parser("join-labels", help="join feedback labels to the router's live outcome records")
    p.add_argument(
        "--records", type=Path, nargs="+", required=True, help="record files or directories (outcome_records_dir)"
    )
    p.add_argument("--labels", type=Path, required=True, help="JSONL/CSV with id and score (0..1) or correct")
    p.add_argument("--out", type=Path, required=True, help="the labelled outcome log to write (JSONL)")
    p.add_argument(
        "--group-by",
        choices=["request", "prompt"],
        default="request",
        help="one prompt per request id (default), or per prompt text (records written with prompts)",
    )
    p.add_argument(
        "--keep-unlabelled", action="store_true", help="also write attempts without a label (replay only, not fit)"
    )
    p.add_argument(
        "--proxy-labels",
        action="store_true",
        help="label requests without a label by their shadow row's agreement (policy shadow_rate)",
    )
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object")


def run(args: argparse.Namespace) -> list[str]:
    """`router-calibrate join-labels`: the report lines."""
    labels, replaced = read_labels(args.labels)
    records = read_records(args.records)
    rows, report = join_labels(records, labels, args.group_by, args.keep_unlabelled, args.proxy_labels)
    write_rows(rows, args.out)
    counts = {**report.to_dict(), "labels_replaced": replaced, "out": str(args.out)}
    if args.json:
        return [json.dumps(counts)]
    tiers = Counter(str(r["tier"]) for r in rows if "score" in r)
    by_tier = ", ".join(f"{t} {n}" for t, n in sorted(tiers.items())) or "none"
    dropped = report.duplicate_tier_rows
    return [
        f"records: {report.records} attempt rows of {report.requests} requests; labels: {report.labels} ids "
        f"({replaced} replaced by a later label)",
        f"matched: {report.matched} requests labelled; unmatched labels: {report.unmatched_labels}; labels of "
        f"requests no tier answered: {report.labels_without_answer}; unlabelled requests: {report.unlabelled_requests}",
        f"wrote {report.rows_written} rows ({report.prompts} prompts) to {args.out}; labelled rows by tier: {by_tier}; "
        f"unlabelled OK attempts left out: {report.unlabelled_attempts_left_out}"
        + (f"; duplicate (prompt, tier) rows dropped: {dropped}" if dropped else "")
        + (f"; requests labelled by shadow agreement: {report.proxy_labelled}" if report.proxy_labelled else ""),
    ]
