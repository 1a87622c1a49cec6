"""Writes the router's live outcome records (core/records.py rows) to rotating JSONL files, off the request path.

`OutcomeRecorder.write(rows)` only puts the rows on a bounded queue; a `logging.handlers.QueueListener` thread
writes them through a `RotatingFileHandler` (size-based rotation, a fixed number of backups). A full queue drops the
rows and a failed write (full disk, removed directory, ...) is counted and reported through `on_error`, never raised:
a record is never worth failing a request.

Files: DIR/<name>.jsonl, rotated to DIR/<name>.1.jsonl ... DIR/<name>.<backups>.jsonl (1 = the most recent), so every
file keeps the .jsonl suffix that the outcome-log readers expect.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from logging.handlers import QueueListener, RotatingFileHandler
from pathlib import Path
from typing import Any

DEFAULT_MAX_BYTES = 100 * 1024 * 1024  # per file
DEFAULT_BACKUPS = 10  # rotated files kept
QUEUE_SIZE = 10_000  # rows waiting for the writer thread; more are dropped (counted)
SUFFIX = ".jsonl"
DIR_ENV = "LLM_ROUTER_OUTCOME_RECORDS_DIR"  # used when config.pbtxt leaves outcome_records_dir empty
PROMPTS_ENV = "LLM_ROUTER_OUTCOME_RECORDS_PROMPTS"


@dataclass(frozen=True)
class RecordSettings:
    """The router's outcome-record settings (config.pbtxt parameters, see `record_settings`); directory None: off."""

    directory: Path | None = None
    prompts: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS


def _flag(name: str, value: str) -> bool:
    if value.strip().lower() in ("true", "1", "yes"):
        return True
    if value.strip().lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _positive(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return number


def record_settings(parameter: Callable[[str], str | None], environ: Mapping[str, str] = os.environ) -> RecordSettings:
    """Settings from the model's config parameters (`parameter(key)`: the string value, None when absent or empty):
    `outcome_records_dir` (else $LLM_ROUTER_OUTCOME_RECORDS_DIR; neither: records off), `outcome_records_prompts`
    (else $LLM_ROUTER_OUTCOME_RECORDS_PROMPTS; default false), `outcome_records_max_bytes`,
    `outcome_records_backups`. A malformed value is a ValueError naming it (the model load fails)."""
    directory = parameter("outcome_records_dir") or environ.get(DIR_ENV) or None
    prompts = parameter("outcome_records_prompts") or environ.get(PROMPTS_ENV) or "false"
    max_bytes = parameter("outcome_records_max_bytes") or str(DEFAULT_MAX_BYTES)
    backups = parameter("outcome_records_backups") or str(DEFAULT_BACKUPS)
    return RecordSettings(
        directory=Path(directory) if directory else None,
        prompts=_flag("outcome_records_prompts", prompts),
        max_bytes=_positive("outcome_records_max_bytes", max_bytes),
        backups=_positive("outcome_records_backups", backups),
    )


def rotated_name(default_name: str) -> str:
    """RotatingFileHandler's name for a backup, 'DIR/x.jsonl.3', as 'DIR/x.3.jsonl' (the readers need .jsonl)."""
    stem, _, number = default_name.rpartition(".")
    if number.isdigit() and stem.endswith(SUFFIX):
        return f"{stem[: -len(SUFFIX)]}.{number}{SUFFIX}"
    return default_name


class _Handler(RotatingFileHandler):
    """A RotatingFileHandler that counts failed writes instead of printing a traceback for each."""

    def __init__(self, path: Path, max_bytes: int, backups: int, on_error: Callable[[str], None]) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
        self.namer = rotated_name
        self.on_error = on_error
        self.handled = 0
        self.failed = 0

    def handle(self, record: logging.LogRecord) -> bool:
        self.handled += 1
        return bool(super().handle(record))

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self.failed += 1
        error = sys.exc_info()[1]
        if self.stream is not None:  # reopen at the next write (e.g. the directory is back)
            try:
                self.stream.close()
            except OSError:
                pass
            self.stream = None  # type: ignore[assignment]
        self.on_error(f"outcome record not written to {self.baseFilename}: {error} ({self.failed} failed so far)")


class OutcomeRecorder:
    """Rows appended to DIR/<name>.jsonl by a background thread; `written`, `failed` and `dropped` count them."""

    def __init__(
        self,
        directory: str | Path,
        name: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
        on_error: Callable[[str], None] | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        if max_bytes < 1 or backups < 1:
            # RotatingFileHandler never rotates with 0 and would grow one file without bound
            raise ValueError(f"outcome records need max_bytes >= 1 and backups >= 1, got {max_bytes}, {backups}")
        self.directory = Path(directory)
        self.path = self.directory / f"{name}{SUFFIX}"
        self._report = on_error or (lambda message: None)
        self._lock = threading.Lock()
        self.dropped = 0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # the writes fail and are counted until the directory can be made
            self._report(f"outcome records directory {self.directory}: {exc}")
        self._handler = _Handler(self.path, max_bytes, backups, self._on_write_error)
        self._queue: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=queue_size)
        self._listener = QueueListener(self._queue, self._handler)
        self._listener.start()

    def _on_write_error(self, message: str) -> None:
        failed = self._handler.failed
        if failed & (failed - 1) == 0:  # the 1st, 2nd, 4th, 8th ... failure: a full disk must not flood the log
            self._report(message)

    @property
    def failed(self) -> int:
        return self._handler.failed

    @property
    def written(self) -> int:
        return self._handler.handled - self._handler.failed

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        """Queue the rows for writing (never raises; a full queue drops them and counts it)."""
        for row in rows:
            try:
                line = json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
                self._queue.put_nowait(logging.makeLogRecord({"msg": line}))
            except queue.Full:
                with self._lock:
                    self.dropped += 1
                    dropped = self.dropped
                if dropped & (dropped - 1) == 0:
                    self._report(f"outcome records queue full: {dropped} row(s) dropped so far")
            except (TypeError, ValueError) as exc:  # not JSON: a bug, but still no reason to fail the request
                self._report(f"outcome record not serializable: {exc}")

    def close(self) -> None:
        """Write what is queued, then stop the thread and close the file."""
        self._listener.stop()
        self._handler.close()
