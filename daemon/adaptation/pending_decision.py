"""The head decision pending after a drift: where it is anchored and the live head's evidence.

:class:`~driftd.adaptation.head_switch.HeadSwitch` holds one while it scores the stored heads
against the live one; it is saved in snapshots, so a resumed daemon decides as it would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

Trigger = Literal["concept", "covariate"]
"""The kind of drift that started the decision: the loss rose, or only the inputs moved."""


@dataclass(slots=True)
class PendingDecision:
    """A head decision under way.

    Attributes:
        marker: Replay arrival number of the detection (the full window counts from it).
        start: Arrival number where the change most likely began (heads are scored from it).
        from_domain: The domain active at the drift, stored before the decision: the baseline.
        trigger: What started it; a concept drift re-anchors one a covariate drift started.
        loss_sum: Sum of the live head's finite prequential losses since the detection.
        count: Losses in ``loss_sum``.
        events: Events, labelled or not, since the decision started (the inputs' window).
    """

    marker: int
    start: int
    from_domain: str
    trigger: Trigger
    loss_sum: float = 0.0
    count: int = 0
    events: int = 0

    @property
    def live_loss(self) -> float:
        """The live head's mean prequential loss since the detection (0 before any)."""
        return self.loss_sum / max(1, self.count)

    def add_losses(self, losses: torch.Tensor) -> None:
        """Add ``losses`` to the live head's level, non-finite ones left out (it stays a number)."""
        finite = losses.detach()
        finite = finite[torch.isfinite(finite)]
        self.loss_sum += float(finite.sum(dtype=torch.float64))
        self.count += len(finite)

    def anchor_concept(self, marker: int, start: int, losses_after: torch.Tensor) -> None:
        """Anchor at a concept drift detected at ``marker``; the live level restarts from its batch.

        ``losses_after``: prequential losses of the drift batch's events from the detection on.
        """
        self.marker, self.start, self.trigger = marker, start, "concept"
        self.loss_sum, self.count = 0.0, 0
        self.add_losses(losses_after)

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready fields, under the keys snapshots have always used."""
        return {
            "marker": self.marker, "start": self.start, "from": self.from_domain,
            "loss_sum": self.loss_sum, "count": self.count, "trigger": self.trigger,
            "events": self.events,
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PendingDecision:
        """Rebuild :meth:`state_dict` output (also one saved before early reuse and covariates).

        Raises:
            ValueError: The trigger is unknown.
        """
        trigger = state.get("trigger", "concept")
        if trigger not in get_args(Trigger):
            raise ValueError(f"unknown head decision trigger {trigger!r}")
        return cls(
            marker=int(state["marker"]),
            start=int(state.get("start", state["marker"])),
            from_domain=str(state["from"]),
            trigger=trigger,
            loss_sum=float(state["loss_sum"]),
            count=int(state["count"]),
            events=int(state.get("events", 0)),
        )
