"""driftd as a library: the daemon's learning core behind a river-style :class:`Learner`."""

from driftd.library.events import DriftDetected, LearnerEvent, ModelAdapted, ModelPruned
from driftd.library.learner import ClassifyingLearner, Learner, RegressingLearner

__all__ = [
    "ClassifyingLearner", "DriftDetected", "Learner", "LearnerEvent", "ModelAdapted",
    "ModelPruned", "RegressingLearner",
]  # fmt: skip
