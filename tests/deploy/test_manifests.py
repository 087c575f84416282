"""deploy/k8s: every manifest valid against the Kubernetes schemas, offline, and consistent with the code.

The kustomize base and each overlay are built (tests/deploy/kustomize.py) and every resource is
validated with kubernetes-validate's bundled schemas in strict mode (unknown fields fail). Beyond
the schemas: the Envoy ConfigMap is byte for byte what devrun renders, every container runs an
entry point that exists, every variable set is one our settings read, secrets come only by
reference, probes and resources are there, and every selector selects something.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from devrun.envoy_config import render_bootstrap
from devrun.kubernetes import BASE_CONFIG_FILE, kubernetes_edge
from tests.config.test_env_example import SETTINGS, _variables
from tests.deploy.kustomize import Resource, build

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = [BASE, *OVERLAYS]
# The oldest Kubernetes the manifests promise to work on (gRPC probes are GA since 1.27; the
# policy/v1 PDB and autoscaling/v2 HPA are older).
KUBERNETES_VERSION = "1.30"
# Set for libraries in a read-only container, not settings of ours.
PROCESS_VARIABLES = {"HOME", "XDG_CACHE_HOME"}
SECRET_VARIABLES = {
    "SYNTERA_JWT_SECRET",
    "SYNTERA_SERVICE_JWT_SECRET",
    "MONGODB_URI",
    "LIVEKIT_URL",
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "LLM_API_KEY",
}


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(K8S)) for p in paths]


def _pod_spec(resource: Resource) -> dict[str, Any]:
    spec: dict[str, Any] = resource["spec"]["template"]["spec"]
    return spec


def _workloads(resources: list[Resource]) -> list[Resource]:
    return [r for r in resources if r["kind"] in ("Deployment", "StatefulSet")]


def _ours(resources: list[Resource]) -> list[Resource]:
    """Workloads running our image (not the dev overlay's MongoDB)."""
    return [
        r
        for r in _workloads(resources)
        if _pod_spec(r)["containers"][0]["image"].startswith("syntera-call-mesh")
    ]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=_ids(KUSTOMIZATIONS))
def test_every_resource_is_valid_against_the_kubernetes_schema(directory: Path) -> None:
    resources = build(directory)
    assert resources
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            name = f"{resource['kind']}/{resource['metadata']['name']}"
            pytest.fail(f"{directory.name}: {name}: {exc.message} at {list(exc.path)}")


def test_the_envoy_config_map_is_what_devrun_renders() -> None:
    committed = (ROOT / BASE_CONFIG_FILE).read_text()
    rendered = json.dumps(render_bootstrap(kubernetes_edge()), indent=2) + "\n"
    assert committed == rendered, (
        f"{BASE_CONFIG_FILE} is out of date with devrun/envoy_config.py; regenerate it with\n"
        f"  .venv/bin/python -m devrun envoy-config --kubernetes --out {BASE_CONFIG_FILE}"
    )
    (config_map,) = [
        r
        for r in build(BASE)
        if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith("envoy-config-")
    ]
    assert config_map["data"]["envoy.json"] == committed
    (envoy,) = [r for r in build(BASE) if r["kind"] == "Deployment" and r["metadata"]["name"] == "envoy"]
    (volume,) = [v for v in _pod_spec(envoy)["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=_ids(KUSTOMIZATIONS))
def test_containers_run_entry_points_that_exist(directory: Path) -> None:
    scripts = {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")}
    for workload in _ours(build(directory)):
        for container in _pod_spec(workload)["containers"]:
            command = container["command"]
            if command[0] == "python":
                assert command[1] == "-m", command
                assert importlib.util.find_spec(f"{command[2]}.__main__") is not None, command
            else:
                assert command[0] in scripts, f"{command[0]} is not an installed console script"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=_ids(KUSTOMIZATIONS))
def test_every_variable_set_is_read_and_secrets_come_by_reference(directory: Path) -> None:
    read = set().union(*(_variables(cls) for cls in SETTINGS))
    resources = build(directory)
    config_maps = {r["metadata"]["name"]: r for r in resources if r["kind"] == "ConfigMap"}
    for workload in _ours(resources):
        for container in _pod_spec(workload)["containers"]:
            names: set[str] = set()
            for source in container.get("envFrom", []):
                data = config_maps[source["configMapRef"]["name"]]["data"]
                names |= set(data)
                assert not set(data) & SECRET_VARIABLES, "a secret in a ConfigMap"
            for variable in container.get("env", []):
                names.add(variable["name"])
                if variable["name"] in SECRET_VARIABLES:
                    assert "value" not in variable, f"{variable['name']} must come from a Secret"
                    assert variable["valueFrom"]["secretKeyRef"]["name"] == "syntera-secrets"
            unknown = names - read - PROCESS_VARIABLES
            assert not unknown, f"{workload['metadata']['name']}: variables nobody reads: {sorted(unknown)}"
    assert not [r for r in resources if r["kind"] == "Secret"], "Secrets are created by the operator"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=_ids(KUSTOMIZATIONS))
def test_pods_are_probed_limited_and_unprivileged(directory: Path) -> None:
    for workload in _workloads(build(directory)):
        spec = _pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        for container in spec["containers"]:
            name = f"{workload['metadata']['name']}/{container['name']}"
            assert "readinessProbe" in container, name
            assert "livenessProbe" in container, name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name


def test_grpc_services_are_probed_with_the_grpc_health_protocol() -> None:
    resources = build(BASE)
    for name, port in (("agent-svc", 50051), ("chat-svc", 50052)):
        (workload,) = [r for r in _workloads(resources) if r["metadata"]["name"] == name]
        (container,) = _pod_spec(workload)["containers"]
        assert container["readinessProbe"]["grpc"]["port"] == port


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=_ids(KUSTOMIZATIONS))
def test_selectors_select_pods(directory: Path) -> None:
    resources = build(directory)
    pod_labels = {
        r["metadata"]["name"]: r["spec"]["template"]["metadata"]["labels"] for r in _workloads(resources)
    }

    def selects(selector: dict[str, str]) -> bool:
        return any(selector.items() <= labels.items() for labels in pod_labels.values())

    for workload in _workloads(resources):
        assert (
            workload["spec"]["selector"]["matchLabels"].items()
            <= pod_labels[workload["metadata"]["name"]].items()
        )
    for resource in resources:
        kind = resource["kind"]
        if kind == "Service":
            assert selects(resource["spec"]["selector"]), resource["metadata"]["name"]
        elif kind == "PodDisruptionBudget":
            assert selects(resource["spec"]["selector"]["matchLabels"]), resource["metadata"]["name"]
        elif kind == "NetworkPolicy":
            assert selects(resource["spec"]["podSelector"]["matchLabels"]), resource["metadata"]["name"]
        elif kind == "HorizontalPodAutoscaler":
            target = resource["spec"]["scaleTargetRef"]
            assert target["name"] in pod_labels
            assert target["kind"] == "Deployment"


def test_every_part_has_a_disruption_budget_and_the_worker_an_autoscaler() -> None:
    resources = build(BASE)
    deployments = {r["metadata"]["name"] for r in resources if r["kind"] == "Deployment"}
    assert deployments == {"agent-svc", "chat-svc", "envoy", "voice-worker"}
    budgets = {
        r["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for r in resources
        if r["kind"] == "PodDisruptionBudget"
    }
    assert budgets == deployments
    (hpa,) = [r for r in resources if r["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "voice-worker"
    (worker,) = [
        r for r in resources if r["metadata"]["name"] == "voice-worker" and r["kind"] == "Deployment"
    ]
    (outbox,) = [v for v in _pod_spec(worker)["volumes"] if v["name"] == "outbox"]
    assert "sizeLimit" in outbox["emptyDir"]
    # Long enough for running calls to end and the outbox to be flushed.
    assert _pod_spec(worker)["terminationGracePeriodSeconds"] >= 300
