"""driftd: keep a PyTorch model learning from a live stream.

``import driftd`` imports nothing else; the public API loads on first use::

    from driftd import HotModel, Learner

    model = HotModel("./driftd-snapshots")
    predictions = model.predict([[0.1, 0.2, 0.3]])

    learner = Learner(model={"n_classes": 3})  # the daemon's learning core, in process
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "DriftDetected", "HotModel", "Learner", "ModelAdapted", "ModelNotReadyError", "ModelPruned",
    "Predictions", "SnapshotError", "__version__",
]  # fmt: skip

# Not even under TYPE_CHECKING: every core module imports this package (``__version__``), and
# the import-boundary check would see the core reaching the adapters through it.
_LAZY = {
    "DriftDetected": "driftd.library.events",
    "HotModel": "driftd.adapters.hot_model",
    "Learner": "driftd.library.learner",
    "ModelAdapted": "driftd.library.events",
    "ModelPruned": "driftd.library.events",
    "ModelNotReadyError": "driftd.ports",
    "Predictions": "driftd.ports",
    "SnapshotError": "driftd.adapters.file_snapshot_reader",
}


def __getattr__(name: str) -> Any:
    """Import the public names on first access (PEP 562), keeping import light."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'driftd' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
