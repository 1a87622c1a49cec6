"""Security properties that need no server: safe policy loading, no credentials in the repository, loopback."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from llm_router.core import PolicyError, load_policy
from router_launcher.serve import ServerOptions, parse_args

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "model_repository" / "router" / "1" / "policy.yaml"


@pytest.mark.parametrize(
    "payload",
    [
        "!!python/object/apply:os.system ['touch {marker}']\n",
        "version: !!python/object/apply:os.system ['touch {marker}']\n",
        "version: !!python/object/new:subprocess.Popen [['touch', '{marker}']]\n",
        "tiers: !!python/name:os.system\n",
        "!!python/object:llm_router.core.policy.Policy {{version: 1}}\n",
    ],
)
def test_policy_loader_cannot_execute_code(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "policy.yaml"
    path.write_text(payload.format(marker=marker))
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(path)
    assert not marker.exists(), "the YAML payload ran"


def test_policy_with_a_python_tag_among_valid_fields_is_refused(tmp_path: Path) -> None:
    text = POLICY.read_text().replace("max_escalations: 2", "max_escalations: !!python/object/apply:int ['2']")
    assert "!!python" in text
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match="python/object/apply:int"):
        load_policy(path)


def test_remote_tier_keys_come_from_the_environment_and_are_not_echoed(tmp_path: Path) -> None:
    data = yaml.safe_load(POLICY.read_text())
    data["tiers"][2]["remote"] = {"url": "https://llm.example.com/v1", "api_key_env": "ROUTER_LARGE_API_KEY"}
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(data))
    assert load_policy(ok).tiers[2].remote.api_key_env == "ROUTER_LARGE_API_KEY"
    secret = "sk-live-0123456789abcdefghijklmnop"
    data["tiers"][2]["remote"]["api_key"] = secret
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(PolicyError) as info:
        load_policy(bad)
    assert "tiers[2].remote.api_key: unknown field" in str(info.value)
    assert secret not in str(info.value), "the policy error must not repeat an inline secret"


SECRET_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_-]{16,}"),  # OpenAI-style keys
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key ids
    re.compile(r"(?i)\b(api[_-]?key|secret|token|password)\b\s*[:=]\s*[\"']?[A-Za-z0-9/+_-]{12,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]


def _config_files() -> list[Path]:
    files = [ROOT / "docker-compose.yml"]
    for folder in (ROOT / "model_repository", ROOT / "docker", ROOT / "tests" / "models"):
        if folder.is_dir():
            files += [p for p in folder.rglob("*") if p.suffix in {".pbtxt", ".yaml", ".yml", ".json", ".sh", ".env"}]
    return [p for p in files if p.is_file() and "/model/" not in p.as_posix()]  # skip exported weights' configs


def test_no_credentials_in_configs() -> None:
    files = _config_files()
    assert any(p.name == "policy.yaml" for p in files) and any(p.name == "config.pbtxt" for p in files)
    found = []
    for path in files:
        text = path.read_text(errors="replace")
        for pattern in SECRET_PATTERNS:
            found += [f"{path.relative_to(ROOT)}: {m.group(0)[:40]}" for m in pattern.finditer(text)]
    assert not found, f"credential-like values in configs: {found}"


def test_secret_patterns_catch_what_they_are_for() -> None:
    samples = ['api_key: "abcdefghijklmnop1234"', "OPENAI_API_KEY=sk-abcdefghijklmnopqrstu", "token = ZXhhbXBsZXRva2Vu"]
    for sample in samples:
        assert any(p.search(sample) for p in SECRET_PATTERNS), sample
    assert not any(p.search("api_key_env: ROUTER_LARGE_API_KEY") for p in SECRET_PATTERNS)


def test_local_server_defaults_to_loopback() -> None:
    assert ServerOptions().host == "127.0.0.1"
    assert parse_args([]).host == "127.0.0.1"


def test_router_serve_defaults_are_server_options_defaults() -> None:
    """One source of defaults: the command differs from ServerOptions() only in echoing Triton's log."""
    assert parse_args([]) == replace(ServerOptions(), echo_log=True)
    assert parse_args(["--quiet"]) == ServerOptions()
    options = parse_args(["--load-model", "a", "--load-model", "b", "--stop-grace", "3", "--on-stub-exit", "off"])
    assert (options.load_models, options.stop_grace_s, options.stub_watchdog) == (["a", "b"], 3.0, "off")
