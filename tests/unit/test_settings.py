"""Settings: env nesting, lists, TOML and .env precedence, errors with field paths, secrets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftd.settings.root import (
    ConfigurationError,
    KafkaSettings,
    Settings,
    load_settings,
    redacted,
)

PASSWORD = "hunter2-s3cr3t"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No DRIFTD_* variable from the caller's environment, and no stray .env: cwd is empty."""
    for name in list(os.environ):
        if name.upper().startswith("DRIFTD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def error_of(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    return str(caught.value)


# --- defaults and the DESIGN example -----------------------------------------------------------


def test_defaults_without_any_source() -> None:
    loaded = load_settings()
    assert loaded.kafka.bootstrap_servers == ["127.0.0.1:9092"]
    assert loaded.kafka.topics == ["driftd-events"]
    assert loaded.kafka.dead_letter_topic == ""
    assert loaded.model.task == "classification"
    assert loaded.model.n_features is None
    assert loaded.model.kind == "mlp"
    assert loaded.metrics.host == "127.0.0.1"
    assert loaded.config is None


def test_the_design_example_is_a_complete_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTD_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv("DRIFTD_KAFKA__TOPICS", "events")
    monkeypatch.setenv("DRIFTD_MODEL__N_CLASSES", "3")
    monkeypatch.setenv("DRIFTD_SNAPSHOTS__DIR", "./snap")
    loaded = load_settings()
    assert loaded.kafka.bootstrap_servers == ["127.0.0.1:9092"]
    assert loaded.kafka.topics == ["events"]
    assert loaded.model.n_classes == 3
    assert loaded.snapshots.dir == Path("snap")


# --- environment -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a,b", ["a", "b"]),
        (" a , b ,", ["a", "b"]),
        ("single", ["single"]),
        ('["a", "b"]', ["a", "b"]),
        (' ["a,b", "c"] ', ["a,b", "c"]),
    ],
)
def test_list_settings_accept_commas_and_json(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("DRIFTD_KAFKA__TOPICS", value)
    monkeypatch.setenv("DRIFTD_INFER__INPUT_TOPICS", value)
    loaded = load_settings()
    assert loaded.kafka.topics == expected
    assert loaded.infer.input_topics == expected


def test_integer_lists_from_commas_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTD_MODEL__HIDDEN", "128, 32")
    monkeypatch.setenv("DRIFTD_MODEL__CHANNELS", "[8, 16, 32]")
    loaded = load_settings()
    assert loaded.model.hidden == [128, 32]
    assert loaded.model.channels == [8, 16, 32]


def test_several_bootstrap_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTD_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9093")
    loaded = load_settings()
    assert loaded.kafka.bootstrap_servers == ["k1:9092", "k2:9093"]
    assert loaded.kafka.client_options()["bootstrap_servers"] == ["k1:9092", "k2:9093"]


def test_env_nesting_converts_scalars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTD_LEARNER__BATCH_SIZE", "64")
    monkeypatch.setenv("DRIFTD_LEARNER__LR", "0.01")
    monkeypatch.setenv("DRIFTD_DRIFT__ENABLED", "false")
    monkeypatch.setenv("DRIFTD_LR__POLICY", "cosine_restarts")
    monkeypatch.setenv("DRIFTD_PRUNING__TARGET_SPARSITY", "0.75")
    monkeypatch.setenv("DRIFTD_METRICS__PORT", "0")
    loaded = load_settings()
    assert loaded.learner.batch_size == 64
    assert loaded.learner.lr == 0.01
    assert loaded.drift.enabled is False
    assert loaded.lr.policy == "cosine_restarts"
    assert loaded.pruning.target_sparsity == 0.75
    assert loaded.metrics.port == 0


def test_an_empty_list_is_an_error_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(monkeypatch, DRIFTD_KAFKA__TOPICS=" , ")
    assert "kafka.topics" in message


def test_broken_json_list_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(monkeypatch, DRIFTD_KAFKA__TOPICS='["a", ')
    assert "kafka.topics" in message


def test_unknown_nested_env_key_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(monkeypatch, DRIFTD_KAFKA__TOPICZ="a")
    assert "kafka.topicz" in message


# --- TOML file ---------------------------------------------------------------------------------

TOML = """
[kafka]
topics = ["from-toml"]
group_id = "toml-group"

[learner]
batch_size = 32
optimizer = "sgd"
"""


def test_toml_file_is_read(isolated: Path) -> None:
    loaded = load_settings(write(isolated / "driftd.toml", TOML))
    assert loaded.kafka.topics == ["from-toml"]
    assert loaded.kafka.group_id == "toml-group"
    assert loaded.learner.batch_size == 32
    assert loaded.learner.optimizer == "sgd"


def test_env_wins_over_toml_key_by_key(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTD_KAFKA__TOPICS", "from-env")
    monkeypatch.setenv("DRIFTD_LEARNER__BATCH_SIZE", "8")
    loaded = load_settings(str(write(isolated / "driftd.toml", TOML)))
    assert loaded.kafka.topics == ["from-env"]
    assert loaded.learner.batch_size == 8
    # Keys the environment does not set still come from the file: sections merge.
    assert loaded.kafka.group_id == "toml-group"
    assert loaded.learner.optimizer == "sgd"


def test_overrides_win_over_env_and_toml(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTD_LEARNER__BATCH_SIZE", "8")
    loaded = load_settings(write(isolated / "driftd.toml", TOML), learner={"batch_size": 99})
    assert loaded.learner.batch_size == 99
    assert loaded.learner.optimizer == "sgd"


def test_driftd_config_names_the_file(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTD_CONFIG", str(write(isolated / "via-env.toml", TOML)))
    loaded = load_settings()
    assert loaded.kafka.topics == ["from-toml"]
    assert loaded.config == isolated / "via-env.toml"


def test_config_argument_wins_over_driftd_config(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTD_CONFIG", str(write(isolated / "env.toml", TOML)))
    argument = write(isolated / "arg.toml", '[kafka]\ntopics = ["from-argument"]\n')
    loaded = load_settings(argument)
    assert loaded.kafka.topics == ["from-argument"]
    assert loaded.kafka.group_id == "driftd"


def test_missing_config_file_is_named(isolated: Path) -> None:
    missing = isolated / "nowhere" / "driftd.toml"
    with pytest.raises(ConfigurationError, match="file not found") as caught:
        load_settings(missing)
    assert str(missing) in str(caught.value)


def test_missing_config_file_from_driftd_config_is_named(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTD_CONFIG", str(isolated / "gone.toml"))
    with pytest.raises(ConfigurationError, match=r"gone\.toml"):
        load_settings()


def test_unknown_keys_in_toml_are_named(isolated: Path) -> None:
    path = write(isolated / "typo.toml", '[kafak]\nx = 1\n\n[kafka]\ntopicz = ["a"]\n')
    with pytest.raises(ConfigurationError) as caught:
        load_settings(path)
    lines = str(caught.value).splitlines()
    assert any(line.strip().startswith("kafak:") for line in lines)
    assert any(line.strip().startswith("kafka.topicz:") for line in lines)


def test_toml_syntax_error_is_a_configuration_error(isolated: Path) -> None:
    path = write(isolated / "broken.toml", "[learner\nbatch_size = 3\n")
    with pytest.raises(ConfigurationError, match="invalid configuration"):
        load_settings(path)


def test_invalid_toml_value_names_the_field(isolated: Path) -> None:
    path = write(isolated / "bad.toml", '[learner]\nbatch_size = "lots"\n')
    with pytest.raises(ConfigurationError, match=r"learner\.batch_size"):
        load_settings(path)


# --- .env --------------------------------------------------------------------------------------


def test_dotenv_sits_between_env_and_toml(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(isolated / ".env", "DRIFTD_LEARNER__BATCH_SIZE=7\nDRIFTD_LR__POLICY=constant\n")
    monkeypatch.setenv("DRIFTD_LR__POLICY", "step")
    loaded = load_settings(write(isolated / "driftd.toml", TOML))
    assert loaded.learner.batch_size == 7  # .env over TOML
    assert loaded.lr.policy == "step"  # env over .env
    assert loaded.learner.optimizer == "sgd"  # TOML where nothing else says


def test_dotenv_is_read_from_the_working_directory_only(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = isolated / "elsewhere"
    elsewhere.mkdir()
    write(isolated / ".env", "DRIFTD_LEARNER__BATCH_SIZE=7\n")
    monkeypatch.chdir(elsewhere)
    assert load_settings().learner.batch_size == 256
    monkeypatch.chdir(isolated)
    assert load_settings().learner.batch_size == 7


def test_dotenv_typo_in_a_section_is_named(isolated: Path) -> None:
    write(isolated / ".env", "DRIFTD_LEARNER__BATCHSIZE=7\n")
    with pytest.raises(ConfigurationError, match=r"learner\.batchsize"):
        load_settings()


def test_dotenv_keys_of_other_tools_are_ignored(isolated: Path) -> None:
    write(isolated / ".env", "POSTGRES_PASSWORD=x\nDRIFTD_LEARNER__BATCH_SIZE=7\n")
    assert load_settings().learner.batch_size == 7


# --- validation errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "path"),
    [
        ("DRIFTD_LEARNER__BATCH_SIZE", "0", "learner.batch_size"),
        ("DRIFTD_LEARNER__BATCH_SIZE", "many", "learner.batch_size"),
        ("DRIFTD_LEARNER__OPTIMIZER", "rmsprop", "learner.optimizer"),
        ("DRIFTD_MODEL__TASK", "clustering", "model.task"),
        ("DRIFTD_MODEL__N_CLASSES", "1", "model.n_classes"),
        ("DRIFTD_MODEL__N_FEATURES", "0", "model.n_features"),
        ("DRIFTD_KAFKA__AUTO_OFFSET_RESET", "sometimes", "kafka.auto_offset_reset"),
        ("DRIFTD_PRUNING__TARGET_SPARSITY", "1.0", "pruning.target_sparsity"),
        ("DRIFTD_METRICS__PORT", "70000", "metrics.port"),
        ("DRIFTD_SNAPSHOTS__KEEP", "0", "snapshots.keep"),
        ("DRIFTD_DRIFT__DETECTOR", "magic", "drift.detector"),
    ],
)
def test_invalid_value_names_the_dotted_field_path(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, path: str
) -> None:
    message = error_of(monkeypatch, **{name: value})
    assert message.startswith("invalid configuration:")
    assert f"{path}:" in message


def test_several_errors_are_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(
        monkeypatch,
        DRIFTD_LEARNER__BATCH_SIZE="0",
        DRIFTD_METRICS__PORT="70000",
        DRIFTD_KAFKA__AUTO_OFFSET_RESET="sometimes",
    )
    problems = [line.strip() for line in message.splitlines()[1:]]
    assert len(problems) == 3
    assert {problem.split(":")[0] for problem in problems} == {
        "learner.batch_size",
        "metrics.port",
        "kafka.auto_offset_reset",
    }


def test_configuration_error_is_a_value_error() -> None:
    assert issubclass(ConfigurationError, ValueError)


def test_min_lr_above_max_lr_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(monkeypatch, DRIFTD_LR__MIN_LR="0.5", DRIFTD_LR__MAX_LR="0.1")
    assert "lr.min_lr" in message


def test_equal_lr_bounds_are_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTD_LR__MIN_LR", "0.1")
    monkeypatch.setenv("DRIFTD_LR__MAX_LR", "0.1")
    loaded = load_settings()
    assert (loaded.lr.min_lr, loaded.lr.max_lr) == (0.1, 0.1)


def test_cnn_needs_an_input_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(monkeypatch, DRIFTD_MODEL__KIND="cnn")
    assert "model.input_shape" in message


def test_cnn_with_an_input_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTD_MODEL__KIND", "cnn")
    monkeypatch.setenv("DRIFTD_MODEL__INPUT_SHAPE", "1,8,8")
    monkeypatch.setenv("DRIFTD_MODEL__N_FEATURES", "64")
    assert load_settings().model.input_shape == [1, 8, 8]


def test_input_shape_must_match_n_features(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(
        monkeypatch,
        DRIFTD_MODEL__KIND="cnn",
        DRIFTD_MODEL__INPUT_SHAPE="1,8,8",
        DRIFTD_MODEL__N_FEATURES="63",
    )
    assert "model.n_features=63" in message


@pytest.mark.parametrize(
    ("kind", "ok"), [("mlp", True), ("pkg.nets:build", True), ("resnet", False)]
)
def test_model_kind_is_builtin_or_an_import_path(
    monkeypatch: pytest.MonkeyPatch, kind: str, ok: bool
) -> None:
    monkeypatch.setenv("DRIFTD_MODEL__KIND", kind)
    if ok:
        assert load_settings().model.kind == kind
    else:
        with pytest.raises(ConfigurationError, match=r"model\.kind"):
            load_settings()


# --- secrets -----------------------------------------------------------------------------------


def test_secrets_are_masked_but_passed_to_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTD_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DRIFTD_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("DRIFTD_KAFKA__SASL_PLAIN_USERNAME", "svc-driftd")
    monkeypatch.setenv("DRIFTD_KAFKA__SASL_PLAIN_PASSWORD", PASSWORD)
    monkeypatch.setenv("DRIFTD_KAFKA__SSL_PASSWORD", PASSWORD + "-key")
    loaded = load_settings()
    assert PASSWORD not in repr(loaded)
    assert PASSWORD not in str(loaded)
    assert PASSWORD not in repr(loaded.kafka)
    shown = redacted(loaded)
    assert PASSWORD not in json.dumps(shown)
    assert shown["kafka"]["sasl_plain_password"] == "**********"
    assert shown["kafka"]["ssl_password"] == "**********"
    assert shown["kafka"]["sasl_plain_username"] == "svc-driftd"
    options = loaded.kafka.client_options()
    assert options["sasl_plain_password"] == PASSWORD
    assert options["ssl_password"] == PASSWORD + "-key"
    assert options["sasl_plain_username"] == "svc-driftd"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["security_protocol"] == "SASL_SSL"
    assert options["ssl_check_hostname"] is True


def test_secret_from_toml_is_masked(isolated: Path) -> None:
    path = write(isolated / "s.toml", f'[kafka]\nsasl_plain_password = "{PASSWORD}"\n')
    loaded = load_settings(path)
    assert PASSWORD not in repr(loaded)
    assert PASSWORD not in json.dumps(redacted(loaded))
    assert loaded.kafka.client_options()["sasl_plain_password"] == PASSWORD


def test_secret_never_appears_in_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(
        monkeypatch,
        DRIFTD_KAFKA__SASL_PLAIN_PASSWORD=PASSWORD,
        DRIFTD_KAFKA__SECURITY_PROTOCOL="SASL_BOGUS",
    )
    assert "kafka.security_protocol" in message
    assert PASSWORD not in message


def test_plaintext_client_options_carry_no_security_extras() -> None:
    assert load_settings().kafka.client_options() == {
        "bootstrap_servers": ["127.0.0.1:9092"],
        "client_id": "driftd",
        "request_timeout_ms": 30_000,
        "security_protocol": "PLAINTEXT",
    }


def test_unset_secrets_show_as_null() -> None:
    shown = redacted(load_settings())
    assert shown["kafka"]["sasl_plain_password"] is None
    assert shown["kafka"]["ssl_password"] is None


def test_redacted_is_json_ready_and_complete() -> None:
    shown = redacted(Settings())
    assert json.loads(json.dumps(shown)) == shown
    assert shown["snapshots"]["dir"] == "driftd-snapshots"
    assert shown["metrics"]["host"] == "127.0.0.1"


# --- property ----------------------------------------------------------------------------------

names = st.lists(st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True), min_size=1, max_size=6)


# KafkaSettings is a plain model: it reads neither the environment nor the working directory, so
# the autouse function-scoped fixture is harmless to share across examples.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topics=names)
def test_comma_and_json_forms_give_the_same_list(topics: list[str]) -> None:
    assert KafkaSettings(topics=",".join(topics)).topics == topics
    assert KafkaSettings(topics=" , ".join(topics)).topics == topics
    assert KafkaSettings(topics=json.dumps(topics)).topics == topics
    assert KafkaSettings(topics=topics).topics == topics


def test_an_environment_variable_naming_no_section_fails_fast(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A typo in the section (``SNAPSHOT`` for ``SNAPSHOTS``) would silently lose the setting."""
    monkeypatch.setenv("DRIFTD_SNAPSHOT__DIR", "/elsewhere")
    monkeypatch.setenv("DRIFTD_FAULTS_HEAVY", "1")  # no "__": a tool's own variable, not a path
    with pytest.raises(ConfigurationError, match="DRIFTD_SNAPSHOT__DIR: no settings section"):
        load_settings()
    monkeypatch.delenv("DRIFTD_SNAPSHOT__DIR")
    assert load_settings().snapshots.dir == Path("./driftd-snapshots")
