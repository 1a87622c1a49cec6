"""Shared fixtures: one real local Triton server per test session, on free ports."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import server_options, write_smoke_repository  # noqa: E402
from router_launcher.serve import LocalTritonServer  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = PROJECT_ROOT / "model_repository"
TEST_MODELS = Path(__file__).parent / "models"


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTritonServer]:
    """The project's model repository plus the test-only models, served by the real tritonserver.

    Explicit model control with every model loaded at start, so tests may load and unload models.
    """
    work = tmp_path_factory.mktemp("triton")
    extras = [write_smoke_repository(work / "generated_models")]
    if TEST_MODELS.is_dir():
        extras.append(TEST_MODELS)
    options = server_options(MODEL_REPOSITORY, work, extra_model_repositories=extras, stop_grace_s=15)
    server = LocalTritonServer(options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def grpc_client(triton_server: LocalTritonServer):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    yield client
    client.close()
