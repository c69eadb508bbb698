"""river's drift detectors, without the heavy imports no detector needs at start.

Importing ``river.drift`` runs two imports that cost every process start and its memory without
serving drift detection: its example ``datasets`` import ``river.stream``, which imports
scikit-learn whenever it is installed (~65 MiB, ~1 s), and KSWIN's module imports ``scipy.stats``
(~1 s) that only KSWIN's update uses. Importing from here first registers both modules as
deferred: each runs, unchanged, on the first access to one of its attributes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

__all__ = ["binary", "drift"]

#: Deferred modules, as (name, its ``__init__.py`` relative to its top-level package's).
DEFERRED = (
    ("river.drift.datasets", ("drift", "datasets")),
    ("scipy.stats", ("stats",)),
)


def defer(name: str, init_file: Path) -> None:
    """Register package ``name`` (at ``init_file``) so that it executes on first attribute use."""
    spec = importlib.util.spec_from_file_location(
        name, init_file, submodule_search_locations=[str(init_file.parent)]
    )
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def load_on_first_use(attribute: str) -> Any:  # PEP 562: only for missing attributes
        del module.__dict__["__getattr__"]
        loader.exec_module(module)
        return getattr(module, attribute)

    module.__dict__["__getattr__"] = load_on_first_use
    sys.modules[name] = module


def _defer_heavy_imports() -> None:
    if "river.drift" in sys.modules:
        return  # imported already: too late to change anything
    for name, parts in DEFERRED:
        top = importlib.util.find_spec(name.partition(".")[0])  # finds, does not import
        if name in sys.modules or top is None or top.origin is None:
            continue
        init_file = Path(top.origin).parent.joinpath(*parts, "__init__.py")
        if init_file.is_file():
            defer(name, init_file)


if TYPE_CHECKING:
    from river import drift
    from river.drift import binary
else:
    _defer_heavy_imports()
    drift = importlib.import_module("river.drift")
    binary = importlib.import_module("river.drift.binary")
