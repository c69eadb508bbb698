"""The ``kafka`` settings section: brokers, topics, group, dead letters, client security."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from driftd.settings.section import Section, StrList, split_list


class KafkaSettings(Section):
    """Where events come from, and where bad ones go."""

    bootstrap_servers: StrList = Field(default_factory=lambda: ["127.0.0.1:9092"], min_length=1)
    topics: StrList = Field(default_factory=lambda: ["driftd-events"], min_length=1)
    group_id: str = Field("driftd", min_length=1)
    dead_letter_topic: str = Field("", description="Empty: bad records are only counted.")
    dead_letter_flush_timeout_s: float = Field(
        30.0, gt=0.0, description="How long a snapshot waits for dead letters to be acknowledged."
    )
    dead_letter_max_backlog: int = Field(
        10_000,
        ge=1,
        description=(
            "Dead letters waiting for acknowledgement at most. While the dead-letter topic "
            "cannot be written, training and snapshots go on (the snapshots keep the waiting "
            "records; commits stop at the oldest one); once this many wait, the trainer stops "
            "consuming until they are delivered (back-pressure: none is dropped)."
        ),
    )
    commit_timeout_s: float = Field(
        10.0, gt=0.0, le=300.0,
        description="Bound on one offset commit (and on closing the consumer), so an unreachable "
        "broker cannot stall the loop.",
    )  # fmt: skip
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    assignment: Literal["manual", "group"] = Field(
        "manual",
        description=(
            "How the trainer gets its partitions. manual: it assigns every partition of its "
            "topics itself and resumes from its snapshot (no group join: a restart consumes at "
            "once); offsets are still committed to group_id. group: it joins group_id and "
            "waits for rebalances. The inference workers always join their group."
        ),
    )
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

    _lists = field_validator("bootstrap_servers", "topics", mode="before")(split_list)

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
