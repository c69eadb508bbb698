"""river's drift detectors, without importing river's example data sets on the way.

``river.drift`` imports its ``datasets`` (example streams), which import ``river.stream``, which
imports scikit-learn whenever it is installed: about 65 MiB of resident memory and a second of
every process start, for data no detector uses. Importing from here first registers that one
module as deferred: its code runs, unchanged, on the first access to one of its attributes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

__all__ = ["binary", "drift"]

_EXAMPLES = "river.drift.datasets"


def _defer(name: str, init_file: Path) -> None:
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


def _import_drift() -> tuple[ModuleType, ModuleType]:
    if "river.drift" not in sys.modules and _EXAMPLES not in sys.modules:
        river = importlib.util.find_spec("river")
        if river is not None and river.origin is not None:
            _defer(_EXAMPLES, Path(river.origin).parent / "drift" / "datasets" / "__init__.py")
    return importlib.import_module("river.drift"), importlib.import_module("river.drift.binary")


if TYPE_CHECKING:
    from river import drift
    from river.drift import binary
else:
    drift, binary = _import_drift()
