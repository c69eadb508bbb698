"""The trainer group in deploy/: compose's `group` profile and the k8s trainer-group overlay.

Checked against the group's contract (README, "Scaling training out"): one torchrun node per
container or pod with the c10d rendezvous at the first one, as many nodes as ranks are
deployed, every rank on the same consumer group and the same snapshots, adaptation and pruning
off, ``model.n_features`` set to the stream's feature count, valid ``distributed`` settings,
metrics on ``metrics.port`` (+ LOCAL_RANK, 0 with one process per node), and time limits that
nest: the daemon's shutdown grace < torchrun's shutdown timeout < the platform's kill.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from driftd.settings.root import Settings
from driftd.wiring.distributed import check_group_settings as group_settings_refused_by_driftd
from tests.deploy.deploy_files import DEPLOY, TorchrunLaunch, load_yaml, torchrun_launch
from tests.deploy.kubernetes_manifests import find, pod_spec, render
from tests.deploy.test_deploy_kubernetes import BASE, GROUP, effective_env, settings_from

COMPOSE = load_yaml(DEPLOY / "docker-compose.yml")
SERVICES = COMPOSE["services"]
RANKS = sorted(name for name, s in SERVICES.items() if s.get("profiles") == ["group"])
#: torchrun's default; the k8s overlay states it (--rdzv-conf=join_timeout=600).
JOIN_TIMEOUT_S = 600


def check_group_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rank's environment passes the daemon's own check for a group (WORLD_SIZE > 1)."""
    settings = settings_from(env, monkeypatch)
    group_settings_refused_by_driftd(settings)  # raises ConfigurationError naming the field
    assert settings.distributed.sync == "allreduce", "the deploy keeps adaptation on"
    assert settings.adaptation.enabled


def check_launch(launch: TorchrunLaunch, nodes: int, settings: Settings, kill_after_s: int) -> None:
    """One torchrun node of ``nodes``, restarting the group, stopping within ``kill_after_s``."""
    assert launch.program == ["driftd", "run"]
    assert launch.options["nnodes"] == str(nodes), "--nnodes is the number of ranks deployed"
    assert launch.options["nproc-per-node"] == "1", "one rank per node: metrics on one port"
    assert launch.options["rdzv-backend"] == "c10d"
    assert launch.options["rdzv-id"] == "driftd"
    assert int(launch.options["max-restarts"]) >= 1, "a dead rank restarts the group"
    assert "node-rank" not in launch.options, "c10d assigns ranks; torchrun ignores it"
    shutdown = int(launch.options["shutdown-timeout"])
    assert settings.lifecycle.shutdown_grace_s < shutdown < kill_after_s


def test_torchrun_parses_every_launch_as_written(group) -> None:
    from torch.distributed.run import get_args_parser  # torch's own torchrun parser

    launches = [SERVICES[name]["command"] for name in RANKS]
    launches.append(expanded(_trainer(group)[1]))
    for command in launches:
        parsed = get_args_parser().parse_args(command)
        launch = torchrun_launch(command)
        assert parsed.no_python is True
        assert [parsed.training_script, *parsed.training_script_args] == ["driftd", "run"]
        assert str(parsed.nnodes) == launch.options["nnodes"]
        assert parsed.rdzv_endpoint == launch.options["rdzv-endpoint"]
        assert parsed.max_restarts == int(launch.options["max-restarts"])
        assert parsed.shutdown_timeout == int(launch.options["shutdown-timeout"])


# -- docker compose -------------------------------------------------------------------------


def test_compose_runs_two_ranks_that_rendezvous_at_the_first() -> None:
    assert RANKS == ["trainer-0", "trainer-1"]
    host, port = torchrun_launch(SERVICES["trainer-0"]["command"]).host_port("rdzv-endpoint")
    assert (host, port) == (SERVICES["trainer-0"]["hostname"], 29400)
    for name in RANKS:
        service = SERVICES[name]
        launch = torchrun_launch(service["command"])
        assert service["entrypoint"] == ["torchrun"]
        assert service["hostname"] == name, "the rendezvous host must recognise its own name"
        assert launch.options["local-addr"] == name, "the address the other ranks reach"
        assert launch.host_port("rdzv-endpoint") == (host, port)
        env = service["environment"]
        settings = Settings(
            lifecycle={"shutdown_grace_s": float(env["DRIFTD_LIFECYCLE__SHUTDOWN_GRACE_S"])}
        )
        kill_after = int(service["stop_grace_period"].removesuffix("s"))
        check_launch(launch, len(RANKS), settings, kill_after)
        assert service["restart"] == "unless-stopped", "after --max-restarts, Docker restarts it"


def test_compose_ranks_share_the_single_trainers_group_and_snapshots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    single = SERVICES["trainer"]
    envs = [SERVICES[name]["environment"] for name in RANKS]
    assert all(env == envs[0] for env in envs), "every rank runs with the same settings"
    for key in ("DRIFTD_KAFKA__GROUP_ID", "DRIFTD_KAFKA__TOPICS", "DRIFTD_SNAPSHOTS__DIR"):
        assert envs[0][key] == single["environment"][key], key
    for name in RANKS:
        assert SERVICES[name]["volumes"] == single["volumes"], "the same snapshot volume"
    check_group_settings(envs[0], monkeypatch)
    assert "DRIFTD_DISTRIBUTED__SYNC" not in single["environment"]


def test_compose_n_features_is_what_the_producer_sends() -> None:
    command = SERVICES["producer"]["command"]
    (features,) = [a.removeprefix("--features=") for a in command if a.startswith("--features=")]
    for name in RANKS:
        assert SERVICES[name]["environment"]["DRIFTD_MODEL__N_FEATURES"] == features


def test_compose_ranks_publish_their_metrics_on_distinct_host_ports() -> None:
    published = [SERVICES[name]["ports"] for name in RANKS]
    host_ports = [mapping.split(":")[0] for ports in published for mapping in ports]
    assert len(host_ports) == len(set(host_ports)) == len(RANKS)
    for ports in published:
        (mapping,) = ports
        assert mapping.endswith(":" + SERVICES["trainer-0"]["environment"]["DRIFTD_METRICS__PORT"])


# -- Kubernetes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def group() -> list[dict[str, Any]]:
    return render(GROUP)


def _trainer(resources: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    statefulset = find(resources, "StatefulSet", "driftd-trainer")
    (container,) = pod_spec(statefulset)["containers"]
    return statefulset, container


def expanded(container: dict[str, Any]) -> list[str]:
    """The container's args as Kubernetes expands them: ``$(NAME)`` from its literal env."""
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), arg) for arg in container["args"]]


def test_k8s_nodes_follow_the_replica_count(group) -> None:
    statefulset, container = _trainer(group)
    replicas = statefulset["spec"]["replicas"]
    assert replicas == 2
    launch = torchrun_launch(container["args"])
    # Kubernetes expands $(TRAINER_NODES) from the container's env: the replica count.
    assert launch.options["nnodes"] == "$(TRAINER_NODES)"
    env = {item["name"]: item for item in container["env"]}
    assert env["TRAINER_NODES"]["value"] == str(replicas)
    assert torchrun_launch(expanded(container)).options["nnodes"] == str(replicas)
    assert container["command"] == ["torchrun"]
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel", "all ranks start together"
    assert statefulset["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert "volumeClaimTemplates" not in statefulset["spec"], "one volume for all ranks"


def test_k8s_rendezvous_is_pod_0_through_the_headless_service(group) -> None:
    statefulset, container = _trainer(group)
    launch = torchrun_launch(container["args"])
    name, service_name = statefulset["metadata"]["name"], statefulset["spec"]["serviceName"]
    host, port = launch.host_port("rdzv-endpoint")
    assert host == f"{name}-0.{service_name}"
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["rendezvous"] == port
    service = find(group, "Service", service_name)
    assert service["spec"]["clusterIP"] == "None", "headless: one DNS name per pod"
    assert service["spec"]["publishNotReadyAddresses"] is True, "named before it is ready"
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["rendezvous"] == port
    # Each pod is reached at its own stable name.
    assert launch.options["local-addr"] == f"$(POD_NAME).{service_name}"
    env = {item["name"]: item for item in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_k8s_ranks_share_settings_snapshots_and_limits(group, monkeypatch) -> None:
    statefulset, container = _trainer(group)
    env = effective_env(group, container)
    check_group_settings(env, monkeypatch)
    settings = settings_from(env, monkeypatch)
    spec = pod_spec(statefulset)
    launch = torchrun_launch(expanded(container))
    check_launch(
        launch, statefulset["spec"]["replicas"], settings, spec["terminationGracePeriodSeconds"]
    )
    assert launch.options["rdzv-conf"] == f"join_timeout={JOIN_TIMEOUT_S}"

    base_env = effective_env(render(BASE), _trainer(render(BASE))[1])
    assert env["DRIFTD_KAFKA__GROUP_ID"] == base_env["DRIFTD_KAFKA__GROUP_ID"]
    assert env["DRIFTD_SNAPSHOTS__DIR"] == base_env["DRIFTD_SNAPSHOTS__DIR"]
    claim = find(group, "PersistentVolumeClaim", "driftd-snapshots")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "every rank mounts it"
    # The group's settings are the trainer's alone: inference is unchanged.
    (infer,) = pod_spec(find(group, "Deployment", "driftd-infer"))["containers"]
    assert not any(name.startswith("DRIFTD_DISTRIBUTED__") for name in effective_env(group, infer))


def test_k8s_probes_outlast_a_group_restart(group) -> None:
    _, container = _trainer(group)
    env = effective_env(group, container)
    collective_timeout = float(env["DRIFTD_DISTRIBUTED__TIMEOUT_S"])

    def window(probe: str) -> int:
        spec = container[probe]
        return int(spec["periodSeconds"] * spec["failureThreshold"])

    # Before the first answer: the rendezvous may wait join_timeout for the other pods.
    assert window("startupProbe") > JOIN_TIMEOUT_S
    # A rank stuck on a dead peer: the collective times out, then the group meets again.
    assert window("livenessProbe") > collective_timeout + JOIN_TIMEOUT_S
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
