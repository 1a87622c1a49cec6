"""Shared fixtures: one real local Triton server per test session, on free ports.

The server serves the project's repository with tiny stand-ins in place of the real tiers (router_export.stand_in:
`artifacts/test_model_repository/`, symlinks), so tests stay fast; tests/integration/test_real_tier_small.py serves
the real tier_small on a server of its own.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import server_options, write_smoke_repository  # noqa: E402
from router_export.stand_in import overlay_repository  # noqa: E402
from router_launcher.serve import LocalTritonServer  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = PROJECT_ROOT / "model_repository"
# What the tests serve: MODEL_REPOSITORY with its stand-ins (refreshed here, so models added since `make models` show).
TEST_MODEL_REPOSITORY = overlay_repository(MODEL_REPOSITORY)
TEST_MODELS = Path(__file__).parent / "models"


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTritonServer]:
    """The project's model repository (with stand-ins) plus the test-only models, served by the real tritonserver.

    Explicit model control with every model loaded at start, so tests may load and unload models.
    """
    work = tmp_path_factory.mktemp("triton")
    extras = [write_smoke_repository(work / "generated_models")]
    if TEST_MODELS.is_dir():
        extras.append(TEST_MODELS)
    options = server_options(TEST_MODEL_REPOSITORY, work, extra_model_repositories=extras, stop_grace_s=15)
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
