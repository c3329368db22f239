"""The Helm chart, rendered for every hardware profile and checked like a reviewer would:
helm lint --strict, strict Kubernetes schema validation, and the security and network
properties the design promises (non-root, read-only, no capabilities, probes, GPU only where
it belongs, internal services reachable only from their callers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted((REPO_ROOT / "deploy" / "profiles").glob("*.yaml"))
SECRETS = REPO_ROOT / "deploy" / "profiles" / "ci" / "secrets.yaml"
EVERYTHING = REPO_ROOT / "deploy" / "profiles" / "ci" / "everything.yaml"

# Who may call whom (components of the same release); the gateway is the only open door.
CALLERS = {
    "router": {"gateway", "orchestrator"},
    "inference-small": {"router", "orchestrator"},
    "inference-large": {"router", "orchestrator"},
    "inference-large-embed": {"router"},
    "tools": {"orchestrator"},
    "orchestrator": set(),
    "orchestrator-api": {"gateway", "router"},
}
GPU_COMPONENTS = {"inference-large", "inference-large-embed"}
RENDERS: dict[str, list[dict[str, Any]]] = {}


def render(check_chart: ModuleType, helm: Path, *values: Path) -> list[dict[str, Any]]:
    key = "|".join(str(v) for v in values)
    if key not in RENDERS:
        RENDERS[key] = check_chart.render(helm, list(values))
    return RENDERS[key]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("Deployment", "Job"):
            yield name, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "CronJob":
            yield name, doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif doc["kind"] == "LeaderWorkerSet":
            template = doc["spec"]["leaderWorkerTemplate"]
            yield f"{name}/leader", template["leaderTemplate"]["spec"]
            yield f"{name}/worker", template["workerTemplate"]["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers") or []) + list(spec["containers"])


def component(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/component"])


def test_profiles_exist_for_every_tier() -> None:
    names = {p.stem for p in PROFILES}
    assert {"cpu", "smb", "medium", "enterprise"} <= names


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_profile_lints_renders_and_validates(
    check_chart: ModuleType, helm: Path, profile: Path
) -> None:
    check_chart.lint(helm, [profile, SECRETS])
    docs = render(check_chart, helm, profile, SECRETS)
    assert docs, "nothing rendered"
    assert check_chart.validate(docs) == []


def test_every_optional_object_renders_and_validates(check_chart: ModuleType, helm: Path) -> None:
    check_chart.lint(helm, [EVERYTHING])
    docs = render(check_chart, helm, EVERYTHING)
    kinds = {doc["kind"] for doc in docs}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ConfigMap",
        "Secret",
        "Job",
        "PersistentVolumeClaim",
        "Ingress",
        "ServiceAccount",
        "LeaderWorkerSet",
        "ScaledObject",
        "ServiceMonitor",
        "CronJob",
    } <= kinds
    assert check_chart.validate(docs) == []


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_pods_are_locked_down(check_chart: ModuleType, helm: Path, profile: Path) -> None:
    for name, spec in pod_specs(render(check_chart, helm, profile, SECRETS)):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in containers(spec):
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in security["capabilities"], where
            assert container["resources"]["requests"]["memory"], where
            assert container["resources"]["limits"]["memory"], where
            image = container["image"]
            assert ":" in image.split("/")[-1], where
            assert not image.endswith(":latest"), where


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_servers_have_native_probes(check_chart: ModuleType, helm: Path, profile: Path) -> None:
    for doc in render(check_chart, helm, profile, SECRETS):
        if doc["kind"] not in ("Deployment", "LeaderWorkerSet"):
            continue
        for name, spec in pod_specs([doc]):
            if name.endswith("/worker"):
                continue  # Ray workers serve nothing; the group restarts with its leader
            if component(doc) == "orchestrator":
                # Celery workers have no port and run with remote control off: the chart
                # documents why they carry no probe (the process exits on failure).
                assert "livenessProbe" not in spec["containers"][0]
                continue
            for container in spec["containers"]:
                liveness = container.get("livenessProbe")
                assert liveness, f"{name}/{container['name']} has no liveness probe"
                if component(doc) == "gateway":
                    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
                    assert liveness["httpGet"]["path"] == "/healthz"
                else:
                    assert "grpc" in container["readinessProbe"], name
                    assert "grpc" in liveness, name
                    assert "grpc" in container["startupProbe"], name


@pytest.mark.parametrize("values", [*PROFILES, EVERYTHING], ids=lambda p: p.stem)
def test_network_policies_admit_only_callers(
    check_chart: ModuleType, helm: Path, values: Path
) -> None:
    extra = [SECRETS] if values != EVERYTHING else []
    docs = render(check_chart, helm, values, *extra)
    policies = {
        doc["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component"): doc
        for doc in docs
        if doc["kind"] == "NetworkPolicy"
        and "app.kubernetes.io/component" in doc["spec"]["podSelector"]["matchLabels"]
    }
    deployed = {component(d) for d in docs if d["kind"] in ("Deployment", "LeaderWorkerSet")}
    assert deployed <= set(policies), (
        f"components without a NetworkPolicy: {deployed - set(policies)}"
    )
    for name, policy in policies.items():
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        rules = policy["spec"].get("ingress") or []
        if name == "gateway":
            assert rules, "the gateway must accept traffic"
            continue
        allowed = CALLERS[name]
        for rule in rules:
            assert rule.get("from"), f"{name}: a rule without 'from' admits everyone"
            for peer in rule["from"]:
                labels = peer["podSelector"]["matchLabels"]
                assert labels["app.kubernetes.io/component"] in allowed, (name, labels)
                assert labels["app.kubernetes.io/instance"] == "lalo"
                assert "namespaceSelector" not in peer


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_gpus_only_where_they_belong(check_chart: ModuleType, helm: Path, profile: Path) -> None:
    docs = render(check_chart, helm, profile, SECRETS)
    for doc in docs:
        for name, spec in pod_specs([doc]):
            gpu = [
                c
                for c in spec["containers"]
                if "nvidia.com/gpu" in (c["resources"].get("limits") or {})
            ]
            if doc["kind"] == "Job" or component(doc) not in GPU_COMPONENTS:
                assert not gpu, f"{name} asks for a GPU"
                continue
            assert gpu, f"{name} runs vLLM without a GPU"
            assert spec["nodeSelector"]["nvidia.com/gpu.present"] == "true"
            assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
            mounts = {m["mountPath"] for c in gpu for m in c["volumeMounts"]}
            assert {"/dev/shm", "/models"} <= mounts
            if not name.endswith("/worker"):
                assert [c["name"] for c in spec["initContainers"]] == ["fetch-models"]


def test_an_embedding_model_on_the_gpu_is_its_own_deployment_in_the_large_pool(
    check_chart: ModuleType, helm: Path
) -> None:
    docs = render(check_chart, helm, EVERYTHING)
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    deployment = by_name[("Deployment", "lalo-inference-large-embed")]
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["LALO_INFERENCE_LARGE_RUNNER"] == "pooling"
    assert env["LALO_INFERENCE_LARGE_MODEL"] == "/models/qwen3-embedding-0.6b"
    assert env["LALO_INFERENCE_LARGE_SERVED_MODEL_NAME"] == "qwen3-embedding-0.6b"
    assert "LALO_INFERENCE_LARGE_DISTRIBUTED_EXECUTOR_BACKEND" not in env
    # Its own model volume and fetch list, not the text model's.
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == (
        "lalo-inference-large-embed-models"
    )
    fetch = yaml.safe_load(
        by_name[("ConfigMap", "lalo-inference-large-embed-models")]["data"]["fetch.yaml"]
    )
    assert [m["repo"] for m in fetch["models"]] == ["Qwen/Qwen3-Embedding-0.6B"]
    assert ("Service", "lalo-inference-large-embed") in by_name
    # The text model still runs as its LeaderWorkerSet, without the pooling runner.
    assert ("LeaderWorkerSet", "lalo-inference-large") in by_name
    router = by_name[("Deployment", "lalo-router")]
    (router_container,) = router["spec"]["template"]["spec"]["containers"]
    router_env = {e["name"]: e.get("value") for e in router_container["env"]}
    assert router_env["LALO_ROUTER_BACKENDS"].split(",") == [
        "small=lalo-inference-small:50061",
        "large=lalo-inference-large:50062",
        "large=lalo-inference-large-embed:50062",
    ]


def test_tensor_parallel_matches_gpus(check_chart: ModuleType, helm: Path) -> None:
    for profile in PROFILES:
        for doc in render(check_chart, helm, profile, SECRETS):
            for name, spec in pod_specs([doc]):
                for container in spec["containers"]:
                    env = {e["name"]: e.get("value") for e in container.get("env") or []}
                    if "LALO_INFERENCE_LARGE_TENSOR_PARALLEL_SIZE" not in env:
                        continue
                    gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
                    assert int(env["LALO_INFERENCE_LARGE_TENSOR_PARALLEL_SIZE"]) == gpus, name


def test_migrations_run_before_install_and_upgrade(check_chart: ModuleType, helm: Path) -> None:
    docs = render(check_chart, helm, EVERYTHING)
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    spec = job["spec"]["template"]["spec"]
    assert [c["args"] for c in containers(spec)] == [["migrate"], ["migrate"]]
    secret = next(d for d in docs if d["kind"] == "Secret")
    # The Secret the Job reads must exist before the hook runs.
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )


def test_stored_responses_are_purged_only_when_a_retention_is_set(
    check_chart: ModuleType, helm: Path
) -> None:
    docs = render(check_chart, helm, EVERYTHING)
    cron = next(d for d in docs if d["kind"] == "CronJob")
    assert component(cron) == "responses-purge"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (purge,) = containers(spec)
    assert purge["args"] == ["responses", "purge", "--older-than-days", "30"]
    env = {e["name"] for e in purge["env"]}
    assert {"LALO_GATEWAY_DATABASE_URL", "LALO_GATEWAY_KEY_PEPPER"} <= env
    gateway = next(d for d in docs if d["kind"] == "Deployment" and component(d) == "gateway")
    gateway_env = {
        e["name"]: e.get("value") for e in containers(gateway["spec"]["template"]["spec"])[0]["env"]
    }
    assert gateway_env["LALO_GATEWAY_STORE_RESPONSES"] == "true"
    for sets in (["gateway.responsesRetentionDays=0"], ["gateway.storeResponses=false"]):
        plain = check_chart.render(helm, [EVERYTHING], sets=sets)
        assert not [d for d in plain if d["kind"] == "CronJob"], sets


def test_existing_secret_is_used_instead_of_a_chart_secret(
    check_chart: ModuleType, helm: Path
) -> None:
    docs = render(check_chart, helm, PROFILES[0], SECRETS)
    assert not [d for d in docs if d["kind"] == "Secret"]
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for _, spec in pod_specs(docs)
        for c in containers(spec)
        for e in c.get("env") or []
        if "valueFrom" in e
    }
    assert refs == {"lalo-secrets"}


def test_missing_secrets_fail_with_a_clear_message(check_chart: ModuleType, helm: Path) -> None:
    with pytest.raises(check_chart.ChartError, match=r"secrets.serviceToken is required"):
        check_chart.render(helm, [])


def test_gpu_count_must_match_parallelism(check_chart: ModuleType, helm: Path) -> None:
    with pytest.raises(check_chart.ChartError, match=r"gpusPerPod \(1\) must equal"):
        check_chart.render(
            helm,
            [SECRETS],
            sets=["inferenceLarge.enabled=true", "inferenceLarge.tensorParallelSize=2"],
        )
    with pytest.raises(check_chart.ChartError, match=r"inferenceLargeEmbedding.gpusPerPod \(1\)"):
        check_chart.render(
            helm,
            [SECRETS],
            sets=[
                "inferenceLargeEmbedding.enabled=true",
                "inferenceLargeEmbedding.tensorParallelSize=2",
            ],
        )


def test_validator_rejects_unknown_fields_and_kinds(check_chart: ModuleType) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i:1.0", "imagePullPolicyy": "x"}]},
            },
        },
    }
    problems = check_chart.validate([deployment])
    assert "imagePullPolicyy" in " ".join(problems)
    typo = {"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "x"}}
    assert "not a declared CRD" in " ".join(check_chart.validate([typo]))
    crd = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {},
    }
    assert "missing spec.scaleTargetRef.name" in " ".join(check_chart.validate([crd]))


def test_profile_keys_exist_in_chart_values(check_chart: ModuleType) -> None:
    """helm silently ignores a mistyped key: every profile key must exist in values.yaml."""
    import yaml

    defaults = yaml.safe_load((check_chart.CHART / "values.yaml").read_text())
    free_form = {
        "resources",
        "nodeSelector",
        "affinity",
        "env",
        "policy",
        "sha256",
        "limits",
        "requests",
        "annotations",
        "labels",
        "podAnnotations",
        "podLabels",
    }

    def unknown(values: Any, reference: Any, path: str) -> list[str]:
        if not isinstance(values, dict) or not isinstance(reference, dict):
            return []
        out = []
        for key, value in values.items():
            if key not in reference:
                out.append(f"{path}{key}")
            elif key not in free_form:
                out += unknown(value, reference[key], f"{path}{key}.")
        return out

    for profile in [*PROFILES, SECRETS, EVERYTHING]:
        values = yaml.safe_load(profile.read_text())
        assert unknown(values, defaults, "") == [], profile.name


SERVICE_PREFIXES = {
    "gateway": "LALO_GATEWAY_",
    "router": "LALO_ROUTER_",
    "inference_small": "LALO_INFERENCE_SMALL_",
    "inference_large": "LALO_INFERENCE_LARGE_",
    "orchestrator": "LALO_ORCHESTRATOR_",
    "tools": "LALO_TOOLS_",
}


def settings_names(package: str, prefix: str) -> set[str] | None:
    """Every environment name a service's settings class reads, or None if it has none yet."""
    import importlib

    from lalo_common.settings import ServiceSettings

    names: set[str] = set()
    found = False
    for module_name in (f"lalo_{package}.settings", f"lalo_{package}.security.settings"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(f"lalo_{package}"):
                continue  # the service (or this module of it) is not installed yet
            raise
        for value in vars(module).values():
            if not (isinstance(value, type) and issubclass(value, ServiceSettings)):
                continue
            if value.model_config.get("env_prefix") != prefix:
                continue
            found = True
            for field_name, field in value.model_fields.items():
                names.add(f"{prefix}{field_name}".upper())
                alias = field.validation_alias
                choices = getattr(alias, "choices", [alias] if alias else [])
                names.update(str(c).upper() for c in choices if isinstance(c, str))
    return names if found else None


@pytest.mark.parametrize("package", sorted(SERVICE_PREFIXES))
def test_deploy_files_use_real_setting_names(
    check_chart: ModuleType, check_compose: ModuleType, helm: Path, package: str
) -> None:
    """A misspelt LALO_<SVC>_* variable is silently ignored by pydantic-settings: every one
    the chart or the compose file sets must be a field of that service's settings class."""
    prefix = SERVICE_PREFIXES[package]
    known = settings_names(package, prefix)
    if known is None:
        pytest.skip(f"lalo_{package} has no settings class with prefix {prefix} yet")
    used: set[str] = set()
    for values in [*PROFILES, EVERYTHING]:
        extra = [SECRETS] if values != EVERYTHING else []
        for _, spec in pod_specs(render(check_chart, helm, values, *extra)):
            used.update(e["name"] for c in containers(spec) for e in c.get("env") or [])
    for service in check_compose.load()["services"].values():
        used.update(service.get("environment") or {})
    unknown = sorted(name for name in used if name.startswith(prefix) and name not in known)
    assert unknown == [], f"not settings of lalo_{package}: {unknown}"


def test_values_schema_is_current(check_chart: ModuleType, gen_values_schema: ModuleType) -> None:
    committed = (check_chart.CHART / "values.schema.json").read_text()
    assert committed == gen_values_schema.render(), "run: python deploy/tools/gen_values_schema.py"


def test_values_schema_refuses_typos(check_chart: ModuleType, helm: Path) -> None:
    with pytest.raises(check_chart.ChartError, match="tensorParalelSize is not allowed"):
        check_chart.render(helm, [SECRETS], sets=["inferenceLarge.tensorParalelSize=2"])
    with pytest.raises(check_chart.ChartError, match="must be one of"):
        check_chart.render(helm, [SECRETS], sets=["gateway.jwt.mode=none"])
