"""The re-adaptation policy: what the learner does when the stream's domain changes.

On a concept drift (the loss or error went *up*; a detected improvement is only reported):

1. the active domain's head and trunk are stored (its state before the drift);
2. the head's LR is boosted (its group's ``lr_scale``, decaying back to 1) and its optimizer
   moments reset; the trunk is frozen or slowed for a few steps, then resumes at a low LR that
   ramps back to 1 (``freeze_trunk`` keeps it frozen for good: feature transfer);
3. every stored head is scored, over the trunk it was stored with (the live trunk kept learning
   since), on the labelled events since the change began (where the live model's loss rose,
   within the window the detector kept: :func:`~driftd.adaptation.recurrence.change_point`). A head
   *fits* when its loss is at most ``fit_ratio`` x its reference + ``fit_margin`` (the
   reference: its loss on the replayed events just before the change, measured the same
   way). **Early reuse**: from ``early_min_events`` such events on, at every
   step, a fitting head whose per-event losses are *clearly* below those of the head the drift
   was detected with (a paired test, ``reuse_confidence`` standard errors) is a recurring domain
   and is switched in with its trunk at once (``reuse_head``). Otherwise, once ``score_events``
   labelled events arrived after the detection, the best fitting head below the live head's
   prequential loss on those events is reused; with none, the live head becomes a new domain
   (``new_head``, kept as adapted so far or re-initialised: ``new_head=fresh``). Then a few
   extra steps on the post-drift events of the replay buffer (``replay``).

A covariate drift (the inputs moved; no labels needed) acts as ``on_covariate_drift`` says:
``ignore`` (reported only), ``lr_boost`` (step 2 alone) or ``score_heads``: store the active
domain and look for a recurring domain as above, by the loss when ``score_events`` labelled events
arrive in time, else by the inputs alone (:func:`~driftd.adaptation.recurrence.input_choice`:
every stored domain keeps a fingerprint of its inputs). No fit: the live head goes on, as the
same domain if the inputs still look like it (``keep_head``), else as a new one (not
re-initialised: the inputs moved, the concept may not have). A concept drift during it still
boosts, and then decides as a concept drift. The head decisions live in
:class:`~driftd.adaptation.head_switch.HeadSwitch`; this class adds the monitor and the LR and
trunk schedules.

Events carrying a ``domain`` route to that domain's head (created on first sight); drift then
only boosts, the domain being known. Labels beyond the output layer grow it (``grow_classes``).
Everything is deterministic given the state, which :meth:`Adaptation.state_dict` saves whole.
"""

from __future__ import annotations

from typing import Any

import torch

from driftd.adaptation.config import AdaptationConfig
from driftd.adaptation.domain_store import DomainStore, head_of
from driftd.adaptation.drift import DriftDetected, DriftMonitor, Signal
from driftd.adaptation.growth import grow_outputs
from driftd.adaptation.head_switch import HeadSwitch
from driftd.adaptation.lr_ramps import head_scale, trunk_scale
from driftd.adaptation.outcomes import AdaptationKind, Adapted, StepOutcome
from driftd.adaptation.replay import ReplayBuffer
from driftd.adaptation.routing import split_by_domain
from driftd.adaptation.trunk_evidence import trunk_still_serves
from driftd.decode import DecodedBatch
from driftd.learning.learner import OnlineLearner, StepReport
from driftd.learning.tensor_state import TensorState

CONCEPT_SIGNALS = ("loss", "error")


class Adaptation:
    """Drift monitor, head switch (stored domains, replay) and LR schedules of one learner.

    Args:
        learner: The learner adapted (a split model with ``shared`` and ``head``).
        config: The adaptation settings it reads; ``enabled=False`` only monitors.
        monitor: The drift monitor, or None.
        generator: Random source of fresh heads, grown rows, replay draws (state saved).
        base_lr: The configured learning rate (``learner.lr``): at a drift the LR policy's rate
            is raised back to ``policy_lr_factor`` times it if it decayed below.

    Attributes:
        reset_signals: Signals whose drift detectors started afresh at the last
            :meth:`load_state_dict` (their configuration changed since the snapshot).
    """

    def __init__(
        self,
        *,
        learner: OnlineLearner,
        config: AdaptationConfig,
        monitor: DriftMonitor | None,
        generator: torch.Generator,
        base_lr: float,
    ) -> None:
        self.learner, self.config, self.monitor = learner, config, monitor
        self.base_lr = base_lr
        self.generator = generator
        self.switch = HeadSwitch(learner=learner, config=config, generator=generator)
        self.steps = 0
        self._drift_step: int | None = None
        self._boosting = False
        self._trunk_check_from: int | None = None  # replay arrival the trunk evidence starts at
        self._trunk_released = False
        self.reset_signals: list[Signal] = []
        self._apply_scales()

    @property
    def enabled(self) -> bool:
        """Whether the policy acts (otherwise drifts are only reported)."""
        return bool(self.config.enabled)

    @property
    def domain_store(self) -> DomainStore | None:
        """The known domains' stored trunks and heads (None: ``heads=false``)."""
        return self.switch.domain_store

    @property
    def replay(self) -> ReplayBuffer:
        """The replay buffer of recent labelled events."""
        return self.switch.replay

    @property
    def active(self) -> str:
        """The domain whose head is live."""
        return self.switch.active

    @property
    def domains(self) -> list[str]:
        """Known domains, least recently used first (the active one included)."""
        names = self.domain_store.names if self.domain_store is not None else []
        return names if self.active in names else [*names, self.active]

    def plan(
        self, batch: DecodedBatch
    ) -> tuple[list[tuple[str | None, DecodedBatch]], StepOutcome]:
        """Grow the classes for unseen labels, then split the batch by explicit domain."""
        outcome = StepOutcome()
        if self.enabled and self.config.grow_classes and bool(batch.labelled.any()):
            self._grow(int(batch.y[batch.labelled].max()) + 1, outcome)
        if not (self.enabled and self.domain_store is not None):
            return [(None, batch)], outcome
        return split_by_domain(batch), outcome

    def activate(self, domain: str | None) -> StepOutcome:
        """Put ``domain``'s head in the live model (None: keep the active one)."""
        outcome = StepOutcome()
        if domain is None or domain == self.active or self.domain_store is None or not self.enabled:
            return outcome
        self.switch.activate(domain, outcome)
        return outcome

    def observe(self, report: StepReport, batch: DecodedBatch) -> StepOutcome:
        """Feed the step to the monitor and replay buffer, then act on what it shows."""
        outcome = StepOutcome()
        switch, switching = self.switch, self.enabled and self.domain_store is not None
        arrivals = switch.replay.arrivals
        if switching:
            switch.record(report, batch)
        if self.monitor is not None:
            outcome.drifts = self.monitor.update(
                x=batch.x, y=batch.y, labelled=batch.labelled,
                event_losses=report.event_losses, predictions=report.predictions,
            )  # fmt: skip
        if not self.enabled:
            return outcome
        self.steps += 1
        for drift in outcome.drifts:
            if drift.kind == "drift" and drift.signal in CONCEPT_SIGNALS:
                self._on_concept_drift(drift, batch, arrivals, report, outcome)
            elif drift.kind == "drift":
                self._on_covariate_drift(drift, batch, arrivals, outcome)
        if switching and switch.after_step(batch, outcome):
            self._boosting = False  # a stored head fits: no need to learn fast
        self._check_trunk(outcome)
        self._apply_scales(outcome)
        return outcome

    def _check_trunk(self, outcome: StepOutcome) -> None:
        """After ``score_events`` post-drift events, release a held trunk that does not serve."""
        start = self._trunk_check_from
        if start is None or self.replay.arrivals - start < self.config.score_events:
            return
        self._trunk_check_from = None
        x, y = self.replay.since(start)
        learner = self.learner
        evidence = trunk_still_serves(
            learner.model, x.to(learner.device), y.to(learner.device),
            loss_fn=learner.event_losses, generator=self.generator,
        )  # fmt: skip
        self._trunk_released = not evidence.serves
        kind: AdaptationKind = "trunk_keep" if evidence.serves else "trunk_release"
        outcome.adaptations.append(Adapted(kind, self.active, evidence.describe()))

    def _on_concept_drift(
        self,
        drift: DriftDetected,
        batch: DecodedBatch,
        arrivals: int,
        report: StepReport,
        outcome: StepOutcome,
    ) -> None:
        pending = self.switch.pending
        if pending is not None and pending.trigger == "concept":
            return  # already adapting to this change
        self._boost(outcome, "")
        if self.domain_store is None or batch.domains[drift.row] is not None:
            return  # no stored domains, or the events name their domain
        labelled = batch.labelled
        position = drift.row if bool(labelled.all()) else int(labelled[: drift.row].sum())
        losses_after = report.event_losses[position:]
        self.switch.on_concept_drift(arrivals + position, drift.span, losses_after, outcome)

    def _on_covariate_drift(
        self, drift: DriftDetected, batch: DecodedBatch, arrivals: int, outcome: StepOutcome
    ) -> None:
        mode = self.config.on_covariate_drift
        if mode == "ignore" or self.switch.pending is not None or self._drift_step == self.steps:
            return  # off, already adapting, or already acted on this step
        why = f"on covariate drift ({drift.signal})"
        if mode == "lr_boost":
            self._boost(outcome, f" {why}")
        elif self.domain_store is not None and batch.domains[drift.row] is None:
            # the LR schedules stay as they are; events naming their domain route themselves
            self.switch.on_covariate_drift(self.replay.arrivals, arrivals, why, outcome)

    def _boost(self, outcome: StepOutcome, why: str) -> None:
        """Head LR boost and moment reset, LR policy restart, trunk hold."""
        config, learner = self.config, self.learner
        self._drift_step, self._boosting = self.steps, config.lr_boost > 1.0
        if config.reset_head_moments:
            for p in head_of(learner).parameters():
                learner.optimizer.state.pop(p, None)
        if self._boosting:
            reset = ", moments reset" if config.reset_head_moments else ""
            boost, steps = config.lr_boost, config.boost_steps
            detail = f"head LR x{boost:g} decaying over {steps} steps{reset}{why}"
            outcome.adaptations.append(Adapted("lr_boost", self.active, detail))
        target, rate = config.policy_lr_factor * self.base_lr, learner.lr_policy.lr
        if rate < target:  # the policy decayed while the old domain settled: restart it
            learner.lr_policy.rescale(target / rate)
            detail = f"LR policy {rate:.3g} -> {learner.lr_policy.lr:.3g}{why}"
            outcome.adaptations.append(Adapted("lr_restart", self.active, detail))
        if not config.freeze_trunk and config.trunk_hold_steps and config.trunk_scale < 1.0:
            detail = f"trunk LR x{config.trunk_scale:g} for {config.trunk_hold_steps} steps{why}"
            outcome.adaptations.append(Adapted("trunk_freeze", self.active, detail))
            self._trunk_released = False
            if config.trunk_evidence:
                self._trunk_check_from = self.replay.arrivals

    def _grow(self, n_classes: int, outcome: StepOutcome) -> None:
        model: Any = self.learner.model
        current = int(model.n_outputs)
        wanted = min(n_classes, self.config.max_classes)
        if wanted <= current:
            return
        for key, rows in grow_outputs(self.learner, wanted, self.generator).items():
            if self.domain_store is not None:
                self.domain_store.pad_rows(key, rows)
        outcome.adaptations.append(Adapted("grow_classes", self.active, f"{current} -> {wanted}"))

    def _apply_scales(self, outcome: StepOutcome | None = None) -> None:
        """Set the head and trunk LR multipliers for the current step of the schedules."""
        config, learner = self.config, self.learner
        head, trunk = 1.0, 0.0 if config.freeze_trunk and self.enabled else 1.0
        if self._drift_step is not None and self.enabled:
            since = self.steps - self._drift_step
            if self._boosting:
                head = head_scale(since, boost=config.lr_boost, boost_steps=config.boost_steps)
            held = not (config.freeze_trunk or self._trunk_released)
            if held and config.trunk_hold_steps and config.trunk_scale < 1.0:
                trunk = trunk_scale(
                    since, hold_scale=config.trunk_scale, hold_steps=config.trunk_hold_steps,
                    resume_scale=config.trunk_resume_scale, ramp_steps=config.trunk_ramp_steps,
                )  # fmt: skip
                if since == config.trunk_hold_steps and outcome is not None:
                    detail = f"trunk LR x{trunk:g}, back to x1 in {config.trunk_ramp_steps} steps"
                    outcome.adaptations.append(Adapted("trunk_unfreeze", self.active, detail))
            if head == 1.0 and trunk == 1.0 and self.switch.pending is None:
                self._drift_step, self._boosting = None, False
                self._trunk_check_from, self._trunk_released = None, False
        for name, scale in (("head", head), ("shared", trunk)):
            group = learner.param_group(name)
            if group is not None:
                group["lr_scale"] = scale
        model: Any = learner.model
        for p in model.shared.parameters():
            p.requires_grad_(trunk > 0.0)
        learner.refresh_lr()

    def state_dict(self) -> TensorState:
        """Tensors (generator, replay rows, stored trunks and heads, fingerprints) and JSON meta."""
        tensors, meta = self.switch.state_dict()
        tensors = {"generator": self.generator.get_state(), **tensors}
        meta |= {
            "steps": self.steps, "drift_step": self._drift_step, "boosting": self._boosting,
            "trunk_check_from": self._trunk_check_from, "trunk_released": self._trunk_released,
            "monitor": None if self.monitor is None else self.monitor.state_dict(),
        }  # fmt: skip
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (see :attr:`reset_signals`)."""
        self.generator.set_state(tensors["generator"])
        self.switch.load_state_dict(tensors, meta)
        self.steps, self._drift_step = int(meta["steps"]), meta["drift_step"]
        self._boosting = bool(meta["boosting"])
        self._trunk_check_from = meta.get("trunk_check_from")
        self._trunk_released = bool(meta.get("trunk_released", False))
        self.reset_signals = []
        if self.monitor is not None and meta.get("monitor") is not None:
            self.monitor.load_state_dict(meta["monitor"])
            self.reset_signals = list(self.monitor.reset_signals)
        self._apply_scales()
