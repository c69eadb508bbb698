"""A bounded buffer of recent labelled events, for scoring heads and extra adaptation steps.

``sliding`` keeps the newest ``capacity`` events. ``reservoir`` keeps a uniform sample (Vitter's
algorithm R, drawn from an injected ``torch.Generator``) of the events since the last
:meth:`ReplayBuffer.clear` - the adaptation clears it at each drift, so it samples the current
domain. Every event gets an arrival number, so "the events since the drift" can be asked for in
either mode, and may come with its prequential loss (the loss of the model that predicted it,
before it learnt it). Memory is fixed: ``capacity`` rows, allocated on the first event.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from driftd.learning.tensor_state import TensorState

Mode = Literal["sliding", "reservoir"]


class ReplayBuffer:
    """At most ``capacity`` labelled events ``(x, y)`` with their arrival numbers and losses.

    Args:
        capacity: Events kept at most.
        mode: ``sliding`` or ``reservoir``.
        generator: Random source of the reservoir (its state is saved by the owner).
    """

    def __init__(self, capacity: int, *, mode: Mode, generator: torch.Generator) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if mode not in ("sliding", "reservoir"):
            raise ValueError(f"mode must be sliding or reservoir, got {mode!r}")
        self.capacity, self.mode, self._generator = capacity, mode, generator
        self.arrivals = 0  # events offered, ever
        self._seen = 0  # events offered since the last clear (reservoir)
        self._write = 0  # next slot (sliding)
        self._size = 0
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self._arrival = torch.zeros(capacity, dtype=torch.int64)
        self._loss = torch.full((capacity,), math.nan)

    def __len__(self) -> int:
        return self._size

    def extend(self, x: torch.Tensor, y: torch.Tensor, losses: torch.Tensor | None = None) -> None:
        """Offer labelled events (rows of ``x`` and ``y``), oldest first.

        ``losses``: each event's prequential loss (unknown: NaN). Rows holding a NaN or infinity
        are left out (they would poison every replayed step and head score); they get no
        arrival number.
        """
        finite = _finite_rows(x) & _finite_rows(y)
        if not bool(finite.all()):
            x, y = x[finite], y[finite]
            losses = None if losses is None else losses[finite]
        n = len(x)
        if n == 0:
            return
        if self._x is None or self._y is None:
            self._x = torch.zeros((self.capacity, *x.shape[1:]), dtype=x.dtype)
            self._y = torch.zeros((self.capacity, *y.shape[1:]), dtype=y.dtype)
        arrival = torch.arange(self.arrivals, self.arrivals + n)
        slots, rows = self._slots(n)
        if len(slots):
            self._x[slots] = x[rows].to("cpu")
            self._y[slots] = y[rows].to("cpu")
            self._arrival[slots] = arrival[rows]
            self._loss[slots] = math.nan if losses is None else losses[rows].detach().to("cpu")
        self.arrivals += n
        self._seen += n
        self._size = min(self.capacity, self._seen)
        self._write = (self._write + n) % self.capacity

    def _slots(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Where rows go (each slot written once: the last writer wins)."""
        if self.mode == "sliding":
            rows = torch.arange(max(0, n - self.capacity), n)
            return (self._write + rows) % self.capacity, rows
        seen = torch.arange(self._seen, self._seen + n, dtype=torch.float64)
        draws = torch.rand(n, generator=self._generator, dtype=torch.float64)
        slots = torch.where(seen < self.capacity, seen, torch.floor(draws * (seen + 1)))
        keep = np.flatnonzero((slots < self.capacity).numpy())
        slot_list = slots.numpy()[keep].astype(np.int64)
        # Keep the last row written to each slot, as a one-by-one reservoir would.
        _, last = np.unique(slot_list[::-1], return_index=True)
        chosen = np.sort(keep[::-1][last])
        return torch.from_numpy(slots.numpy()[chosen].astype(np.int64)), torch.from_numpy(chosen)

    def since(self, arrival: int, before: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept events with ``arrival <= number < before``, in arrival order."""
        if self._x is None or self._y is None:
            return torch.zeros(0), torch.zeros(0, dtype=torch.int64)
        order = self._rows(arrival, before)
        return self._x[order], self._y[order]

    def losses_since(self, arrival: int, before: int | None = None) -> torch.Tensor:
        """The prequential losses of :meth:`since`'s events (NaN where none was given)."""
        return self._loss[self._rows(arrival, before)]

    def _rows(self, arrival: int, before: int | None) -> torch.Tensor:
        numbers = self._arrival[: self._size]
        order = numbers.argsort()
        chosen = numbers[order]
        keep = chosen >= arrival if before is None else (chosen >= arrival) & (chosen < before)
        return order[keep]

    def clear(self) -> None:
        """Forget the events (arrival numbering goes on)."""
        self._size, self._seen, self._write = 0, 0, 0

    def state_dict(self) -> TensorState:
        """Tensors (the kept rows) and JSON-ready counters."""
        meta = {"mode": self.mode, "capacity": self.capacity, "size": self._size,
                "arrivals": self.arrivals, "seen": self._seen, "write": self._write}  # fmt: skip
        if self._x is None or self._y is None:
            return {}, meta
        size = self._size
        tensors = {"x": self._x[:size].clone(), "y": self._y[:size].clone(),
                   "arrival": self._arrival[:size].clone(),
                   "loss": self._loss[:size].clone()}  # fmt: skip
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        A buffer saved with another mode or capacity starts empty (arrival numbering goes on).
        """
        self.arrivals = int(meta["arrivals"])
        self._x = self._y = None
        self._size = self._seen = self._write = 0
        if "x" not in tensors or (meta["mode"], meta["capacity"]) != (self.mode, self.capacity):
            return
        size = int(meta["size"])
        self._seen, self._write = int(meta["seen"]), int(meta["write"])
        x, y = tensors["x"], tensors["y"]
        self._x = torch.zeros((self.capacity, *x.shape[1:]), dtype=x.dtype)
        self._y = torch.zeros((self.capacity, *y.shape[1:]), dtype=y.dtype)
        self._x[:size], self._y[:size] = x[:size], y[:size]
        self._arrival[:size] = tensors["arrival"][:size]
        self._loss.fill_(math.nan)  # a snapshot from before the losses were kept: unknown
        if "loss" in tensors:
            self._loss[:size] = tensors["loss"][:size]
        self._size = size


def _finite_rows(values: torch.Tensor) -> torch.Tensor:
    """Whether each row of ``values`` is all finite (always, for integer labels)."""
    if not values.is_floating_point():
        return torch.ones(len(values), dtype=torch.bool, device=values.device)
    return torch.isfinite(values.reshape(len(values), -1)).all(dim=1)
