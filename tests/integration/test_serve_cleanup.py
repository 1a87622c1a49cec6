"""router-serve leaves nothing behind in the temp folder: its run folder goes on stop, a --log-file stays."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import server_options
from router_launcher.serve import LocalTritonServer

pytestmark = pytest.mark.integration


def _serve_once(repository: Path, work: Path, log_file: Path | None) -> Path:
    """Start and stop the real tritonserver on `repository`; returns the run folder it used."""
    options = server_options(
        repository, work, log_file=log_file, model_control_mode="none", load_models=[], stub_watchdog="off"
    )
    with LocalTritonServer(options) as server:
        run_dir = server._run_dir
        assert run_dir is not None and (run_dir / "backends").is_dir()
        assert server.log_path.exists()
    return run_dir


def test_stop_removes_the_run_folder_and_keeps_only_an_asked_for_log(tmp_path: Path) -> None:
    repository = tmp_path / "empty_repository"  # no models: the server is ready at once
    repository.mkdir()
    assert not _serve_once(repository, tmp_path, log_file=None).exists()  # the temp log went with it
    kept = tmp_path / "kept" / "triton.log"
    assert not _serve_once(repository, tmp_path, log_file=kept).exists()
    assert "Started GRPCInferenceService" in kept.read_text()
