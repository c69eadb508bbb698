"""Settings: the one place defaults live.

Sources, strongest first: constructor arguments, ``DRIFTD_*`` environment variables (``__``
nests), a ``.env`` file, a TOML file (``--config`` or ``DRIFTD_CONFIG``), then the defaults here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from driftd.pruning_settings import PruningSettings
from driftd.settings_section import Section


def _split_list(value: Any) -> Any:
    """Accept ``a,b`` as well as a JSON list (or a real list) for list settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], NoDecode]
IntList = Annotated[list[int], NoDecode]


class KafkaSettings(Section):
    """Where events come from, and where bad ones go."""

    bootstrap_servers: StrList = Field(default_factory=lambda: ["127.0.0.1:9092"], min_length=1)
    topics: StrList = Field(default_factory=lambda: ["driftd-events"], min_length=1)
    group_id: str = Field("driftd", min_length=1)
    dead_letter_topic: str = Field("", description="Empty: bad records are only counted.")
    dead_letter_flush_timeout_s: float = Field(
        30.0, gt=0.0, description="How long a snapshot waits for dead letters to be acknowledged."
    )
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    client_id: str = "driftd"
    session_timeout_ms: int = Field(45_000, ge=1_000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1_000)
    fetch_max_bytes: int = Field(52_428_800, ge=1_024)
    fetch_max_wait_ms: int = Field(100, ge=0, le=60_000, description="Broker wait for data.")
    consumer_process: bool = Field(
        True, description="Consume in a child process, on a second core, while the loop learns."
    )
    max_record_bytes: int = Field(1_048_576, ge=16, description="Larger records are rejected.")
    request_timeout_ms: int = Field(30_000, ge=1_000)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True

    _lists = field_validator("bootstrap_servers", "topics", mode="before")(_split_list)

    def client_options(self) -> dict[str, Any]:
        """Connection and security options shared by every Kafka client driftd creates."""
        options: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
        if self.sasl_plain_username is not None:
            options["sasl_plain_username"] = self.sasl_plain_username
        if self.sasl_plain_password is not None:
            options["sasl_plain_password"] = self.sasl_plain_password.get_secret_value()
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        if self.ssl_password is not None:
            options["ssl_password"] = self.ssl_password.get_secret_value()
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_check_hostname"] = self.ssl_check_hostname
        return options


class EventSettings(Section):
    """How an event's JSON is read."""

    x_field: str = "x"
    y_field: str = "y"
    domain_field: str = "domain"
    id_field: str = "id"
    ts_field: str = "ts"
    feature_names: StrList = Field(
        default_factory=list, description="Order of named features when `x` is an object."
    )
    labels: StrList = Field(
        default_factory=list, description="Class names; `y` may then be a name or an index."
    )

    _lists = field_validator("feature_names", "labels", mode="before")(_split_list)


class ModelSettings(Section):
    """The network: built-in MLP or CNN, or a factory named by import path."""

    task: Literal["classification", "regression"] = "classification"
    n_classes: int = Field(2, ge=2, le=100_000)
    n_outputs: int = Field(1, ge=1, description="Regression targets per event.")
    n_features: int | None = Field(None, ge=1, description="Unset: inferred from the first event.")
    kind: str = Field("mlp", description="`mlp`, `cnn`, or `package.module:factory`.")
    hidden: IntList = Field(default_factory=lambda: [64, 64])
    head_hidden: IntList = Field(default_factory=list, description="Hidden widths of the head.")
    activation: Literal["relu", "gelu", "tanh", "silu", "leaky_relu"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    norm: Literal["none", "layer", "batch"] = "none"
    input_shape: IntList = Field(
        default_factory=list, description="CNN input as channels,height,width (e.g. 1,8,8)."
    )
    channels: IntList = Field(default_factory=lambda: [16, 32], description="CNN conv widths.")
    device: str = Field("cpu", description="`cpu`, `cuda` or `cuda:N`.")
    seed: int = 0
    loss: Literal["auto", "cross_entropy", "mse", "huber"] = "auto"

    _lists = field_validator("hidden", "head_hidden", "input_shape", "channels", mode="before")(
        _split_list
    )

    @model_validator(mode="after")
    def _check_shapes(self) -> ModelSettings:
        if self.kind == "cnn" and len(self.input_shape) != 3:
            raise ValueError("model.input_shape must be channels,height,width for kind=cnn")
        if self.input_shape and self.n_features is not None:
            product = 1
            for size in self.input_shape:
                product *= size
            if product != self.n_features:
                raise ValueError(
                    f"model.n_features={self.n_features} differs from prod(input_shape)={product}"
                )
        if self.kind not in ("mlp", "cnn") and ":" not in self.kind:
            raise ValueError("model.kind must be mlp, cnn, or an import path `module:factory`")
        return self


class LearnerSettings(Section):
    """Mini-batches and the optimizer."""

    batch_size: int = Field(256, ge=1, le=1_000_000)
    poll_timeout_s: float = Field(0.5, gt=0.0, le=60.0)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    huber_delta: float = Field(1.0, gt=0.0)
    grad_clip_norm: float | None = Field(None, gt=0.0)
    metrics_window: int = Field(2_000, ge=1, description="Events in the prequential window.")
    torch_threads: int = Field(
        1, ge=1, le=256, description="Intra-op threads; small online batches run best on one."
    )


class LRSettings(Section):
    """The learning-rate policy and its bounds."""

    policy: Literal["constant", "step", "exponential", "cosine_restarts", "adaptive"] = "adaptive"
    min_lr: float = Field(1e-6, gt=0.0)
    max_lr: float = Field(1e-1, gt=0.0)
    step_size: int = Field(1_000, ge=1, description="step: steps between decays.")
    gamma: float = Field(0.5, gt=0.0, le=1.0, description="step/exponential: decay factor.")
    cycle_steps: int = Field(1_000, ge=1, description="cosine_restarts: first cycle length.")
    cycle_mult: float = Field(2.0, ge=1.0, description="cosine_restarts: cycle growth.")
    patience: int = Field(20, ge=1, description="adaptive: steps without improvement to decay.")
    decrease_factor: float = Field(0.5, gt=0.0, lt=1.0)
    increase_factor: float = Field(1.05, ge=1.0)
    improve_streak: int = Field(10, ge=1, description="adaptive: improving steps to grow.")
    threshold: float = Field(1e-3, ge=0.0, description="adaptive: relative improvement needed.")
    smoothing: float = Field(0.9, ge=0.0, lt=1.0, description="adaptive: loss EMA factor.")

    @model_validator(mode="after")
    def _check_bounds(self) -> LRSettings:
        if self.min_lr > self.max_lr:
            raise ValueError("lr.min_lr must not exceed lr.max_lr")
        return self


DetectorName = Literal["adwin", "page_hinkley", "kswin", "ddm", "eddm", "hddm_a", "hddm_w"]
_BINARY_DETECTORS = ("ddm", "eddm", "hddm_a", "hddm_w")


class DriftSettings(Section):
    """Drift detection (river) on the prequential loss/error and, label-free, on the inputs."""

    enabled: bool = True
    detector: DetectorName = "adwin"
    signal: Literal["auto", "loss", "error"] = Field(
        "auto", description="auto: the 0/1 error for ddm/eddm/hddm_*, else the per-event loss."
    )
    params: dict[str, float | int | bool | str] = Field(
        default_factory=dict, description='River keyword arguments, e.g. {"delta": 0.01}.'
    )
    every: int = Field(
        0, ge=0, description="Feed one labelled event in N to the detector (0: 1, kswin 32)."
    )
    batch_mean: bool = Field(False, description="Feed one value per batch: its mean loss.")
    covariate: bool = Field(True, description="Also watch the inputs (label-free).")
    covariate_delta: float = Field(0.002, gt=0.0, lt=1.0, description="ADWIN delta on inputs.")
    covariate_batch_mean: bool = Field(
        False, description="Inputs: one value per batch (true), or per event (detects sooner)."
    )

    @model_validator(mode="after")
    def _check_signal(self) -> DriftSettings:
        binary = self.detector in _BINARY_DETECTORS
        if binary and self.signal == "loss":
            raise ValueError(f"drift.detector={self.detector} watches the 0/1 error, not loss")
        if binary and self.batch_mean:
            raise ValueError(f"drift.batch_mean needs a continuous detector, not {self.detector}")
        return self

    @property
    def concept_signal(self) -> Literal["loss", "error"]:
        """The labelled signal the detector watches."""
        if self.signal != "auto":
            return self.signal
        return "error" if self.detector in _BINARY_DETECTORS else "loss"


class AdaptationSettings(Section):
    """Re-adaptation after drift: LR boost, trunk freeze, domain heads, replay, transfer."""

    enabled: bool = True
    lr_boost: float = Field(3.0, ge=1.0, le=100.0, description="Head LR multiplier at a drift.")
    boost_steps: int = Field(100, ge=1, description="Steps for the head boost to decay to 1x.")
    reset_head_moments: bool = Field(True, description="Clear the head's optimizer state.")
    policy_lr_factor: float = Field(
        1.0, ge=0.0, le=100.0,
        description="At a drift, raise the LR policy's rate to this x learner.lr (0: never).",
    )  # fmt: skip
    trunk_scale: float = Field(
        0.0, ge=0.0, le=1.0, description="Trunk LR multiplier after a drift (0 freezes)."
    )
    trunk_hold_steps: int = Field(20, ge=0, description="Steps the trunk stays frozen/slowed.")
    trunk_resume_scale: float = Field(
        0.3, gt=0.0, le=1.0, description="Trunk LR multiplier when it resumes, ramping to 1x."
    )
    trunk_ramp_steps: int = Field(50, ge=1, description="Steps from the resume scale to 1x.")
    freeze_trunk: bool = Field(False, description="Feature transfer: never train the trunk.")
    heads: bool = Field(True, description="Keep per-domain heads; reuse one on a recurrence.")
    max_heads: int = Field(8, ge=1, le=1_000, description="Bound of the head registry (LRU).")
    new_head: Literal["clone", "fresh"] = Field(
        "fresh", description="A new domain's head: freshly initialised, or the live one as is."
    )
    score_events: int = Field(
        128, ge=8, description="Labelled events after a drift on which heads are scored."
    )
    fit_ratio: float = Field(
        1.5, ge=1.0, description="A stored head fits if its loss <= ratio x its reference..."
    )
    fit_margin: float = Field(0.1, ge=0.0, description="... + this margin (see the docs).")
    early_reuse: bool = Field(
        True, description="Switch to a stored head as soon as it is clearly better (paired test)."
    )
    early_min_events: int = Field(
        16, ge=2, description="Post-drift labelled events before the early test may switch."
    )
    reuse_confidence: float = Field(
        2.33, gt=0.0, description="Early test: standard errors the loss gain must exceed."
    )
    on_covariate_drift: Literal["ignore", "lr_boost", "score_heads"] = Field(
        "score_heads", description="What an input (label-free) drift does: see the docs."
    )
    input_fit_distance: float = Field(
        0.5, gt=0.0, description="score_heads without labels: max input distance of a fit."
    )
    replay: Literal["sliding", "reservoir"] = "sliding"
    replay_size: int = Field(1_024, ge=8, le=1_000_000, description="Events kept for replay.")
    replay_steps: int = Field(20, ge=0, description="Extra steps after a head switch.")
    replay_batch_size: int = Field(32, ge=1)
    warm_start_dir: Path | None = Field(
        None, description="Snapshot dir whose weights start a fresh deployment."
    )
    structure_from: Path | None = Field(
        None, description="Snapshot dir whose architecture config a fresh deployment uses."
    )
    grow_classes: bool = Field(False, description="Grow the output layer for unseen labels.")
    max_classes: int = Field(100, ge=2, le=100_000, description="Bound of class growth.")

    @model_validator(mode="after")
    def _check_sizes(self) -> AdaptationSettings:
        if self.heads and self.replay_size < self.score_events:
            raise ValueError("adaptation.replay_size must be >= adaptation.score_events")
        if self.warm_start_dir is not None and self.structure_from is not None:
            raise ValueError("set adaptation.warm_start_dir or adaptation.structure_from, not both")
        return self


class SnapshotSettings(Section):
    """Versioned snapshots: where, how often, how many, which are published, who is told.

    Every snapshot is durable (it holds the offsets); the quality gate decides which are
    *published* (``LATEST`` moves, inference follows). See ``driftd.publish_gate``.
    """

    dir: Path | str = Field(
        Path("./driftd-snapshots"),
        description="A local directory, or an object-store URL (s3://bucket/prefix: driftd[s3]).",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for a URL dir (JSON): key, secret, client_kwargs, ...",
    )
    every_steps: int = Field(200, ge=1)
    every_seconds: float = Field(30.0, gt=0.0)
    keep: int = Field(5, ge=1, description="Newest versions kept, plus the published one.")
    gate_enabled: bool = Field(True, description="False publishes every snapshot.")
    gate_margin: float = Field(
        0.05, ge=0.0, description="Publish if the recent loss <= published loss * (1 + margin)."
    )
    gate_baseline: bool = Field(
        True, description="Also require beating the no-change baseline (recent prior/mean)."
    )
    gate_baseline_margin: float = Field(
        0.0, ge=0.0, description="Relative slack over the no-change baseline's loss."
    )
    notify_topic: str = Field(
        "", description="Kafka topic told of each published snapshot (empty: none)."
    )

    @field_validator("dir", mode="before")
    @classmethod
    def _path_unless_url(cls, value: Any) -> Any:
        """Keep ``scheme://...`` as a URL string; anything else is a local path."""
        if isinstance(value, str) and "://" not in value:
            return Path(value)
        return value

    @field_validator("storage_options", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        """Accept a JSON object in a string (environment variables)."""
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @property
    def url(self) -> str | None:
        """The object-store URL of ``dir``, or None when it is a local directory."""
        return self.dir if isinstance(self.dir, str) else None


class MetricsSettings(Section):
    """The Prometheus / health endpoint."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535, description="0 picks a free port.")
    lag_every_seconds: float = Field(5.0, gt=0.0)


class InferSettings(Section):
    """The streaming inference worker (`driftd infer`)."""

    input_topics: StrList = Field(default_factory=lambda: ["driftd-events"], min_length=1)
    output_topic: str = Field("driftd-predictions", min_length=1)
    group_id: str = Field("driftd-infer", min_length=1)
    int8: bool = Field(
        False, description="Serve the int8 copy where snapshots have one (pruning.int8_export)."
    )
    reload_interval_s: float = Field(
        0.2, gt=0.0, description="How often LATEST is checked for a newer snapshot."
    )

    _lists = field_validator("input_topics", mode="before")(_split_list)


class LogSettings(Section):
    """Logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = Field(False, alias="json")
    invalid_every_seconds: float = Field(10.0, ge=0.0, description="Rate limit of bad-record logs.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LifecycleSettings(Section):
    """Shutdown behaviour."""

    shutdown_grace_s: float = Field(30.0, gt=0.0)


class Settings(BaseSettings):
    """The whole configuration of driftd."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTD_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        validate_default=True,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    event: EventSettings = Field(default_factory=EventSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    learner: LearnerSettings = Field(default_factory=LearnerSettings)
    lr: LRSettings = Field(default_factory=LRSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    adaptation: AdaptationSettings = Field(default_factory=AdaptationSettings)
    pruning: PruningSettings = Field(default_factory=PruningSettings)
    snapshots: SnapshotSettings = Field(default_factory=SnapshotSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    infer: InferSettings = Field(default_factory=InferSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings)
    config: Path | None = Field(None, description="TOML file read below env and .env.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence: arguments > env > .env > TOML file > defaults."""
        toml_path = _config_path(init_settings)
        dotenv = _OwnKeysOnly(settings_cls, dotenv_settings)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv]
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


class _OwnKeysOnly(PydanticBaseSettingsSource):
    """A ``.env`` shared with other tools: keep driftd's settings, ignore the rest."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self._inner = inner

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        """Unused: values come from :meth:`__call__`."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        fields = self.settings_cls.model_fields
        return {key: value for key, value in self._inner().items() if key in fields}


def _config_path(init_settings: PydanticBaseSettingsSource) -> Path | None:
    explicit = init_settings().get("config")
    path = explicit if explicit is not None else os.environ.get("DRIFTD_CONFIG")
    return Path(path) if path else None


_SECRET_WORDS = ("secret", "password", "token", "key", "credential")


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective configuration as JSON-ready data, secrets masked.

    ``SecretStr`` fields mask themselves; free-form ``snapshots.storage_options`` may carry
    object-store credentials, so values under secret-looking keys are masked too.
    """
    data = settings.model_dump(mode="json", by_alias=False)
    options = data["snapshots"].get("storage_options") or {}
    data["snapshots"]["storage_options"] = _mask_secrets(options)
    return data


def _mask_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: "**********"
            if any(word in str(key).lower() for word in _SECRET_WORDS)
            else _mask_secrets(item)
            for key, item in value.items()
        }
    return value


class ConfigurationError(ValueError):
    """The configuration is invalid; the message names each bad field and why."""


def unknown_environment_sections(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """``DRIFTD_<SECTION>__...`` variables whose section does not exist (a typo loses a setting).

    pydantic-settings ignores them; unknown keys *inside* a section are already refused.
    Variables without ``__`` (``DRIFTD_CONFIG``, tools' own ``DRIFTD_*``) are not settings paths.
    """
    found = []
    for name in environ:
        upper = name.upper()
        if upper.startswith("DRIFTD_") and "__" in upper:
            section = upper[len("DRIFTD_") :].split("__", 1)[0].lower()
            if section not in Settings.model_fields:
                found.append((name, section))
    return sorted(found)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from every source, failing fast with field paths on any error.

    Args:
        config_file: A TOML file; ``None`` falls back to ``DRIFTD_CONFIG`` if set.
        **overrides: Section values that win over every other source (used by demo and bench).

    Raises:
        ConfigurationError: Listing every invalid field as ``path: reason``.
    """
    from pydantic import ValidationError

    unknown = unknown_environment_sections(os.environ)
    if unknown:
        raise ConfigurationError(
            "invalid configuration:\n  "
            + "\n  ".join(f"{name}: no settings section {section!r}" for name, section in unknown)
        )
    path = config_file if config_file is not None else os.environ.get("DRIFTD_CONFIG") or None
    if path is not None and not Path(path).is_file():
        raise ConfigurationError(f"config: file not found: {path}")
    try:
        return Settings(config=Path(path) if path else None, **overrides)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            location = ".".join(str(part) for part in problem["loc"]) or "(root)"
            lines.append(f"{location}: {problem['msg']}")
        raise ConfigurationError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    except ValueError as error:  # raised by sources, e.g. unreadable TOML or JSON in env
        raise ConfigurationError(f"invalid configuration: {error}") from None
