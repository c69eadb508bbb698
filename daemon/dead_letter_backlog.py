"""Dead letters not yet acknowledged: kept in snapshots, and the offsets they hold back.

While the dead-letter topic cannot be written, training goes on and snapshots keep being made.
A snapshot's offsets are the learned position (a restart resumes there and learns nothing
twice), so the rejections still unacknowledged when it is taken travel inside it — their
original key and value bytes in the ``training`` tensors, the rest in the manifest — and a
restored trainer sends them again. The offsets committed to the source stop at the oldest
undelivered dead letter of each partition (:func:`commit_offsets`): whoever reads the group's
committed position without the snapshot (an operator, another consumer) re-reads that record
instead of losing it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from driftd.records import Record, Rejection, TopicPartition

BYTES_KEY = "bytes"
#: A saved detail is cut here (the dead-letter header keeps at most 1 KiB of it anyway).
MAX_DETAIL_CHARS = 1024


def commit_offsets(
    offsets: Mapping[TopicPartition, int], undelivered: Sequence[Rejection]
) -> dict[TopicPartition, int]:
    """The learned next offsets, each capped at its partition's oldest undelivered dead letter."""
    capped = dict(offsets)
    for rejection in undelivered:
        record = rejection.record
        tp = TopicPartition(record.topic, record.partition)
        if tp in capped and record.offset < capped[tp]:
            capped[tp] = record.offset
    return capped


def backlog_state(
    undelivered: Sequence[Rejection],
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Tensors (the keys' and values' bytes, concatenated) and JSON entries of the backlog."""
    chunks: list[bytes] = []
    entries: list[dict[str, Any]] = []
    for rejection in undelivered:
        record = rejection.record
        entries.append(
            {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp_ms": record.timestamp_ms,
                "reason": rejection.reason,
                "detail": rejection.detail[:MAX_DETAIL_CHARS],
                "key_bytes": None if record.key is None else len(record.key),
                "value_bytes": None if record.value is None else len(record.value),
            }
        )
        chunks += [record.key or b"", record.value or b""]
    if not entries:
        return {}, []
    data = b"".join(chunks)
    tensor = (
        torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()
        if data
        else torch.zeros(0, dtype=torch.uint8)
    )
    return {BYTES_KEY: tensor}, entries


def restore_backlog(
    tensors: Mapping[str, torch.Tensor], entries: Sequence[Mapping[str, Any]]
) -> list[Rejection]:
    """The rejections :func:`backlog_state` saved, bytes for bytes.

    Raises:
        ValueError: The entries and the bytes do not add up (a damaged snapshot).
    """
    if not entries:
        return []
    data = bytes(tensors[BYTES_KEY].numpy().tobytes()) if BYTES_KEY in tensors else b""
    rejections: list[Rejection] = []
    position = 0
    for entry in entries:
        key, position = _take(data, position, entry.get("key_bytes"))
        value, position = _take(data, position, entry.get("value_bytes"))
        timestamp = entry.get("timestamp_ms")
        record = Record(
            str(entry["topic"]),
            int(entry["partition"]),
            int(entry["offset"]),
            value,
            key,
            None if timestamp is None else int(timestamp),
        )
        rejections.append(Rejection(record, str(entry["reason"]), str(entry["detail"])))
    if position != len(data):
        raise ValueError(f"dead-letter backlog: {len(data) - position} bytes left over")
    return rejections


def _take(data: bytes, position: int, size: Any) -> tuple[bytes | None, int]:
    if size is None:
        return None, position
    end = position + int(size)
    if int(size) < 0 or end > len(data):
        raise ValueError("dead-letter backlog: entries name more bytes than were saved")
    return data[position:end], end
