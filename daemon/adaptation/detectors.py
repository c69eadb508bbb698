"""River drift detectors: built by name, and their state saved as JSON, never pickled.

:func:`detector_state` walks a detector's attributes and writes plain JSON: numbers (non-finite
floats marked), deques, ``random.Random`` states, river ``stats`` objects and other plain objects
attribute by attribute. The Rust-backed parts of river (ADWIN's window, ``EWMean``) expose their
own serde encoding through ``__getstate__``: those bytes (bincode of plain numbers, not a pickle
stream) are stored base64-encoded. :func:`load_detector_state` writes the values back into a
freshly built detector of the same configuration, so it continues bit-identically.
"""

from __future__ import annotations

import base64
import collections
import math
import random
from typing import Any

from river import stats

from driftd.adaptation.river_drift import binary, drift


class _Mean(stats.Mean):
    """river's running mean, cloned by copying its two numbers.

    river's generic ``clone`` inspects the constructor's signature each time; HDDM_A clones its
    means at most updates, which took a third of a 32-event step's time.
    """

    def clone(
        self, new_params: dict[str, Any] | None = None, include_attributes: bool = False
    ) -> Any:
        """A new mean: empty, or (``include_attributes``) with this one's count and value."""
        if new_params:
            return super().clone(new_params, include_attributes)
        twin = _Mean()
        if include_attributes:
            twin.n, twin._mean = self.n, self._mean
        return twin


class HDDMA(binary.HDDMA):
    """river's HDDM_A, detecting exactly as river's does, at a fraction of its cost per value.

    :meth:`update` is river's, with the running means' updates, clones and Hoeffding bounds
    written out: the same float operations in the same order, on the same attributes (so a
    saved state loads either way), without a method call or a new object per step.
    """

    def _reset(self) -> None:
        super()._reset()  # type: ignore[no-untyped-call]
        self._x_min, self._x_max, self._z = _Mean(), _Mean(), _Mean()

    def update(self, x: float) -> None:
        """Feed one value (1 = an error), as river's ``HDDM_A.update``."""
        if self._drift_detected:
            self._reset()
        z, low, high = self._z, self._x_min, self._x_max
        z.n += 1.0
        z._mean += (1.0 / z.n) * (x - z._mean)
        if low.n == 0:
            low.n, low._mean = z.n, z._mean
        if high.n == 0:
            high.n, high._mean = z.n, z._mean
        log_drift = math.log(1.0 / self.drift_confidence)
        eps_z = math.sqrt(1.0 / (2 * z.n) * log_drift)
        if low._mean + math.sqrt(1.0 / (2 * low.n) * log_drift) >= z._mean + eps_z:
            low.n, low._mean = z.n, z._mean
        if high._mean - math.sqrt(1.0 / (2 * high.n) * log_drift) <= z._mean - eps_z:
            high.n, high._mean = z.n, z._mean
        drift_log = math.log(2.0 / self.drift_confidence)
        warning_log = math.log(2.0 / self.warning_confidence)
        self._drift_detected = self._warning_detected = False
        if low.n != z.n:  # river's _mean_incr: has the mean risen since the cut?
            m = (z.n - low.n) / low.n * (1.0 / z.n)
            rise = z._mean - low._mean
            self._drift_detected = rise >= math.sqrt(m / 2 * drift_log)
            self._warning_detected = not self._drift_detected and rise >= math.sqrt(
                m / 2 * warning_log
            )
        if self.two_sided_test and high.n != z.n:  # _mean_decr: has it fallen?
            m = (z.n - high.n) / high.n * (1.0 / z.n)
            fall = high._mean - z._mean
            if fall >= math.sqrt(m / 2 * drift_log):
                self._drift_detected = True
            elif fall >= math.sqrt(m / 2 * warning_log):
                self._warning_detected = True


#: Detector name -> (river class, whether it watches a 0/1 error and raises warnings).
DETECTORS: dict[str, tuple[type[Any], bool]] = {
    "adwin": (drift.ADWIN, False),
    "page_hinkley": (drift.PageHinkley, False),
    "kswin": (drift.KSWIN, False),
    "ddm": (binary.DDM, True),
    "eddm": (binary.EDDM, True),
    "hddm_a": (HDDMA, True),
    "hddm_w": (binary.HDDMW, True),
}

Params = dict[str, float | int | bool | str]


def is_binary(name: str) -> bool:
    """Whether detector ``name`` watches a 0/1 error stream (and can raise warnings)."""
    return DETECTORS[name][1]


def make_detector(name: str, params: Params) -> Any:
    """A fresh river detector.

    Args:
        name: A key of :data:`DETECTORS`.
        params: Keyword arguments of the river class (e.g. ``{"delta": 0.01}`` for ADWIN).

    Raises:
        ValueError: Unknown name or parameters river refuses.
    """
    if name not in DETECTORS:
        raise ValueError(f"unknown drift detector {name!r}: expected one of {sorted(DETECTORS)}")
    try:
        return DETECTORS[name][0](**params)
    except (TypeError, ValueError) as error:
        raise ValueError(f"drift detector {name!r} refuses {params!r}: {error}") from None


def detector_state(detector: Any) -> dict[str, Any]:
    """The detector's attributes as JSON-ready data (see the module docstring)."""
    return {key: _encode(value) for key, value in vars(detector).items() if not callable(value)}


def load_detector_state(detector: Any, state: dict[str, Any]) -> None:
    """Write :func:`detector_state` output back into ``detector`` (built with the same config).

    Raises:
        ValueError: The state does not fit the detector's structure.
    """
    _load_into(detector, state)


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, collections.deque):
        return {"__deque__": [_encode(item) for item in value], "maxlen": value.maxlen}
    if isinstance(value, random.Random):
        version, internal, gauss = value.getstate()
        return {"__random__": [version, list(internal), gauss]}
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    if type(value).__module__.startswith("river._river_rust"):
        raw: bytes = value.__getstate__()
        return {"__rust__": base64.b64encode(raw).decode("ascii")}
    if hasattr(value, "__dict__"):
        return {"__object__": detector_state(value)}
    raise TypeError(f"cannot save a {type(value).__name__} of a drift detector without pickle")


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "__float__" in value:
        return float(value["__float__"])
    if isinstance(value, dict) and "__deque__" in value:
        return collections.deque((_decode(v) for v in value["__deque__"]), value["maxlen"])
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def _load_into(target: Any, state: dict[str, Any]) -> None:
    for key, value in state.items():
        current = getattr(target, key, None)
        if isinstance(value, dict) and "__object__" in value:
            if current is None or not hasattr(current, "__dict__"):
                raise ValueError(f"detector state: {key!r} is not an object here")
            _load_into(current, value["__object__"])
        elif isinstance(value, dict) and "__rust__" in value:
            if current is None or not hasattr(current, "__setstate__"):
                raise ValueError(f"detector state: {key!r} is not a river Rust object here")
            current.__setstate__(base64.b64decode(value["__rust__"]))
        elif isinstance(value, dict) and "__random__" in value:
            version, internal, gauss = value["__random__"]
            generator = random.Random()  # noqa: S311 - river's detector RNG, restored as saved
            generator.setstate((version, tuple(internal), gauss))
            setattr(target, key, generator)
        else:
            setattr(target, key, _decode(value))
