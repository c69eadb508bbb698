"""The re-adaptation policy: what the learner does when the stream's domain changes.

On a concept drift (the loss or error went *up*; a detected improvement is only reported):

1. the active head is stored in the registry (its domain's state before the drift);
2. the head's LR is boosted (its group's ``lr_scale``, decaying back to 1) and its optimizer
   moments reset; the trunk is frozen or slowed for a few steps, then resumes at a low LR that
   ramps back to 1 (``freeze_trunk`` keeps it frozen for good: feature transfer);
3. once ``score_events`` labelled events arrived after the drift, every stored head is scored on
   them over the trunk it was stored with (the live trunk kept learning since). A head *fits*
   when its loss is at most ``fit_ratio`` x its reference + ``fit_margin`` (the reference: its
   loss on the replayed events just before the drift that stored it, measured the same way;
   the events of the drift's own batch after the drift count as post-drift) and below the live
   head's prequential loss on those events. The best fitting head is a recurring domain and is
   switched in with its trunk (``reuse_head``); with none, the live head becomes a new domain
   (``new_head``, kept as adapted so far or re-initialised: ``new_head=fresh``). Then a few
   extra steps on the post-drift events of the replay buffer (``replay``).

Events carrying a ``domain`` route to that domain's head (created on first sight); drift then
only boosts, the domain being known. Labels beyond the output layer grow it (``grow_classes``).
Everything is deterministic given the state, which :meth:`Adaptation.state_dict` saves whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from driftd.decode import DecodedBatch
from driftd.drift import DriftMonitor, make_monitor
from driftd.growth import grow_outputs
from driftd.heads import HeadRegistry, head_of
from driftd.learner import OnlineLearner, StepReport
from driftd.outcomes import Adapted, StepOutcome
from driftd.replay import ReplayBuffer
from driftd.routing import head_scale, split_by_domain, trunk_scale

if TYPE_CHECKING:
    from driftd.settings import AdaptationSettings, Settings

CONCEPT_SIGNALS = ("loss", "error")


class Adaptation:
    """Drift monitor, head registry, replay buffer and the policy tying them to one learner.

    Args:
        learner: The learner adapted (a split model with ``shared`` and ``head``).
        settings: The policy's settings; ``enabled=False`` only monitors.
        monitor: The drift monitor, or None.
        generator: Random source of fresh heads, grown rows, replay draws (state saved).
        base_lr: The configured learning rate (``learner.lr``): at a drift the LR policy's rate
            is raised back to ``policy_lr_factor`` times it if it decayed below.
    """

    def __init__(
        self,
        *,
        learner: OnlineLearner,
        settings: AdaptationSettings,
        monitor: DriftMonitor | None,
        generator: torch.Generator,
        base_lr: float,
    ) -> None:
        self.learner, self.settings, self.monitor = learner, settings, monitor
        self.base_lr = base_lr
        self.generator = generator
        self.heads = HeadRegistry(settings.max_heads) if settings.heads else None
        self.replay = ReplayBuffer(settings.replay_size, mode=settings.replay, generator=generator)
        self.active = "d0"
        self._next_domain = 1
        self.steps = 0
        self._drift_step: int | None = None
        self._boosting = False
        self._pending: dict[str, Any] | None = None  # marker, from, loss_sum, count
        self._apply_scales()

    @property
    def enabled(self) -> bool:
        """Whether the policy acts (otherwise drifts are only reported)."""
        return bool(self.settings.enabled)

    @property
    def domains(self) -> list[str]:
        """Known domains, least recently used first (the active one included)."""
        names = self.heads.names if self.heads is not None else []
        return names if self.active in names else [*names, self.active]

    def plan(
        self, batch: DecodedBatch
    ) -> tuple[list[tuple[str | None, DecodedBatch]], StepOutcome]:
        """Grow the classes for unseen labels, then split the batch by explicit domain."""
        outcome = StepOutcome()
        if self.enabled and self.settings.grow_classes and bool(batch.labelled.any()):
            self._grow(int(batch.y[batch.labelled].max()) + 1, outcome)
        if not (self.enabled and self.heads is not None):
            return [(None, batch)], outcome
        return split_by_domain(batch), outcome

    def activate(self, domain: str | None) -> StepOutcome:
        """Put ``domain``'s head in the live model (None: keep the active one)."""
        outcome = StepOutcome()
        if domain is None or domain == self.active or self.heads is None or not self.enabled:
            return outcome
        self._pending = None  # an explicit domain settles any head decision
        self._store(self.active, None, outcome)
        if domain in self.heads:
            self.heads.load(domain, self.learner)
        else:
            self._new_head(domain, outcome, "first event of an explicit domain")
        self.active = domain
        return outcome

    def observe(self, report: StepReport, batch: DecodedBatch) -> StepOutcome:
        """Feed the step to the monitor and replay buffer, then act on what it shows."""
        outcome = StepOutcome()
        labelled = batch.labelled
        arrivals = self.replay.arrivals
        if self.enabled and self.heads is not None and len(report.event_losses):
            all_labelled = bool(labelled.all())
            x = batch.x if all_labelled else batch.x[labelled]
            self.replay.extend(x, batch.y if all_labelled else batch.y[labelled])
            if self._pending is not None:
                self._pending["loss_sum"] += float(report.event_losses.sum())
                self._pending["count"] += len(report.event_losses)
        if self.monitor is not None:
            outcome.drifts = self.monitor.update(
                x=batch.x, y=batch.y, labelled=labelled,
                event_losses=report.event_losses, predictions=report.predictions,
            )  # fmt: skip
        if not self.enabled:
            return outcome
        self.steps += 1
        for drift in outcome.drifts:
            if drift.kind == "drift" and drift.signal in CONCEPT_SIGNALS:
                position = drift.row if bool(labelled.all()) else int(labelled[: drift.row].sum())
                explicit = batch.domains[drift.row] is not None
                self._on_drift(arrivals + position, explicit, outcome)
                if self._pending is not None and self._pending["marker"] == arrivals + position:
                    # the drift batch's own post-drift events: scored by _decide, so counted
                    # in the live head's prequential loss too (a large batch may decide now)
                    after = report.event_losses[position:]
                    self._pending["loss_sum"] += float(after.sum())
                    self._pending["count"] += len(after)
        pending = self._pending
        if (
            pending is not None
            and self.replay.arrivals - pending["marker"] >= self.settings.score_events
        ):
            self._decide(outcome)
        self._apply_scales(outcome)
        return outcome

    def _on_drift(self, marker: int, explicit: bool, outcome: StepOutcome) -> None:
        if self._pending is not None:
            return  # already adapting to this change
        s, learner = self.settings, self.learner
        self._drift_step, self._boosting = self.steps, s.lr_boost > 1.0
        if s.reset_head_moments:
            for p in head_of(learner).parameters():
                learner.optimizer.state.pop(p, None)
        if self._boosting:
            reset = ", moments reset" if s.reset_head_moments else ""
            detail = f"head LR x{s.lr_boost:g} decaying over {s.boost_steps} steps{reset}"
            outcome.adaptations.append(Adapted("lr_boost", self.active, detail))
        target, rate = s.policy_lr_factor * self.base_lr, learner.lr_policy.lr
        if rate < target:  # the policy decayed while the old domain settled: restart it
            learner.lr_policy.rescale(target / rate)
            detail = f"LR policy {rate:.3g} -> {learner.lr_policy.lr:.3g}"
            outcome.adaptations.append(Adapted("lr_restart", self.active, detail))
        if not s.freeze_trunk and s.trunk_hold_steps and s.trunk_scale < 1.0:
            detail = f"trunk LR x{s.trunk_scale:g} for {s.trunk_hold_steps} steps"
            outcome.adaptations.append(Adapted("trunk_freeze", self.active, detail))
        heads = self.heads
        if heads is None or explicit:
            return
        x, y = self.replay.since(max(0, marker - self.settings.score_events * 4), marker)
        reference = heads.score_live(learner, x, y) if len(x) else learner.window.loss
        self._store(self.active, reference, outcome)
        if s.replay == "reservoir":
            self.replay.clear()
        self._pending = {"marker": marker, "from": self.active, "loss_sum": 0.0, "count": 0}

    def _decide(self, outcome: StepOutcome) -> None:
        pending, heads, learner = self._pending, self.heads, self.learner
        assert pending is not None
        assert heads is not None
        self._pending = None
        x, y = self.replay.since(pending["marker"])
        live = pending["loss_sum"] / max(1, pending["count"])
        scores = heads.scores(learner, x, y) if len(x) else {}
        fitting = [name for name, score in scores.items() if self._fits(name, score, live)]
        best = min(fitting, key=scores.__getitem__) if fitting else None
        shown = ", ".join(f"{name} {score:.3f}" for name, score in scores.items())
        detail = f"on {len(x)} events: live {live:.3f}, stored {shown}"
        if best is not None:
            heads.load(best, learner, trunk=True)
            self.active, self._boosting = best, False
            outcome.adaptations.append(Adapted("reuse_head", best, detail))
        else:
            name = f"d{self._next_domain}"
            self._next_domain += 1
            self._new_head(name, outcome, detail)
            self.active = name
        self._replay_steps(x, y, outcome)

    def _fits(self, name: str, score: float, live: float) -> bool:
        assert self.heads is not None
        reference = self.heads.entry(name).reference_loss
        if reference is None or not score < live:
            return False
        return score <= self.settings.fit_ratio * reference + self.settings.fit_margin

    def _new_head(self, name: str, outcome: StepOutcome, why: str) -> None:
        learner = self.learner
        assert self.heads is not None
        if self.settings.new_head == "fresh":
            head = head_of(learner)
            model: Any = learner.model
            head.load_state_dict(model.new_head(self.generator).state_dict())
            for p in head.parameters():
                learner.optimizer.state.pop(p, None)
        self._store(name, None, outcome)
        outcome.adaptations.append(Adapted("new_head", name, f"{self.settings.new_head}: {why}"))

    def _replay_steps(self, x: torch.Tensor, y: torch.Tensor, outcome: StepOutcome) -> None:
        steps, size = self.settings.replay_steps, self.settings.replay_batch_size
        if not steps or not len(x):
            return
        for _ in range(steps):
            rows = torch.randint(0, len(x), (min(size, len(x)),), generator=self.generator)
            self.learner.fit_many(x[rows], y[rows])
        detail = f"{steps} steps on {len(x)} post-drift events"
        outcome.adaptations.append(Adapted("replay", self.active, detail))

    def _grow(self, n_classes: int, outcome: StepOutcome) -> None:
        model: Any = self.learner.model
        current = int(model.n_outputs)
        wanted = min(n_classes, self.settings.max_classes)
        if wanted <= current:
            return
        for key, rows in grow_outputs(self.learner, wanted, self.generator).items():
            if self.heads is not None:
                self.heads.pad_rows(key, rows)
        outcome.adaptations.append(Adapted("grow_classes", self.active, f"{current} -> {wanted}"))

    def _apply_scales(self, outcome: StepOutcome | None = None) -> None:
        """Set the head and trunk LR multipliers for the current step of the schedules."""
        s, learner = self.settings, self.learner
        head, trunk = 1.0, 0.0 if s.freeze_trunk and self.enabled else 1.0
        if self._drift_step is not None and self.enabled:
            since = self.steps - self._drift_step
            if self._boosting:
                head = head_scale(since, boost=s.lr_boost, boost_steps=s.boost_steps)
            if not s.freeze_trunk and s.trunk_hold_steps and s.trunk_scale < 1.0:
                trunk = trunk_scale(
                    since, hold_scale=s.trunk_scale, hold_steps=s.trunk_hold_steps,
                    resume_scale=s.trunk_resume_scale, ramp_steps=s.trunk_ramp_steps,
                )  # fmt: skip
                if since == s.trunk_hold_steps and outcome is not None:
                    detail = f"trunk LR x{trunk:g}, back to x1 in {s.trunk_ramp_steps} steps"
                    outcome.adaptations.append(Adapted("trunk_unfreeze", self.active, detail))
            if head == 1.0 and trunk == 1.0 and self._pending is None:
                self._drift_step, self._boosting = None, False
        for name, scale in (("head", head), ("shared", trunk)):
            group = learner.param_group(name)
            if group is not None:
                group["lr_scale"] = scale
        model: Any = learner.model
        for p in model.shared.parameters():
            p.requires_grad_(trunk > 0.0)
        learner.refresh_lr()

    def _store(self, name: str, reference_loss: float | None, outcome: StepOutcome) -> None:
        assert self.heads is not None
        for evicted in self.heads.store(name, self.learner, reference_loss=reference_loss):
            outcome.adaptations.append(Adapted("evict_head", evicted, "least recently used"))

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (generator, replay rows, stored heads) and JSON-ready policy state."""
        replay_tensors, replay_meta = self.replay.state_dict()
        tensors = {"generator": self.generator.get_state()}
        tensors |= {f"replay.{k}": v for k, v in replay_tensors.items()}
        heads_meta: list[dict[str, Any]] = []
        if self.heads is not None:
            head_tensors, heads_meta = self.heads.state_dict()
            tensors |= {f"heads.{k}": v for k, v in head_tensors.items()}
        meta = {
            "active": self.active, "next_domain": self._next_domain, "steps": self.steps,
            "drift_step": self._drift_step, "boosting": self._boosting,
            "pending": self._pending, "replay": replay_meta, "heads": heads_meta,
            "monitor": None if self.monitor is None else self.monitor.state_dict(),
        }  # fmt: skip
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> list[str]:
        """Restore :meth:`state_dict` output; returns signals whose detectors started afresh."""
        self.generator.set_state(tensors["generator"])
        part = {k[7:]: v for k, v in tensors.items() if k.startswith("replay.")}
        self.replay.load_state_dict(part, meta["replay"])
        if self.heads is not None:
            part = {k[6:]: v for k, v in tensors.items() if k.startswith("heads.")}
            self.heads.load_state_dict(part, meta["heads"])
        self.active, self._next_domain = str(meta["active"]), int(meta["next_domain"])
        self.steps, self._drift_step = int(meta["steps"]), meta["drift_step"]
        self._boosting, self._pending = bool(meta["boosting"]), meta["pending"]
        fresh: list[str] = []
        if self.monitor is not None and meta.get("monitor") is not None:
            fresh = self.monitor.load_state_dict(meta["monitor"])
        self._apply_scales()
        return fresh


def make_adaptation(settings: Settings, learner: OnlineLearner) -> Adaptation | None:
    """The monitor and policy ``settings`` describe for ``learner`` (None: both disabled).

    Its generator is seeded from ``model.seed`` (offset by one, apart from the model's own).

    Raises:
        ValueError: The drift settings do not fit the task.
    """
    monitor = make_monitor(settings.drift, task=settings.model.task)
    if monitor is None and not settings.adaptation.enabled:
        return None
    generator = torch.Generator().manual_seed(settings.model.seed + 1)
    return Adaptation(
        learner=learner, settings=settings.adaptation, monitor=monitor, generator=generator,
        base_lr=settings.learner.lr,
    )  # fmt: skip
