"""Settings: the one place defaults live.

Sources, strongest first: constructor arguments, ``DRIFTD_*`` environment variables (``__``
nests), a ``.env`` file, a TOML file (``--config`` or ``DRIFTD_CONFIG``), then the defaults here.
"""

from __future__ import annotations

import json
import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from driftd.ports.serving import RELOAD_INTERVAL_S
from driftd.settings.adaptation import AdaptationSettings, DriftSettings
from driftd.settings.distributed import DistributedSettings
from driftd.settings.environment import stray_message, stray_variables
from driftd.settings.kafka import KafkaSettings
from driftd.settings.pruning import PruningSettings
from driftd.settings.section import IntList, Section, StrList, split_list

log = logging.getLogger("driftd.settings")

# The sections that live in their own modules are part of this module's interface.
__all__ = [
    "AdaptationSettings", "ConfigurationError", "DriftSettings", "EventSettings",
    "InferSettings", "KafkaSettings", "LRSettings", "LearnerSettings", "LifecycleSettings",
    "LogSettings", "MetricsSettings", "ModelSettings", "PruningSettings", "Settings",
    "SnapshotSettings", "load_settings", "redacted", "unknown_environment_sections",
]  # fmt: skip


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

    _lists = field_validator("feature_names", "labels", mode="before")(split_list)


class ModelSettings(Section):
    """The network: built-in MLP or CNN, or a factory named by import path."""

    task: Literal["classification", "regression"] = "classification"
    n_classes: int = Field(2, ge=2, le=100_000)
    n_outputs: int = Field(1, ge=1, description="Regression targets per event.")
    n_features: int | None = Field(None, ge=1, description="Unset: inferred from the first event.")
    kind: str = Field("mlp", description="`mlp`, `cnn`, or `package.module:factory`.")
    hidden: IntList = Field(default_factory=lambda: [64, 64])
    head_hidden: IntList = Field(default_factory=list, description="Hidden widths of the head.")
    wide: bool = Field(
        True,
        description="mlp/cnn: the head also sees the standardised inputs (wide & deep): a linear "
        "rule is learnt directly, the layers learn the rest; a fresh per-domain head after a "
        "drift reaches the inputs without waiting for the held trunk.",
    )
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
    standardize: bool = Field(
        True, description="Standardise inputs by running per-feature mean/variance (in the model)."
    )
    standardize_horizon: int = Field(
        10_000, ge=1, description="Events after which the input statistics forget exponentially."
    )

    _lists = field_validator("hidden", "head_hidden", "input_shape", "channels", mode="before")(
        split_list
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

    batch_size: int = Field(256, ge=1, le=1_000_000, description="Events per poll.")
    micro_batch: int | Literal["auto"] = Field(
        "auto",
        description="Events per gradient step: a number, or `auto` (finer while the consumer "
        "keeps up, coarser while a backlog grows, within min/max_micro_batch).",
    )
    min_micro_batch: int = Field(1, ge=1, description="auto: the finest step.")
    max_micro_batch: int = Field(256, ge=1, description="auto: the coarsest step.")
    poll_timeout_s: float = Field(0.5, gt=0.0, le=60.0)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(3e-3, gt=0.0, le=10.0)
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
    min_scale: float = Field(
        0.1, gt=0.0, le=1.0, description="adaptive: the rate never falls below this x learner.lr."
    )
    max_scale: float = Field(
        10.0, ge=1.0, description="adaptive: the rate never rises above this x learner.lr."
    )
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


class SnapshotSettings(Section):
    """Versioned snapshots: where, how often, how many, which are published, who is told.

    Every snapshot is durable (it holds the offsets); the quality gate decides which are
    *published* (``LATEST`` moves, inference follows). See ``driftd.serving.publish_gate``.
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
        RELOAD_INTERVAL_S, gt=0.0, description="How often LATEST is checked for a newer snapshot."
    )
    flush_timeout_s: float = Field(
        30.0, gt=0.0,
        description="Longest wait for a batch's predictions and dead letters to be acknowledged "
        "before its offsets are committed.",
    )  # fmt: skip

    _lists = field_validator("input_topics", mode="before")(split_list)


class LogSettings(Section):
    """Logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = Field(False, alias="json")
    invalid_every_seconds: float = Field(10.0, ge=0.0, description="Rate limit of bad-record logs.")
    progress_every_events: int = Field(
        10_000, ge=0, description="A `progress` line per this many events learned (0: none)."
    )
    progress_every_seconds: float = Field(
        10.0, ge=0.0, description="At most one `progress` line per this many seconds."
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


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
        frozen=True,
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
    distributed: DistributedSettings = Field(default_factory=DistributedSettings)
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

    A ``DRIFTD_*`` variable that names no setting (``DRIFTD_SNAPSHOTS_DIR``: one underscore)
    is logged as a warning with the nearest real name; it is not an error, as the environment
    may hold other tools' variables.

    Raises:
        ConfigurationError: Listing every invalid field as ``path: reason``; a TOML file that
            does not parse is named with the parser's line and column.
    """
    from pydantic import ValidationError

    for name, suggestion in stray_variables(os.environ, Settings):
        log.warning(stray_message(name, suggestion), extra={"event": "unknown_setting"})
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
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(
            f"invalid configuration: {path}: not valid TOML: {error}"
        ) from None
    except ValueError as error:  # raised by sources, e.g. JSON in env
        raise ConfigurationError(f"invalid configuration: {error}") from None
