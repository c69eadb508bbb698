"""Which head serves the stream after a drift: store it, score the others, reuse one or start one.

:class:`HeadSwitch` owns the store of known domains (each one's trunk and head), the replay
buffer and the decision pending after a drift (see :mod:`driftd.adaptation.policy` for the
policy as a whole). A decision comes, in this order of precedence, from:

1. the full window: ``score_events`` labelled events after the detection; the best stored head
   that fits its domain's reference and beats the live head's prequential loss is reused, else
   the live head becomes a new domain (re-initialised per ``new_head`` after a concept drift;
   kept as is after a covariate drift, whose concept may not have changed);
2. after a covariate drift with too few labels, ``score_events`` events of any kind: the stored
   domain whose input fingerprint is nearest the new inputs, if within ``input_fit_distance``;
   inputs still like the active domain's keep it (``keep_head``); else a new domain (cloned);
3. early, at every step before that (``early_reuse``): a stored head whose per-event losses are
   clearly below those of the head in use at the drift (paired test on the events since the
   estimated change), or, after a covariate drift, whose fingerprint fits while the active
   domain's clearly does not.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from driftd.adaptation.config import AdaptationConfig
from driftd.adaptation.domain_store import DomainStore, StoredDomain, capture, fits_live, head_of
from driftd.adaptation.outcomes import Adapted, StepOutcome
from driftd.adaptation.pending_decision import PendingDecision, Trigger
from driftd.adaptation.recurrence import InputStats, change_point, early_choice, input_choice
from driftd.adaptation.replay import ReplayBuffer
from driftd.decode import DecodedBatch
from driftd.learning.learner import OnlineLearner, StepReport
from driftd.learning.tensor_state import TensorState

COPY_EVERY = 256
"""Events after which the copy of the live model is renewed (so a stored domain misses at most
this many of its last events; a poll's worth at the default size)."""


class HeadSwitch:
    """The stored domains, replay buffer and pending head decision of one learner.

    Args:
        learner: The learner whose head is switched.
        config: The adaptation settings it reads.
        generator: Random source of fresh heads and replay draws (its state is the owner's).
    """

    def __init__(
        self, *, learner: OnlineLearner, config: AdaptationConfig, generator: torch.Generator
    ) -> None:
        self.learner, self.config, self.generator = learner, config, generator
        self.domain_store = DomainStore(config.max_heads) if config.heads else None
        self.replay = ReplayBuffer(config.replay_size, mode=config.replay, generator=generator)
        self.active = "d0"
        self.next_domain = 1
        self.pending: PendingDecision | None = None
        self.fingerprints = config.on_covariate_drift == "score_heads"
        self.inputs = InputStats()  # the active domain's inputs (fingerprints only)
        self.pending_inputs = InputStats()  # the inputs since the pending drift
        # the live model before the newest step, and the arrival number of that step's first
        # event: what the active domain is stored as when its change began within that step
        self.before_step: tuple[int, StoredDomain] | None = None

    def record(self, report: StepReport, batch: DecodedBatch) -> None:
        """Keep the step's labelled events for replay; count them for a pending decision."""
        if len(report.event_losses):
            labelled = batch.labelled
            every = bool(labelled.all())
            x = batch.x if every else batch.x[labelled]
            y = batch.y if every else batch.y[labelled]
            losses = report.event_losses if len(report.event_losses) == len(x) else None
            self.replay.extend(x, y, losses)
        if self.pending is not None:
            self.pending.add_losses(report.event_losses)
            self.pending.events += len(batch)

    def activate(self, domain: str, outcome: StepOutcome) -> None:
        """Put explicit ``domain``'s head in the live model (created on first sight)."""
        assert self.domain_store is not None
        self.pending = None  # an explicit domain settles any head decision
        self._store(self.active, None, outcome)
        if domain in self.domain_store:
            self.domain_store.load(domain, self.learner)
            self.inputs = self.domain_store.entry(domain).inputs.copy()
        else:
            self.inputs = InputStats()
            self._new_head(domain, outcome, "first event of an explicit domain")
        self.active = domain

    def on_concept_drift(
        self, marker: int, span: int | None, losses_after: torch.Tensor, outcome: StepOutcome
    ) -> None:
        """Start (or, after a covariate drift, re-anchor) the decision at detection ``marker``.

        ``losses_after``: prequential losses of the drift batch's events from the detection on
        (scored by the full window, so counted in the live head's loss too).
        """
        start = self._change_start(marker, span)
        if self.pending is None:
            self._start(marker, start, "concept", outcome)
        # else a covariate drift started looking (its head stored): now the loss shows it too
        assert self.pending is not None
        self.pending.anchor_concept(marker, start, losses_after)

    def on_covariate_drift(self, marker: int, start: int, why: str, outcome: StepOutcome) -> None:
        """Store the active head and look for its successor (``score_heads``)."""
        self._start(marker, start, "covariate", outcome)
        outcome.adaptations.append(Adapted("score_heads", self.active, why))

    def after_step(self, batch: DecodedBatch, outcome: StepOutcome) -> bool:
        """Track the inputs and decide when the evidence suffices; True if a head was reused."""
        if self.fingerprints:
            (self.inputs if self.pending is None else self.pending_inputs).update(batch.x)
        reused = False
        if self.pending is not None:
            self._weigh_evidence(self.pending, outcome)
            reused = any(adapted.kind == "reuse_head" for adapted in outcome.adaptations)
        self._keep_before_step()
        return reused

    def _weigh_evidence(self, pending: PendingDecision, outcome: StepOutcome) -> None:
        """Decide the pending head choice, finally or early, once its evidence suffices."""
        config, by_inputs = self.config, pending.trigger == "covariate"
        if self.replay.arrivals - pending.marker >= config.score_events:
            self._decide(outcome)
        elif by_inputs and pending.events >= config.score_events:
            self._decide_by_inputs(outcome, final=True)
        elif config.early_reuse:
            self._try_early(outcome)
            if self.pending is not None and by_inputs:
                self._decide_by_inputs(outcome, final=False)

    def _keep_before_step(self) -> None:
        """Copy the live model as the next step starts from it (none while a decision waits).

        A change is detected some events after it began, and the events between were learnt
        by then: at fine steps a few dozen of them turn a model to the new concept (measured on
        STAGGER and image domains). The copy keeps the domain as it was before them. It is
        taken again once :data:`COPY_EVERY` events came since the last: a copy costs about
        0.1 ms for the default model, a step of 32 events 1.5 ms.
        """
        if self.pending is not None or self.domain_store is None:
            self.before_step = None
            return
        arrivals, before = self.replay.arrivals, self.before_step
        if before is None or arrivals - before[0] >= COPY_EVERY:
            self.before_step = (arrivals, capture(self.learner))

    def _change_start(self, marker: int, span: int | None) -> int:
        """Arrival number where the change most likely began (the events to score heads on).

        Detectors fire some events after the change (ADWIN: tens): those events are evidence
        too. The prequential losses over the detector's window (``span``; else twice
        ``score_events``) before the detection locate the rise (:func:`change_point`): each
        event's loss as it was predicted. Not the live model's losses now: it has learnt the
        events since the change and may have forgotten those before (a few hundred fine steps
        on a new image domain do), which puts the rise too early. Losses not kept (a snapshot
        from before they were) are scored on the live model.
        """
        first = max(0, marker - (span or 2 * self.config.score_events))
        losses = self.replay.losses_since(first, marker + 1)
        if len(losses) < 4 or self.domain_store is None:
            return marker
        if not bool(torch.isfinite(losses).all()):
            x, y = self.replay.since(first, marker + 1)
            losses = self.domain_store.live_event_losses(self.learner, x, y)
        if not bool(torch.isfinite(losses).all()):
            return marker  # no level to compare: score from the detection on
        return first + change_point(losses)

    def _start(self, marker: int, start: int, trigger: Trigger, outcome: StepOutcome) -> None:
        """Store the active domain as it was before ``start``, with its reference loss.

        That is the copy from before this step when the change began within it, else the live
        model. The reference: the prequential loss of the events before ``start`` (the live
        model's loss on them where those losses were not kept).
        """
        domains, learner = self.domain_store, self.learner
        assert domains is not None
        first = max(0, start - self.config.score_events * 4)
        losses = self.replay.losses_since(first, start)
        reference: float | None = float(losses.mean()) if len(losses) else None
        if reference is not None and not math.isfinite(reference):
            x, y = self.replay.since(first, start)
            reference = domains.score_live(learner, x, y)
        if reference is None or not math.isfinite(reference):
            reference = learner.window.loss
        before = self.before_step
        fits = before is not None and before[0] <= start and fits_live(before[1], learner)
        self._store(self.active, reference, outcome, entry=before[1] if before and fits else None)
        self.before_step = None
        if self.config.replay == "reservoir":
            self.replay.clear()
        self.pending = PendingDecision(
            marker=marker, start=start, from_domain=self.active, trigger=trigger
        )
        self.pending_inputs = InputStats()

    def _try_early(self, outcome: StepOutcome) -> None:
        pending, domains = self.pending, self.domain_store
        assert pending is not None
        assert domains is not None
        x, y = self.replay.since(pending.start)
        if len(x) < self.config.early_min_events:
            return
        losses = domains.event_scores(self.learner, x, y)
        best = early_choice(
            losses, baseline=pending.from_domain, fits=self._fits_reference,
            z=self.config.reuse_confidence,
        )  # fmt: skip
        if best is not None:
            was, now = float(losses[pending.from_domain].mean()), float(losses[best].mean())
            detail = f"early, on {len(x)} events: {pending.from_domain} {was:.3f}, {best} {now:.3f}"
            self._reuse(best, detail, outcome)

    def _decide(self, outcome: StepOutcome) -> None:
        pending, domains = self.pending, self.domain_store
        assert pending is not None
        assert domains is not None
        x, y = self.replay.since(pending.marker)
        live = pending.live_loss
        scores = domains.scores(self.learner, x, y) if len(x) else {}
        # a head whose loss is not a number is no candidate (NaN would compare false either way)
        scores = {name: s if math.isfinite(s) else math.inf for name, s in scores.items()}
        fitting = [
            name for name, score in scores.items()
            if score < live and self._fits_reference(name, score)
        ]  # fmt: skip
        best = min(fitting, key=scores.__getitem__) if fitting else None
        shown = ", ".join(f"{name} {score:.3f}" for name, score in scores.items())
        detail = f"on {len(x)} events: live {live:.3f}, stored {shown}"
        if best is not None:
            self._reuse(best, detail, outcome)
        elif pending.trigger == "concept":
            self._new_domain(detail, outcome, clone=False)
        else:
            self._no_fit_by_inputs(detail, outcome)

    def _decide_by_inputs(self, outcome: StepOutcome, *, final: bool) -> None:
        """Choose by the inputs' fingerprint: finally, or early if the inputs clearly left."""
        pending, domains = self.pending, self.domain_store
        assert pending is not None
        assert domains is not None
        recent, limit = self.pending_inputs, self.config.input_fit_distance
        if recent.count < self.config.early_min_events:
            return
        fingerprints = {name: domains.entry(name).inputs for name in domains.names}
        best, distances = input_choice(
            recent, fingerprints, baseline=pending.from_domain, max_distance=limit
        )
        shown = ", ".join(f"{name} {distance:.3f}" for name, distance in distances.items())
        detail = f"by inputs of {recent.count} events: distance {shown or 'unknown'}"
        was = distances.get(pending.from_domain)
        if best is not None and (final or was is None or was > limit):
            self._reuse(best, detail, outcome)
        elif final:
            self._no_fit_by_inputs(detail, outcome)

    def _no_fit_by_inputs(self, detail: str, outcome: StepOutcome) -> None:
        """After a covariate drift, no stored head fits: same domain, or a new one (cloned)."""
        pending, domains = self.pending, self.domain_store
        assert pending is not None
        assert domains is not None
        was = self.pending_inputs.distance(domains.entry(pending.from_domain).inputs)
        if was is not None and was <= self.config.input_fit_distance:
            # the inputs still look like the active domain's (a late or passing alarm)
            self.pending = None
            self.inputs = self.inputs.merged(self.pending_inputs)
            outcome.adaptations.append(Adapted("keep_head", self.active, detail))
        else:
            self._new_domain(detail, outcome, clone=True)

    def _reuse(self, name: str, detail: str, outcome: StepOutcome) -> None:
        """Switch to stored head ``name`` (with its trunk), then replay the post-drift events."""
        pending, domains = self.pending, self.domain_store
        assert pending is not None
        assert domains is not None
        self.pending = None
        domains.load(name, self.learner, trunk=True)
        self.active = name
        self.inputs = domains.entry(name).inputs.merged(self.pending_inputs)
        outcome.adaptations.append(Adapted("reuse_head", name, detail))
        # one pass at most: the head fits already, and an early switch has few events to
        # replay (20 steps on 40 events overfit them: measured on SEA)
        x, y = self.replay.since(pending.start)
        self._replay_steps(x, y, outcome, passes=1)

    def _new_domain(self, detail: str, outcome: StepOutcome, *, clone: bool) -> None:
        pending = self.pending
        assert pending is not None
        self.pending = None
        name = f"d{self.next_domain}"
        self.next_domain += 1
        self.inputs = self.pending_inputs.copy()
        self._new_head(name, outcome, detail, clone=clone)
        self.active = name
        self._replay_steps(*self.replay.since(pending.marker), outcome)

    def _fits_reference(self, name: str, score: float) -> bool:
        assert self.domain_store is not None
        reference = self.domain_store.entry(name).reference_loss
        if reference is None:
            return False
        return score <= self.config.fit_ratio * reference + self.config.fit_margin

    def _new_head(self, name: str, outcome: StepOutcome, why: str, *, clone: bool = False) -> None:
        learner = self.learner
        how = "clone" if clone else self.config.new_head
        if how == "fresh":
            head = head_of(learner)
            model: Any = learner.model
            head.load_state_dict(model.new_head(self.generator).state_dict())
            for p in head.parameters():
                learner.optimizer.state.pop(p, None)
        self._store(name, None, outcome)
        outcome.adaptations.append(Adapted("new_head", name, f"{how}: {why}"))

    def _replay_steps(
        self, x: torch.Tensor, y: torch.Tensor, outcome: StepOutcome, *, passes: int = 0
    ) -> None:
        """``replay_steps`` extra steps on ``(x, y)``; at most ``passes`` over it (0: no cap)."""
        steps, size = self.config.replay_steps, self.config.replay_batch_size
        if passes:
            steps = min(steps, -(-passes * len(x) // size))
        if not steps or not len(x):
            return
        for _ in range(steps):
            rows = torch.randint(0, len(x), (min(size, len(x)),), generator=self.generator)
            self.learner.fit_many(x[rows], y[rows])
        detail = f"{steps} steps on {len(x)} post-drift events"
        outcome.adaptations.append(Adapted("replay", self.active, detail))

    def _store(
        self,
        name: str,
        reference_loss: float | None,
        outcome: StepOutcome,
        *,
        entry: StoredDomain | None = None,
    ) -> None:
        """Store ``entry`` (default: the live model) as ``name``'s, with the active fingerprint."""
        assert self.domain_store is not None
        stored = capture(self.learner) if entry is None else entry
        stored.reference_loss = reference_loss
        stored.inputs = self.inputs.copy() if self.fingerprints else InputStats()
        for evicted in self.domain_store.put(name, stored):
            outcome.adaptations.append(Adapted("evict_head", evicted, "least recently used"))

    def state_dict(self) -> TensorState:
        """Tensors (replay rows, stored trunks and heads, fingerprints) and JSON-ready state."""
        replay_tensors, replay_meta = self.replay.state_dict()
        tensors = {f"replay.{k}": v for k, v in replay_tensors.items()}
        stored_meta: dict[str, Any] = {"entries": []}
        if self.domain_store is not None:
            stored_tensors, stored_meta = self.domain_store.state_dict()
            # under "heads", as snapshots have always stored them (the meta: the bare list)
            tensors |= {f"heads.{k}": v for k, v in stored_tensors.items()}
        counts = {}
        for name, stats in (("inputs", self.inputs), ("pending_inputs", self.pending_inputs)):
            part, stats_meta = stats.state_dict()
            tensors |= {f"{name}.{k}": v for k, v in part.items()}
            counts[name] = stats_meta["count"]
        before: dict[str, Any] | None = None
        if self.before_step is not None:  # a resumed run stores a domain as this one would
            arrival, entry = self.before_step
            copy = DomainStore(1)
            copy.put("before_step", entry)
            before_tensors, before_meta = copy.state_dict()
            tensors |= {f"before_step.{k}": v for k, v in before_tensors.items()}
            before = {"arrival": arrival, "entries": before_meta["entries"]}
        meta = {
            "active": self.active, "next_domain": self.next_domain,
            "pending": None if self.pending is None else self.pending.state_dict(),
            "replay": replay_meta, "heads": stored_meta["entries"], "input_counts": counts,
            "before_step": before,
        }  # fmt: skip
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (also a snapshot from before early reuse)."""
        self.replay.load_state_dict(_part(tensors, "replay."), meta["replay"])
        if self.domain_store is not None:
            self.domain_store.load_state_dict(_part(tensors, "heads."), meta["heads"])
        self.active, self.next_domain = str(meta["active"]), int(meta["next_domain"])
        saved = meta["pending"]
        self.pending = None if saved is None else PendingDecision.from_state(saved)
        counts = meta.get("input_counts", {})
        self.inputs, self.pending_inputs = (
            InputStats.from_state(_part(tensors, f"{name}."), {"count": counts.get(name, 0)})
            for name in ("inputs", "pending_inputs")
        )
        self.before_step = None
        before = meta.get("before_step")  # absent from snapshots before it was kept
        if before is not None:
            copy = DomainStore(1)
            copy.load_state_dict(_part(tensors, "before_step."), before)
            self.before_step = (int(before["arrival"]), copy.entry("before_step"))


def _part(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
