"""One snapshot version made ready to serve: read, verified, checked, rebuilt, eval mode.

:func:`load_served_model` does all the slow work of a reload off to the side and returns an
immutable :class:`ServedModel`; :class:`~driftd.adapters.hot_model.HotModel` then swaps one
reference to it. Anything wrong with a snapshot becomes a :class:`SnapshotRefusedError` with a
stable reason (see :class:`~driftd.ports.ReloadRefused`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from driftd.adapters.file_snapshot_reader import SnapshotError
from driftd.adapters.snapshot_readers import SnapshotReader
from driftd.learning.models import ModelConfigError, build_model
from driftd.ports import Clock, Predictions
from driftd.pruning.quantize import load_int8

_MAX_DETAIL = 2000


class SnapshotRefusedError(Exception):
    """A snapshot cannot be served; ``reason`` is a stable label, ``detail`` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail[:_MAX_DETAIL]


@dataclass(frozen=True, slots=True)
class ServingContract:
    """What callers of a serving model rely on; None fields are not checked."""

    task: str | None = None
    n_features: int | None = None
    n_outputs: int | None = None

    def check(self, version: int, offered: ServingContract) -> None:
        """Raise ``SnapshotRefusedError("incompatible")`` if ``offered`` breaks this contract."""
        for name in ("task", "n_features", "n_outputs"):
            wanted, got = getattr(self, name), getattr(offered, name)
            if wanted is not None and got != wanted:
                raise SnapshotRefusedError(
                    "incompatible", f"snapshot {version} has {name}={got!r}; serving {wanted!r}"
                )


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A loaded model and what its manifest says; immutable, shared by concurrent predicts."""

    model: torch.nn.Module  # a SplitModel, or its int8 copy
    version: int
    manifest: Mapping[str, Any]
    contract: ServingContract
    load_seconds: float

    @property
    def n_features(self) -> int:
        """Features per row."""
        return int(self.contract.n_features or 0)

    def number(self, key: str) -> float | None:
        """A numeric manifest field (``created_at``, ``watermark``), or None."""
        value = self.manifest.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    def predict(self, x: Any, device: torch.device) -> Predictions:
        """Predict a batch of shape ``(n, n_features)``.

        Raises:
            ValueError: ``x`` is not a numeric batch of this model's width.
        """
        batch = _as_batch(x, self.n_features, device)
        with torch.no_grad():
            output = self.model(batch).float().cpu()
        if self.contract.task == "classification":
            probabilities = torch.softmax(output, dim=1)
            return Predictions(
                self.version,
                classes=_read_only(probabilities.argmax(dim=1).numpy()),
                probabilities=_read_only(probabilities.numpy()),
            )
        return Predictions(self.version, values=_read_only(output.numpy()))


def load_served_model(
    reader: SnapshotReader,
    version: int,
    *,
    contract: ServingContract,
    device: torch.device,
    clock: Clock,
    int8: bool = False,
) -> ServedModel:
    """Read and verify ``version``, check it against ``contract``, and build it for serving.

    ``int8``: serve the snapshot's int8 copy where it has one (the float model otherwise).

    Raises:
        SnapshotRefusedError: The snapshot is missing, corrupt, unsupported, incompatible, or
            its model cannot be built from its config and weights (``bad_model``).
    """
    started = clock.monotonic()
    try:
        snapshot = reader.load(version)
    except SnapshotError as error:
        raise SnapshotRefusedError(error.reason, str(error)) from None
    config = snapshot.manifest.get("model")
    if not isinstance(config, dict):
        raise SnapshotRefusedError("bad_model", f"snapshot {version}: manifest has no model")
    offered = _contract_of(version, config)
    contract.check(version, offered)
    try:
        float_model = build_model(dict(config), torch.Generator())
        float_model.load_state_dict(fold_pruning_masks(snapshot.weights), strict=True)
        model = (
            load_int8(float_model, snapshot.serving) if int8 and snapshot.serving else float_model
        )
    except (ModelConfigError, RuntimeError, ValueError, TypeError, KeyError) as error:
        raise SnapshotRefusedError(
            "bad_model", f"snapshot {version}: cannot build its model: {error}"
        ) from None
    model.to(device).eval().requires_grad_(False)
    seconds = clock.monotonic() - started
    return ServedModel(model, version, snapshot.manifest, offered, seconds)


def fold_pruning_masks(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Turn ``torch.nn.utils.prune``'s ``<name>_orig`` + ``<name>_mask`` into a plain ``<name>``.

    A pruned training model saves that pair; the inference model is built unpruned and only
    needs the effective weight.
    """
    folded = dict(weights)
    for key, original in weights.items():
        base = key.removesuffix("_orig")
        mask = weights.get(f"{base}_mask")
        if key.endswith("_orig") and mask is not None:
            folded[base] = original * mask
            del folded[key], folded[f"{base}_mask"]
    return folded


def _contract_of(version: int, config: Mapping[str, Any]) -> ServingContract:
    task, n_features, n_outputs = (config.get(k) for k in ("task", "n_features", "n_outputs"))
    if task not in ("classification", "regression"):
        raise SnapshotRefusedError("bad_model", f"snapshot {version}: unknown task {task!r}")
    if not isinstance(n_features, int) or not isinstance(n_outputs, int):
        raise SnapshotRefusedError(
            "bad_model", f"snapshot {version}: n_features and n_outputs must be integers"
        )
    return ServingContract(str(task), n_features, n_outputs)


def _as_batch(x: Any, n_features: int, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        batch = x.detach().to(device=device, dtype=torch.float32)
    else:
        batch = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(device)
    if batch.dim() != 2 or batch.shape[1] != n_features:
        raise ValueError(f"expected a batch of shape (n, {n_features}), got {tuple(batch.shape)}")
    return batch


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array
