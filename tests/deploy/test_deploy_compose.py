"""deploy/docker-compose.yml: valid against the Compose specification, and wired the way the
daemon actually works (ports, volumes, health check, settings names, Prometheus targets).

The specification check uses ``compose-spec`` (bindings of the Rust ``compose_spec`` crate),
which rejects unknown keys and malformed values at the path where they occur.
"""

from __future__ import annotations

import base64

import compose_spec
import pytest

from driftd.settings.root import Settings
from tests.deploy.deploy_files import DEPLOY, load_yaml, settings_env_problems

COMPOSE_FILE = DEPLOY / "docker-compose.yml"
COMPOSE = load_yaml(COMPOSE_FILE)
SERVICES = COMPOSE["services"]
DRIFTD_SERVICES = ("trainer", "trainer-0", "trainer-1", "infer")
#: The two ways to train, as compose profiles: exactly one of them runs.
TRAINING_PROFILES = {"single": ["trainer"], "group": ["trainer-0", "trainer-1"]}
SNAPSHOTS = "/var/lib/driftd/snapshots"


def test_the_compose_specification_accepts_it() -> None:
    parsed = compose_spec.PyOptions(apply_merge=True).from_yaml(COMPOSE_FILE.read_text())
    parsed.validate()
    assert set(parsed.service_names()) == {
        "kafka", "kafka-init", "trainer", "trainer-0", "trainer-1", "infer", "producer",
        "prometheus", "grafana",
    }  # fmt: skip


def test_the_specification_check_can_fail() -> None:
    broken = COMPOSE_FILE.read_text().replace("stop_grace_period: 45s", "stop_grace_periods: 45s")
    with pytest.raises(ValueError, match="stop_grace_periods"):
        compose_spec.PyOptions(apply_merge=True).from_yaml(broken)


def test_kafka_is_the_official_image_in_kraft_mode() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    # A KRaft cluster id is a base64url-encoded 16-byte UUID.
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    init = SERVICES["kafka-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    script = init["command"][0]
    for topic in ("driftd-events", "driftd-predictions", "driftd-dead-letters", "driftd-snapshots"):
        assert f"{topic}:" in script


@pytest.mark.parametrize("name", DRIFTD_SERVICES)
def test_driftd_services_share_the_snapshots_and_listen_for_prometheus(name: str) -> None:
    service = SERVICES[name]
    env = service["environment"]
    assert env["DRIFTD_METRICS__HOST"] == "0.0.0.0"
    assert env["DRIFTD_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["DRIFTD_SNAPSHOTS__DIR"] == SNAPSHOTS
    mounts = service["volumes"]
    targets = [m if isinstance(m, str) else f"{m['source']}:{m['target']}" for m in mounts]
    assert f"snapshots:{SNAPSHOTS}" in targets
    assert service["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    grace = Settings(
        lifecycle={"shutdown_grace_s": float(env["DRIFTD_LIFECYCLE__SHUTDOWN_GRACE_S"])}
    )
    assert int(service["stop_grace_period"].removesuffix("s")) > grace.lifecycle.shutdown_grace_s
    if name.startswith("trainer-"):
        assert service["entrypoint"] == ["torchrun"]
        assert service["command"][-3:] == ["--no-python", "driftd", "run"]
    else:
        assert service["command"] == ["run" if name == "trainer" else "infer"]


def test_exactly_one_way_to_train_runs_and_nothing_else_needs_a_profile() -> None:
    profiles = {
        name: service["profiles"] for name, service in SERVICES.items() if "profiles" in service
    }
    assert profiles == {
        name: [profile] for profile, names in TRAINING_PROFILES.items() for name in names
    }
    header = COMPOSE_FILE.read_text().split("\nname:")[0]
    for profile in TRAINING_PROFILES:
        assert f"--profile {profile} up" in header, "the header says how to pick"
    # A service every profile runs may depend on a profile's service only optionally.
    for name, service in SERVICES.items():
        if "profiles" in service:
            continue
        depends = service.get("depends_on") or {}
        for dependency in depends:
            if "profiles" in SERVICES[dependency]:
                assert isinstance(depends, dict), f"{name} needs {dependency}"
                assert depends[dependency]["required"] is False, f"{name} needs {dependency}"
    infer_depends = SERVICES["infer"]["depends_on"]
    assert {"trainer", "trainer-0"} <= set(infer_depends)


def test_inference_reads_snapshots_read_only_with_two_replicas() -> None:
    infer = SERVICES["infer"]
    assert infer["volumes"][0]["read_only"] is True
    assert infer["deploy"]["replicas"] == 2
    env = infer["environment"]
    trainer_env = SERVICES["trainer"]["environment"]
    assert env["DRIFTD_INFER__INPUT_TOPICS"] == trainer_env["DRIFTD_KAFKA__TOPICS"]
    assert env["DRIFTD_INFER__GROUP_ID"] != trainer_env["DRIFTD_KAFKA__GROUP_ID"]


def test_every_driftd_variable_is_a_settings_field() -> None:
    names = {
        name
        for service in SERVICES.values()
        for name in (service.get("environment") or {})
        if name.startswith("DRIFTD_")
    }
    assert len(names) > 15
    assert settings_env_problems(sorted(names)) == []


def test_the_settings_check_catches_a_typo() -> None:
    assert settings_env_problems(["DRIFTD_SNAPSHOT__DIR", "DRIFTD_KAFKA__TOPIC", "DRIFTD_LOG"]) == [
        "DRIFTD_SNAPSHOT__DIR: no settings field 'snapshot'",
        "DRIFTD_KAFKA__TOPIC: no settings field 'topic'",
        "DRIFTD_LOG: names a whole section, not a field",
    ]
    assert settings_env_problems(["DRIFTD_LOG__JSON", "DRIFTD_KAFKA__TOPICS"]) == []


def test_the_producer_replays_the_stream_script_into_the_trainers_topic() -> None:
    producer = SERVICES["producer"]
    assert producer["entrypoint"] == ["python", "/opt/driftd-deploy/produce_stream.py"]
    assert "./produce_stream.py:/opt/driftd-deploy/produce_stream.py:ro" in producer["volumes"]
    assert (DEPLOY / "produce_stream.py").is_file()
    topic = SERVICES["trainer"]["environment"]["DRIFTD_KAFKA__TOPICS"]
    assert f"--topic={topic}" in producer["command"]
    assert "--bootstrap=kafka:9092" in producer["command"]


def test_prometheus_scrapes_every_driftd_service_on_the_metrics_port() -> None:
    prometheus = SERVICES["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    port = SERVICES["trainer"]["environment"]["DRIFTD_METRICS__PORT"]
    trainers = jobs["driftd-trainer"]
    (dns,) = trainers["dns_sd_configs"]
    assert dns["names"] == [name for names in TRAINING_PROFILES.values() for name in names]
    assert str(dns["port"]) == port
    for name in dns["names"]:
        # metrics.port + LOCAL_RANK, and LOCAL_RANK is 0 with one process per container.
        assert SERVICES[name]["environment"]["DRIFTD_METRICS__PORT"] == port
    (relabel,) = trainers["relabel_configs"]
    assert relabel["source_labels"] == ["__meta_dns_name"]
    assert relabel["target_label"] == "instance"
    assert relabel["replacement"] == "${1}:" + port
    dns = jobs["driftd-infer"]["dns_sd_configs"][0]
    assert dns["names"] == ["infer"]
    assert str(dns["port"]) == port
    assert all(name.startswith("driftd") for name in jobs if name != "prometheus")


def test_grafana_gets_the_provisioning_and_the_dashboard() -> None:
    grafana = SERVICES["grafana"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    for mount in grafana["volumes"]:
        source = mount.split(":")[0]
        if source.startswith("./"):
            assert (DEPLOY / source).exists(), source
