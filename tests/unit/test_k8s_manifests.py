"""Offline checks of the Kubernetes deployment (deploy/): Kustomize overlays, the Helm chart, schemas, contracts.

No cluster: `kubectl kustomize` renders the overlays (skipped without kubectl), helm_python (helm-python-sdk, the Helm
SDK) renders the chart (skipped without it), kubernetes-validate checks every built-in object strictly against the
Kubernetes 1.30 schemas and deploy/schemas/ the custom resources.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml
from llm_router.core.policy import load_policy, parse_policy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "triton-llm-router"
K8S_VERSION = "1.30.0"
NAMESPACE = "llm-router"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
}
SPLIT_LAYOUTS = ("split", "split-hpa")

Obj = dict[str, Any]


def _load_generate() -> Any:
    spec = importlib.util.spec_from_file_location("deploy_generate", DEPLOY / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generate()
LAYOUTS = tuple(generate.LAYOUTS)
needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl is not installed: `kubectl kustomize` cannot render the overlays"
)
needs_helm = pytest.mark.skipif(
    not generate.helm_available(),
    reason="no offline Helm renderer: pip install helm-python-sdk (the `test` extra) or put helm on PATH",
)


@functools.cache
def kustomize(layout: str) -> tuple[Obj, ...]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "k8s" / "overlays" / layout)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@functools.cache
def helm(layout: str) -> tuple[Obj, ...]:
    return tuple(generate.render_layout(layout))


def rendered(layout: str) -> tuple[Obj, ...]:
    """The layout's objects: Kustomize's rendering, else the chart's (both are compared where both exist)."""
    if shutil.which("kubectl"):
        return kustomize(layout)
    if generate.helm_available():
        return helm(layout)
    pytest.skip("neither kubectl nor an offline Helm renderer is available")


def by_kind(objs: tuple[Obj, ...], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's value coalescing: maps merge recursively, anything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def container(deployment: Obj) -> Obj:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def port_number(ctr: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in ctr["ports"] if p["name"] == port)


def arg(ctr: Obj, flag: str) -> list[str]:
    return [a.split("=", 1)[1] for a in ctr["command"] if a.startswith(f"{flag}=")]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# -- schemas ---------------------------------------------------------------------------------------------------------


@functools.cache
def crd_registry() -> referencing.Registry:
    meta = json.loads((DEPLOY / "schemas" / "_meta.json").read_text())
    return referencing.Registry().with_resource(meta["$id"], referencing.Resource.from_contents(meta))


def validate_object(obj: Obj) -> None:
    """Strict validation: Kubernetes 1.30's schema for built-in kinds (a missing one fails), ours for CRDs."""
    crd = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if crd is not None:
        schema = json.loads((DEPLOY / "schemas" / crd).read_text())
        jsonschema.Draft202012Validator(schema, registry=crd_registry()).validate(obj)
        return
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_values_and_ci_values_match_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)
    ci_files = sorted((CHART / "ci").glob("*-values.yaml"))
    assert {p.name for p in ci_files} == {f"{layout}-values.yaml" for layout in LAYOUTS}
    for path in ci_files:
        jsonschema.Draft7Validator(schema).validate(merged(defaults, yaml.safe_load(path.read_text())))


@pytest.mark.parametrize(
    "override",
    [
        {"layout": "hybrid"},
        {"tierDefaults": {"gpu": 1}},  # typo of gpus
        {"autoscaling": {"engine": "kpa"}},
        {"tiers": {"tier_large": {"backend": "vllm"}}},
        {"modelRepository": {"uri": "http://bucket/models"}},
        {"apiKeys": {"values": {"not a name": "x"}}},
    ],
)
def test_schema_rejects_bad_values(override: dict[str, Any]) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(merged(defaults, override))


def test_crd_schemas_refuse_unknown_fields() -> None:
    obj = next(o for o in rendered("split") if o["kind"] == "ScaledObject")
    bad = copy.deepcopy(obj)
    bad["spec"]["maxReplicas"] = 3  # the HPA's spelling; KEDA's is maxReplicaCount
    with pytest.raises(jsonschema.ValidationError):
        validate_object(bad)


def test_missing_builtin_schema_is_a_failure() -> None:
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate_object({"apiVersion": "apps/v2", "kind": "Deployment", "metadata": {"name": "x"}})


# -- rendering -------------------------------------------------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("layout", LAYOUTS)
def test_kustomize_renders_and_every_object_validates(layout: str) -> None:
    objs = kustomize(layout)
    assert objs
    for obj in objs:
        validate_object(obj)
        assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


@needs_helm
@pytest.mark.parametrize("layout", LAYOUTS)
def test_helm_renders_the_same_objects_as_kustomize(layout: str) -> None:
    chart = {generate.object_key(o): o for o in helm(layout)}
    for obj in chart.values():
        validate_object(obj)
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: nothing to compare the chart's rendering with")
    kust = {generate.object_key(o): o for o in kustomize(layout)}
    assert sorted(kust) == sorted(chart)
    for key, obj in chart.items():
        assert kust[key] == obj, key


@needs_helm
def test_generated_kustomize_tree_is_up_to_date() -> None:
    problems = generate.differences(generate.expected_files())
    assert not problems, "run `python deploy/generate.py`:\n" + "\n".join(problems)


def test_chart_policy_is_the_repository_policy() -> None:
    assert (CHART / "files" / "policy.yaml").read_text() == generate.POLICY.read_text(), (
        "the policy changed: run `python deploy/generate.py` (chart copy and Kustomize tree)"
    )


@needs_helm
@pytest.mark.parametrize(
    "values",
    [
        # API keys in a chart-made Secret, a TensorRT-LLM tier, and a tier that stays a hosted remote tier
        {
            "apiKeys": {"values": {"ROUTER_FRONT_API_KEY": "k", "ROUTER_HOSTED_API_KEY": "h"}},
            "tiers": {"tier_large": {"backend": "trtllm", "gpus": 4}},
        },
        {"autoscaling": {"engine": "hpa"}, "tiers": {"tier_large": {"backend": "trtllm"}}},
        {"modelRepository": {"uri": "s3://bucket/models"}, "autoscaling": {"engine": "none"}},
        {"layout": "all-in-one", "allInOne": {"autoscaling": {"enabled": True}}, "router": {"gpus": 0}},
    ],
)
def test_chart_variants_validate(values: dict[str, Any]) -> None:
    objs = generate.render_chart(values)
    for obj in objs:
        validate_object(obj)
    kinds = {o["kind"] for o in objs}
    if "apiKeys" in values:
        secret = by_kind(tuple(objs), "Secret")["llm-router-api-keys"]
        assert set(secret["stringData"]) == {"ROUTER_FRONT_API_KEY", "ROUTER_HOSTED_API_KEY"}
    if values.get("modelRepository", {}).get("uri"):
        assert "PersistentVolumeClaim" not in kinds
        for dep in by_kind(tuple(objs), "Deployment").values():
            if dep["metadata"]["name"] != "llm-router-openai":
                assert arg(container(dep), "--model-repository") == ["s3://bucket/models"]


@needs_helm
def test_trtllm_tier_scales_on_its_scheduler_queue() -> None:
    objs = tuple(generate.render_chart({"tiers": {"tier_large": {"backend": "trtllm"}}}))
    large = by_kind(objs, "ScaledObject")["llm-router-tier-large"]
    (trigger,) = large["spec"]["triggers"]
    assert (
        'nv_trt_llm_request_metrics{namespace="llm-router",tier="tier_large",request_type="waiting"}'
        in (trigger["metadata"]["query"])
    )
    dep = by_kind(objs, "Deployment")["llm-router-tier-large"]
    assert "trtllm" in container(dep)["image"]
    policy = parse_policy(yaml.safe_load(by_kind(objs, "ConfigMap")["llm-router-config"]["data"]["policy.yaml"]))
    assert policy.tier("tier_large").remote.model == "ensemble"


# -- contracts of the split layout -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", SPLIT_LAYOUTS)
def test_router_tier_endpoints_point_at_headless_tier_services(layout: str) -> None:
    objs = rendered(layout)
    config = by_kind(objs, "ConfigMap")["llm-router-config"]
    policy = parse_policy(yaml.safe_load(config["data"]["policy.yaml"]), source="ConfigMap policy.yaml")
    repo_policy = load_policy(generate.POLICY)
    assert policy.tier_names == repo_policy.tier_names
    services = by_kind(objs, "Service")
    deployments = by_kind(objs, "Deployment")
    for tier in policy.tiers:
        assert tier.remote is not None and tier.remote.kind == "triton", tier.name
        match = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", tier.remote.url)
        assert match, tier.remote.url
        svc_name, namespace, port = match.group(1), match.group(2), int(match.group(3))
        assert namespace == NAMESPACE
        svc = services[svc_name]
        assert svc["spec"]["clusterIP"] == "None", f"{svc_name} must be headless for client-side load balancing"
        grpc = next(p for p in svc["spec"]["ports"] if p["port"] == port)
        # the Service's selector picks exactly one Deployment, which loads this tier and listens for gRPC there
        pods = [
            d
            for d in deployments.values()
            if selects(svc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(pods) == 1, svc_name
        ctr = container(pods[0])
        assert port_number(ctr, grpc["targetPort"]) == 8001
        assert arg(ctr, "--grpc-port") == ["8001"]
        assert arg(ctr, "--load-model") == [tier.remote.model]
        assert tier.remote.model == tier.name
    # everything but the remote blocks is the repository's policy
    stripped = [t.model_copy(update={"remote": None}) for t in policy.tiers]
    assert policy.model_copy(update={"tiers": stripped}) == repo_policy


@pytest.mark.parametrize("layout", SPLIT_LAYOUTS)
def test_router_balances_grpc_calls_round_robin(layout: str) -> None:
    """The router's channels to a tier spread over its pods (ROUTER_GRPC_LB_POLICY, read by router/remote.py)."""
    objs = rendered(layout)
    config = by_kind(objs, "ConfigMap")["llm-router-config"]
    assert config["data"]["ROUTER_GRPC_LB_POLICY"] == "round_robin"
    router = container(by_kind(objs, "Deployment")["llm-router"])
    env = {e["name"]: e for e in router["env"]}
    ref = env["ROUTER_GRPC_LB_POLICY"]["valueFrom"]["configMapKeyRef"]
    assert ref == {"name": "llm-router-config", "key": "ROUTER_GRPC_LB_POLICY"}
    assert {"secretRef": {"name": "llm-router-api-keys", "optional": True}} in router["envFrom"]


@pytest.mark.parametrize("layout", SPLIT_LAYOUTS)
def test_router_loads_its_models_and_mounts_the_policy(layout: str) -> None:
    objs = rendered(layout)
    router = by_kind(objs, "Deployment")["llm-router"]
    ctr = container(router)
    assert set(arg(ctr, "--load-model")) >= {"router", "router_stream", "intent_classifier"}
    assert not set(arg(ctr, "--load-model")) & {"tier_small", "tier_medium", "tier_large", "*"}
    mount = next(m for m in ctr["volumeMounts"] if m["name"] == "policy")
    assert mount["mountPath"] == "/models/router/1/policy.yaml" and mount["subPath"] == "policy.yaml"
    volume = next(v for v in router["spec"]["template"]["spec"]["volumes"] if v["name"] == "policy")
    assert volume["configMap"]["name"] == "llm-router-config"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_probes_use_tritons_http_port(layout: str) -> None:
    objs = rendered(layout)
    tritons = [d for d in by_kind(objs, "Deployment").values() if container(d)["name"] == "triton"]
    assert tritons
    for dep in tritons:
        ctr = container(dep)
        http = int(arg(ctr, "--http-port")[0])
        expected = {
            "readinessProbe": "/v2/health/ready",
            "livenessProbe": "/v2/health/live",
            "startupProbe": "/v2/health/ready",
        }
        for probe, path in expected.items():
            get = ctr[probe]["httpGet"]
            assert get["path"] == path, (dep["metadata"]["name"], probe)
            assert port_number(ctr, get["port"]) == http == 8000
        startup = ctr["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800, "startup must allow model loading"


@pytest.mark.parametrize("layout", SPLIT_LAYOUTS)
def test_one_autoscaler_per_pool_naming_its_own_metric(layout: str) -> None:
    objs = rendered(layout)
    policy = parse_policy(yaml.safe_load(by_kind(objs, "ConfigMap")["llm-router-config"]["data"]["policy.yaml"]))
    scalers = [o for o in objs if o["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")]
    targets = [o["spec"]["scaleTargetRef"]["name"] for o in scalers]
    assert len(targets) == len(set(targets)), "two autoscalers on one Deployment fight each other"
    deployments = by_kind(objs, "Deployment")
    for target in targets:
        assert target in deployments
        assert "replicas" not in deployments[target]["spec"], f"{target}: the autoscaler owns replicas"
    for tier in policy.tiers:
        svc = tier.remote.url.split(".")[0]
        (scaler,) = [s for s in scalers if s["spec"]["scaleTargetRef"]["name"] == svc]
        if scaler["kind"] == "ScaledObject":
            (trigger,) = scaler["spec"]["triggers"]
            assert trigger["type"] == "prometheus"
            assert trigger["metadata"]["query"] == (
                f'sum(nv_inference_pending_request_count{{namespace="{NAMESPACE}",model="{tier.name}"}})'
            )
        else:
            assert scaler["apiVersion"] == "autoscaling/v2"
            (metric,) = scaler["spec"]["metrics"]
            assert metric["type"] == "Pods"
            assert metric["pods"]["metric"] == {
                "name": "triton_queue_compute_ratio",
                "selector": {"matchLabels": {"model": tier.name}},
            }
    (router,) = [s for s in scalers if s["spec"]["scaleTargetRef"]["name"] == "llm-router"]
    if router["kind"] == "ScaledObject":  # its own CPU and its own queue
        triggers = {t["type"]: t for t in router["spec"]["triggers"]}
        assert set(triggers) == {"cpu", "prometheus"}
        assert 'model="router"' in triggers["prometheus"]["metadata"]["query"]
    else:
        metrics = {m["type"]: m for m in router["spec"]["metrics"]}
        assert metrics["Resource"]["resource"]["name"] == "cpu"
        assert metrics["Pods"]["pods"]["metric"]["selector"] == {"matchLabels": {"model": "router"}}


def test_prometheus_rule_and_adapter_serve_the_hpa_metrics() -> None:
    objs = rendered("split-hpa")
    rule = by_kind(objs, "PrometheusRule")["llm-router"]
    # the autoscalers' group (the drift alarms' group, llm-router-drift.rules, is per model and tier: test_drift.py)
    hpa_groups = [g for g in rule["spec"]["groups"] if g["name"] == "triton-llm-router.rules"]
    records = {r["record"]: r["expr"] for g in hpa_groups for r in g["rules"] if "record" in r}
    assert "nv_inference_queue_duration_us" in records["triton:queue_compute:ratio"]
    assert "nv_inference_compute_infer_duration_us" in records["triton:queue_compute:ratio"]
    for expr in records.values():
        assert "namespace" in expr and "pod" in expr, "prometheus-adapter maps series to pods by these labels"
    adapter = yaml.safe_load((DEPLOY / "prometheus-adapter-values.yaml").read_text())
    served = {r["name"]["as"]: r["seriesQuery"].split("{")[0] for r in adapter["rules"]["custom"]}
    used = {
        m["pods"]["metric"]["name"]
        for h in by_kind(objs, "HorizontalPodAutoscaler").values()
        for m in h["spec"]["metrics"]
        if m["type"] == "Pods"
    }
    assert used and used <= set(served)
    assert all(served[name] in records for name in served)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_only_the_router_and_the_openai_front_are_exposed(layout: str) -> None:
    services = by_kind(rendered(layout), "Service")
    exposed = {n for n, s in services.items() if s["spec"].get("clusterIP") != "None"}
    assert exposed == {"llm-router", "llm-router-openai"}
    headless = set(services) - exposed
    assert len(headless) == (3 if layout in SPLIT_LAYOUTS else 0)


@pytest.mark.parametrize("layout", SPLIT_LAYOUTS)
def test_tier_pools_are_reachable_only_from_the_router(layout: str) -> None:
    objs = rendered(layout)
    (policy,) = by_kind(objs, "NetworkPolicy").values()
    router_labels = by_kind(objs, "Deployment")["llm-router"]["spec"]["template"]["metadata"]["labels"]
    grpc_rule = next(r for r in policy["spec"]["ingress"] if "from" in r)
    assert selects(grpc_rule["from"][0]["podSelector"]["matchLabels"], router_labels)
    open_rule = next(r for r in policy["spec"]["ingress"] if "from" not in r)
    assert open_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pods_production_settings(layout: str) -> None:
    objs = rendered(layout)
    pdbs = by_kind(objs, "PodDisruptionBudget")
    for name, dep in by_kind(objs, "Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        ctr = container(dep)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
        assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["automountServiceAccountToken"] is False
        assert any(selects(p["spec"]["selector"]["matchLabels"], pod_labels(dep)) for p in pdbs.values()), name
        if ctr["name"] != "triton":
            continue
        volumes = {v["name"]: v for v in pod["volumes"]}
        shm = next(m for m in ctr["volumeMounts"] if m["mountPath"] == "/dev/shm")
        assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory"
        assert volumes[shm["name"]]["emptyDir"]["sizeLimit"] == "2Gi"
        assert {m["mountPath"] for m in ctr["volumeMounts"]} >= {"/tmp", "/models"}
        assert volumes["models"]["persistentVolumeClaim"]["readOnly"] is True
        assert ctr["resources"]["limits"]["nvidia.com/gpu"] >= 1
        assert int(arg(ctr, "--stop-grace")[0]) < pod["terminationGracePeriodSeconds"]
    claim = by_kind(objs, "PersistentVolumeClaim")["llm-router-models"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def pod_labels(dep: Obj) -> dict[str, str]:
    return dep["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pod_monitor_scrapes_every_triton_pod(layout: str) -> None:
    objs = rendered(layout)
    (monitor,) = by_kind(objs, "PodMonitor").values()
    selector = monitor["spec"]["selector"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    for dep in by_kind(objs, "Deployment").values():
        labels = pod_labels(dep)
        excluded = any(
            e["operator"] == "NotIn" and labels.get(e["key"]) in e["values"] for e in selector["matchExpressions"]
        )
        scraped = selects(selector["matchLabels"], labels) and not excluded
        assert scraped == (container(dep)["name"] == "triton"), dep["metadata"]["name"]
        if scraped:
            assert port_number(container(dep), "metrics") == int(arg(container(dep), "--metrics-port")[0])


def test_all_in_one_serves_the_whole_repository_locally() -> None:
    objs = rendered("all-in-one")
    deployments = by_kind(objs, "Deployment")
    assert set(deployments) == {"llm-router", "llm-router-openai"}
    router = deployments["llm-router"]
    assert router["spec"]["replicas"] == 2
    assert arg(container(router), "--load-model") == ["*"]
    policy = parse_policy(yaml.safe_load(by_kind(objs, "ConfigMap")["llm-router-config"]["data"]["policy.yaml"]))
    assert policy == load_policy(generate.POLICY)
    assert all(t.remote is None for t in policy.tiers)
    assert not [o for o in objs if o["kind"] in ("ScaledObject", "HorizontalPodAutoscaler", "NetworkPolicy")]


@needs_helm
def test_outcome_records_mount_on_router_pods_and_feedback_on_the_front() -> None:
    objs = generate.render_chart({"outcomeRecords": {"enabled": True, "storePrompts": True}})
    for obj in objs:
        validate_object(obj)
    deployments = by_kind(tuple(objs), "Deployment")
    router, front = deployments["llm-router"], deployments["llm-router-openai"]
    env = {e["name"]: e.get("value") for e in container(router)["env"]}
    assert env["LLM_ROUTER_OUTCOME_RECORDS_DIR"] == "/records"
    assert env["LLM_ROUTER_OUTCOME_RECORDS_PROMPTS"] == "true"
    assert {"name": "records", "mountPath": "/records"} in container(router)["volumeMounts"]
    assert any(v["name"] == "records" and "emptyDir" in v for v in router["spec"]["template"]["spec"]["volumes"])
    for name, dep in deployments.items():
        if name not in ("llm-router", "llm-router-openai"):  # tier pools load no router: no records volume
            assert all(m["name"] != "records" for m in container(dep)["volumeMounts"]), name
    front_env = {e["name"]: e.get("value") for e in container(front)["env"]}
    assert front_env["ROUTER_FEEDBACK_FILE"] == "/feedback/$(POD_NAME).jsonl"
    assert {"name": "feedback", "mountPath": "/feedback"} in container(front)["volumeMounts"]
    # off by default: the default layout has neither
    default = by_kind(tuple(generate.render_chart({})), "Deployment")
    assert "LLM_ROUTER_OUTCOME_RECORDS_DIR" not in {e["name"] for e in container(default["llm-router"])["env"]}
