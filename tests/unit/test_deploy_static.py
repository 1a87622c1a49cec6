"""Static checks of the GPU deployment (no GPU, no Docker engine): model configs, compose, Prometheus, Grafana,
the Dockerfile and the deployment docs (docs/deploy-gpu.md, the README's short section) agree with each other and
with the router's names; the README's and docs' links resolve."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

ROOT = Path(__file__).resolve().parents[2]
REPO = ROOT / "model_repository"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
PROMETHEUS = ROOT / "docker" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "docker" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "router.json"
METRICS_PY = ROOT / "python_backend" / "llm_router" / "router" / "metrics.py"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
DEPLOY_DOC = DOCS / "deploy-gpu.md"
DEPLOY_SECTION = "## Deploying on a GPU host"

CONFIGS = sorted(REPO.glob("*/config.pbtxt"))
STANDARD_MODELS = {"router", "router_stream", "intent_classifier", "tier_small", "tier_medium", "tier_large"}
# The router's metric contract (declared in METRICS_PY, read by the Grafana dashboard): name -> labels besides `model`.
ROUTER_METRICS = {
    "router_requests_total": {"intent", "tier"},
    "router_escalations_total": {"from_tier", "to_tier"},
    "router_cost_usd_total": set(),
    "router_cost_saved_usd_total": set(),
    "router_tokens_wasted_total": {"tier"},
    "router_confidence": {"tier"},
    "router_overhead_ms": set(),
    "router_fallbacks_total": {"tier", "reason"},
    # the drift alarms' live denominator and fitted band (llm_router.core.drift)
    "router_tier_attempts_total": {"tier"},
    "router_fitted_escalation_rate": {"tier"},
    "router_fitted_confidence": {"tier", "quantile"},
    "router_fitted_attempts": {"tier"},
    "router_policy_version": set(),
}
OPTIONAL_ROUTER_METRICS = {"router_failures_total"}
TRITON_METRICS = {"nv_inference_request_success", "nv_inference_queue_duration_us", "nv_inference_request_duration_us"}

TYPE = mc.DataType.Name


def _parse(path: Path) -> mc.ModelConfig:
    config = mc.ModelConfig()
    text_format.Parse(path.read_text(encoding="utf-8"), config)
    return config


def _io(tensors) -> dict[str, tuple[str, list[int]]]:
    return {t.name: (TYPE(t.data_type), list(t.dims)) for t in tensors}


# -- model configs ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", CONFIGS, ids=[p.parent.name for p in CONFIGS])
def test_config_parses_and_is_named_after_its_folder(path):
    config = _parse(path)
    assert config.name == path.parent.name, f"{path}: name {config.name!r} differs from its folder"
    assert config.backend or config.platform, f"{path}: neither backend nor platform"
    if config.backend == "python":
        assert list(path.parent.glob("[0-9]*/model.py")), f"{path.parent}: Python model without <version>/model.py"


def _present(name: str) -> mc.ModelConfig:
    path = REPO / name / "config.pbtxt"
    if not path.is_file():
        pytest.skip(f"{name} is not in model_repository/ yet")
    return _parse(path)


@pytest.mark.parametrize("name", ["router", "router_stream"])
def test_router_interface(name):
    config = _present(name)
    assert config.max_batch_size == 0
    inputs = {t.name: t for t in config.input}
    assert _io(config.input)["text_input"] == ("TYPE_STRING", [1])
    assert _io(config.input)["max_tokens"] == ("TYPE_INT32", [1]) and inputs["max_tokens"].optional
    assert _io(config.output) == {
        "text_output": ("TYPE_STRING", [1]),
        "tier": ("TYPE_STRING", [1]),
        "escalated": ("TYPE_BOOL", [1]),
        "cost": ("TYPE_FP32", [1]),
        "route": ("TYPE_STRING", [1]),
    }
    assert config.model_transaction_policy.decoupled == (name == "router_stream")


TIERS = sorted(p.parent.name for p in CONFIGS if p.parent.name.startswith("tier_"))


@pytest.mark.parametrize("name", TIERS)
def test_tier_interface(name):
    config = _parse(REPO / name / "config.pbtxt")
    assert config.model_transaction_policy.decoupled, "tiers are decoupled (streaming)"
    inputs, outputs = _io(config.input), _io(config.output)
    assert inputs["text_input"][0] == "TYPE_STRING" and inputs["max_tokens"][0] == "TYPE_INT32"
    for out in ("text_output", "output_log_probs", "cum_log_probs", "input_tokens", "output_tokens"):
        assert out in outputs, f"{name} lacks output {out}"


def test_intent_classifier_interface():
    config = _present("intent_classifier")
    assert config.platform == "ensemble" and config.max_batch_size > 0
    assert _io(config.input) == {"text": ("TYPE_STRING", [1])}
    outputs = _io(config.output)
    assert outputs["intent_probs"] == ("TYPE_FP32", [9])
    assert outputs["intent"] == ("TYPE_STRING", [1]) and outputs["difficulty"] == ("TYPE_FP32", [1])
    present = {p.parent.name for p in CONFIGS}
    for step in config.ensemble_scheduling.step:
        assert step.model_name in present, f"ensemble step {step.model_name!r} is not in model_repository/"


def test_policies_name_present_tiers():
    policies = sorted(REPO.glob("router/*/policy.yaml"))
    if not policies:
        pytest.skip("no model_repository/router/<version>/policy.yaml yet")
    present = {p.parent.name for p in CONFIGS}
    if not any(name.startswith("tier_") for name in present):
        pytest.skip("no tier model in model_repository/ yet")
    for path in policies:
        policy = yaml.safe_load(path.read_text())
        for tier in policy["tiers"]:
            if tier.get("remote"):
                continue  # served elsewhere (another Triton server or an OpenAI-compatible endpoint)
            assert tier["name"] in present, f"{path}: tier {tier['name']!r} has no model in model_repository/"


# -- compose -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _ports(service: dict) -> dict[int, int]:
    """host port -> container port"""
    out = {}
    for item in service.get("ports", []):
        host, _, container = str(item).rpartition(":")
        out[int(host)] = int(container)
    return out


def _mounts(service: dict) -> list[tuple[str, str]]:
    return [tuple(str(v).split(":")[:2]) for v in service.get("volumes", [])]


def test_compose_services(compose):
    services = compose["services"]
    assert {"triton", "export", "prometheus", "grafana"} <= set(services)
    triton = services["triton"]
    assert _ports(triton) == {8000: 8000, 8001: 8001, 8002: 8002}
    (gpu,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert triton["shm_size"] and triton["ulimits"] == {"memlock": -1, "stack": 67108864}
    probe = triton["healthcheck"]["test"]
    # model readiness of everything the router needs (server readiness stays false after a policy reload in 2.51)
    # and the stubs of the READY Python models (router_launcher.watchdog check)
    assert probe[:5] == ["CMD", "python", "-m", "router_launcher.watchdog", "check"]
    from router_launcher.watchdog import main as watchdog_main

    with pytest.raises(SystemExit) as parsed:  # the probe's arguments parse (--help after them exits 0)
        watchdog_main([*probe[4:], "--help"])
    assert parsed.value.code == 0
    models = probe[probe.index("--models") + 1 :]
    assert set(models) == {"router", "router_stream", "intent_classifier", "tier_small", "tier_medium", "tier_large"}
    command = triton["command"]
    assert command[0] == "router-serve" and "--triton-home=/opt/tritonserver" in command
    from router_launcher.serve import parse_args

    options = parse_args(command[1:])  # router-serve accepts every flag the service passes
    assert options.host == "0.0.0.0" and options.stub_watchdog == "restart"
    assert options.model_control_mode == "explicit" and options.load_models == ["*"]
    assert options.stop_grace_s < int(triton["stop_grace_period"].rstrip("s")), "docker must wait for router-serve"
    repo_flag = next(c for c in command if c.startswith("--model-repository="))
    assert (repo_flag.split("=", 1)[1]) in {target for _, target in _mounts(triton)}
    assert triton["depends_on"]["export"]["condition"] == "service_completed_successfully"


def test_compose_export_builds_then_renders_into_what_triton_serves(compose):
    export, triton = compose["services"]["export"], compose["services"]["triton"]
    script = " ".join(export["command"]) if isinstance(export["command"], list) else export["command"]
    assert "router-build-models --model-repository /models" in script
    match = re.search(r"router_export\.gpu_configs --model-repository /models --out (\S+)", script)
    assert match, "export must render the GPU configs"
    export_mounts = dict((target, source) for source, target in _mounts(export))
    triton_mounts = dict((target, source) for source, target in _mounts(triton))
    assert export_mounts["/models"] == "./model_repository"
    assert export_mounts[match.group(1)] == triton_mounts["/models"], "triton must serve the rendered repository"


def test_compose_paths_volumes_and_build(compose):
    declared = set(compose.get("volumes", {}))
    used = set()
    for name, service in compose["services"].items():
        for source, _ in _mounts(service):
            if source.startswith(("./", "/")):
                if "${" not in source:
                    assert (ROOT / source).exists(), f"{name}: bind mount source {source} does not exist"
            elif source.startswith("${"):
                continue
            else:
                used.add(source)
                assert source in declared, f"{name}: volume {source} is not declared"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    assert declared == used, f"declared but unused volumes: {declared - used}"


def test_docker_compose_config_validates():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose validates offline)")
    for profile in ([], ["--profile", "trtllm"]):
        result = subprocess.run(
            [exe, "-f", str(COMPOSE), *profile, "config", "-q"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr


# -- Dockerfile ------------------------------------------------------------------------------------------------------
def _triton_release(tag: str) -> str:
    """NGC yy.mm -> Triton 2.x (24.10 -> 2.51): one minor release per month."""
    yy, mm = (int(p) for p in tag.split("."))
    return f"2.{yy * 12 + mm - 247}"


def test_dockerfile_matches_the_local_triton_release():
    text = DOCKERFILE.read_text()
    (tag,) = re.findall(r"^FROM nvcr\.io/nvidia/tritonserver:(\d\d\.\d\d)-py3\s*$", text, re.M)
    pinned = re.search(r"^tritonclient==(\d+\.\d+)", (ROOT / "constraints.txt").read_text(), re.M)
    assert pinned and _triton_release(tag) == pinned.group(1), "image and tritonclient/pytriton releases differ"
    assert "python_backend_stubs/3.11/triton_python_backend_stub" in text, "the 3.11 stub must replace the 3.10 one"
    assert re.search(r"onnxruntime-gpu==", text)
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", ".git", "artifacts", "**/*.onnx", "**/*.safetensors"):
        assert entry in ignored


# -- Prometheus and Grafana --------------------------------------------------------------------------------------------
def test_prometheus_scrapes_triton_metrics_port(compose):
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert "triton:8002" in targets
    assert _ports(compose["services"]["triton"])[8002] == 8002
    for target in targets:
        assert target.split(":")[0] in compose["services"], f"{target}: no such compose service"
    mounts = {t: s for s, t in _mounts(compose["services"]["prometheus"])}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./docker/prometheus/prometheus.yml"


def test_grafana_provisioning(compose):
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "router.yml").read_text())
    mounts = {t: s for s, t in _mounts(compose["services"]["grafana"])}
    (provider,) = providers["providers"]
    assert mounts[provider["options"]["path"]] == "./docker/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./docker/grafana/provisioning"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == ds["uid"], panel["title"]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _metric_names(expr: str) -> set[str]:
    unquoted = re.sub(r'"[^"]*"', '""', expr)  # label values (model=~"router|router_stream") are not metrics
    names = set(re.findall(r"\b((?:router|nv)_[a-z_]+)\b", unquoted))
    return {re.sub(r"_(bucket|sum|count)$", "", n) if n.startswith("router_") else n for n in names}


def test_dashboard_uses_the_metric_contract():
    exprs = _dashboard_exprs()
    used = set().union(*(_metric_names(e) for e in exprs))
    router_used = {n for n in used if n.startswith("router_")}
    assert set(ROUTER_METRICS) <= router_used, f"not on the dashboard: {set(ROUTER_METRICS) - router_used}"
    assert router_used <= set(ROUTER_METRICS) | OPTIONAL_ROUTER_METRICS, "unknown router metric (typo?)"
    assert TRITON_METRICS <= used
    for expr in exprs:  # labels grouped by must exist on the metric
        for labels, metric in re.findall(r"by \(([^)]*)\) \((?:rate|increase)\((router_\w+?)(?:_bucket)?\[", expr):
            allowed = ROUTER_METRICS.get(metric, set()) | {"le", "model"}
            assert {lbl.strip() for lbl in labels.split(",")} <= allowed, expr
    for name in ("router_confidence", "router_overhead_ms"):  # histograms are read through _bucket
        assert any(f"{name}_bucket" in e for e in exprs)


def test_router_declares_the_metric_contract():
    declared = set(re.findall(r'MetricFamily\(\s*"(\w+)"', METRICS_PY.read_text()))
    assert set(ROUTER_METRICS) <= declared, f"the router does not declare {set(ROUTER_METRICS) - declared}"
    used = {n for e in _dashboard_exprs() for n in _metric_names(e) if n.startswith("router_")}
    assert used <= declared, f"the dashboard reads metrics the router never sets: {used - declared}"


# -- README ------------------------------------------------------------------------------------------------------------
def deploy_section(readme: str) -> str | None:
    start = readme.find(DEPLOY_SECTION + "\n")
    if start < 0:
        return None
    rest = readme[start + len(DEPLOY_SECTION) :]
    end = re.search(r"^## ", rest, re.M)
    return rest[: end.start()] if end else rest


GLOBAL_VALUE_OPTIONS = {"-f", "--file", "--profile", "-p", "--project-name", "--env-file"}
RUN_VALUE_OPTIONS = {
    "-v",
    "--volume",
    "-e",
    "--env",
    "-w",
    "--workdir",
    "--name",
    "--entrypoint",
    "-u",
    "--user",
    "-p",
    "--publish",
    "-l",
    "--label",
}


def command_lines(markdown: str) -> list[str]:
    """Shell commands of a markdown text: fenced code lines (continuations joined) and inline code spans."""
    lines: list[str] = []
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1] + " " + line.strip()
            else:
                lines.append(line)
        else:
            lines.extend(re.findall(r"`([^`]+)`", line))
    return [ln.split(" #")[0] for ln in lines]


def compose_commands(markdown: str) -> list[tuple[str, list[str]]]:
    """(subcommand, service names) of every `docker compose ...` command in the text."""
    found = []
    for line in command_lines(markdown):
        for chunk in re.split(r"&&|\|\||;|\|", line):
            tokens = chunk.split()
            for i in range(len(tokens) - 1):
                if tokens[i : i + 2] != ["docker", "compose"]:
                    continue
                rest = tokens[i + 2 :]
                while rest and rest[0].startswith("-"):  # global options
                    rest = rest[2:] if rest[0] in GLOBAL_VALUE_OPTIONS else rest[1:]
                if not rest:
                    continue
                subcommand, args, names = rest[0], rest[1:], []
                while args:
                    arg = args.pop(0)
                    if arg.startswith("-"):
                        if subcommand in ("run", "exec") and arg in RUN_VALUE_OPTIONS and args:
                            args.pop(0)
                        continue
                    names.append(arg)
                    if subcommand in ("run", "exec"):
                        break  # the rest is the command run in the service
                if subcommand in ("up", "run", "exec", "logs", "restart", "build", "stop", "ps", "pull"):
                    found.append((subcommand, names))
    return found


def check_deploy_section(text: str, compose: dict) -> list[str]:
    """Problems in the deployment walkthrough against the compose file and the repository: every port, volume and
    triton mount is documented, and its commands, models and paths exist."""
    problems = []
    services = compose["services"]
    for name, service in services.items():
        for host in _ports(service):
            if not re.search(rf"\b{host}\b", text):
                problems.append(f"port {host} ({name}) is not mentioned")
    for volume in compose.get("volumes", {}):
        if volume not in text:
            problems.append(f"volume {volume} is not mentioned")
    for target in {t for _, t in _mounts(services["triton"])}:
        if target not in text:
            problems.append(f"triton's mount {target} is not mentioned")
    return problems + check_commands_and_paths(text, compose)


def check_commands_and_paths(text: str, compose: dict) -> list[str]:
    """Problems in a text's `docker compose` commands (unknown services), model names and repository paths."""
    problems = []
    services = compose["services"]
    for subcommand, names in compose_commands(text):
        for service in names:
            if service not in services:
                problems.append(f"`docker compose {subcommand}` names unknown service {service!r}")
    present = {p.parent.name for p in CONFIGS}
    for name in sorted(set(re.findall(r"(?<![\w/<])(tier_[a-z0-9_]+)", text))):
        if name not in STANDARD_MODELS | present:
            problems.append(f"model {name!r} is neither a standard nor a present model")
    for path in set(re.findall(r"(?<![\w/.])((?:docker|model_repository|export|client|tests)/[\w./-]+)", text)):
        path = path.rstrip(".")
        if "<" in path or "*" in path:
            continue
        if path.startswith("model_repository/") and not path.endswith("policy.yaml"):
            continue  # generated files
        if not (ROOT / path).exists() and not path.startswith("model_repository/"):
            problems.append(f"path {path} does not exist")
    return problems


def test_deploy_doc_agrees_with_compose(compose):
    assert check_deploy_section(DEPLOY_DOC.read_text(encoding="utf-8"), compose) == []


def test_readme_deploy_section_links_the_doc_and_its_commands_run(compose):
    section = deploy_section(README.read_text(encoding="utf-8"))
    assert section is not None, f"README.md lacks the section {DEPLOY_SECTION!r}"
    assert "docs/deploy-gpu.md" in section
    assert compose_commands(section), "the README's section keeps the commands"
    assert check_commands_and_paths(section, compose) == []


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize(
    "doc", [README, *sorted(DOCS.glob("*.md")), ROOT / "calibration" / "router_calibration" / "OUTCOME_LOG_FORMAT.md"]
)
def test_relative_links_resolve(doc):
    """Every relative markdown link of the README and the docs names an existing file (and, with #, a heading)."""
    broken = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", resolved.read_text(encoding="utf-8"), re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
            if anchor not in slugs:
                broken.append(target)
    assert broken == [], f"{doc.name}: broken links {broken}"
