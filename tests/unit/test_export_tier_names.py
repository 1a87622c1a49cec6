"""router-export-tier refuses to export into a model that is not a tier (e.g. `--tier router`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from router_export import tiers

PROJECT_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A model repository with the project's router and tier_small configs (no weights)."""
    repo = tmp_path / "model_repository"
    for model in ("router", "tier_small"):
        (repo / model).mkdir(parents=True)
        shutil.copy2(PROJECT_REPOSITORY / model / "config.pbtxt", repo / model / "config.pbtxt")
    return repo


@pytest.mark.parametrize("name", ["router", "router_stream_like"])
def test_a_model_that_is_not_a_tier_is_refused(
    repository: Path, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if name != "router":  # any model whose config lacks the tier interface, whatever its name
        shutil.copytree(repository / "router", repository / name)
    before = sorted(p.relative_to(repository) for p in repository.rglob("*"))
    code = tiers.main([str(tmp_path / "no_such_checkpoint"), "--tier", name, "--model-repository", str(repository)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"router-export-tier: {name!r} in {repository} is not a tier" in err and "output_log_probs" in err
    assert sorted(p.relative_to(repository) for p in repository.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("name", ["tier_small", "tier_new"])
def test_a_tier_or_a_new_name_passes_the_check(
    repository: Path, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = tiers.main([str(tmp_path / "no_such_checkpoint"), "--tier", name, "--model-repository", str(repository)])
    assert code == 2  # it goes on to the source, which does not exist here
    err = capsys.readouterr().err
    assert "is not a tier" not in err and "no_such_checkpoint" in err
