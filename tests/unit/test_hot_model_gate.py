"""HotModel follows only what the quality gate published, never a durable-but-refused version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from driftd.adapters.file_snapshot_store import FileSnapshotStore, SnapshotError
from driftd.adapters.hot_model import HotModel
from driftd.learning.models import build_model
from driftd.ports import Snapshot
from tests.fakes import FakeClock
from tests.unit.test_hot_model import CLASSIFIER, X, expected_probabilities


def save(store: FileSnapshotStore, version: int, *, publish: bool) -> None:
    model = build_model(CLASSIFIER, torch.Generator().manual_seed(version))
    store.save(Snapshot(version, model.state_dict(), {}, {"model": CLASSIFIER}), publish=publish)


def test_unpublished_versions_are_never_served(tmp_path: Path) -> None:
    directory = tmp_path / "snapshots"
    store = FileSnapshotStore(directory, keep=5, clock=FakeClock())
    save(store, 1, publish=False)
    with HotModel(directory, start=False) as hot:
        assert hot.refresh() is False, "nothing published yet: nothing to serve"
        assert hot.refused == 0, "held back by the quality gate is not a refused reload"
        save(store, 2, publish=True)
        save(store, 3, publish=False)
        assert hot.refresh() is True
        assert hot.version == 2
        assert hot.refresh() is False, "LATEST still names 2"
        assert hot.version == 2
        with pytest.raises(SnapshotError, match="not published"):
            hot.pin(3)
        save(store, 4, publish=True)
        assert hot.refresh() is True
        assert hot.version == 4
        model = build_model(CLASSIFIER, torch.Generator().manual_seed(4))
        predictions = hot.predict(X)
        assert predictions.version == 4
        np.testing.assert_allclose(predictions.probabilities, expected_probabilities(model))
