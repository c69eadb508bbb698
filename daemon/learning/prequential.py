"""A sliding window of prequential (test-then-train) loss and accuracy."""

from __future__ import annotations

from collections import deque
from typing import Any


class PrequentialWindow:
    """Mean loss and accuracy over roughly the last ``size`` labelled events.

    Kept per mini-batch (count, summed loss, correct predictions), so an update costs O(1) and
    the window holds at most ``size`` batches.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._batches: deque[tuple[int, float, int]] = deque()
        self._count = 0
        self._loss_sum = 0.0
        self._correct = 0

    def clear(self) -> None:
        """Forget every event (e.g. after the model changed under the window)."""
        self._batches.clear()
        self._count, self._loss_sum, self._correct = 0, 0.0, 0

    def update(self, count: int, loss_sum: float, correct: int = 0) -> None:
        """Add one batch: ``count`` events, their summed loss and number correct."""
        if count <= 0:
            return
        self._batches.append((count, loss_sum, correct))
        self._count += count
        self._loss_sum += loss_sum
        self._correct += correct
        while len(self._batches) > 1 and self._count - self._batches[0][0] >= self.size:
            old_count, old_loss, old_correct = self._batches.popleft()
            self._count -= old_count
            self._loss_sum -= old_loss
            self._correct -= old_correct

    @property
    def count(self) -> int:
        """Events in the window."""
        return self._count

    @property
    def loss(self) -> float | None:
        """Mean loss in the window, or None when empty."""
        return self._loss_sum / self._count if self._count else None

    @property
    def accuracy(self) -> float | None:
        """Fraction of correct predictions in the window, or None when empty."""
        return self._correct / self._count if self._count else None

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {"size": self.size, "batches": [list(batch) for batch in self._batches]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.size = int(state["size"])
        self.clear()
        for count, loss_sum, correct in state["batches"]:
            self.update(int(count), float(loss_sum), int(correct))
