"""What happens at a drift: detectors, the monitor, the re-adaptation policy and its parts.

Holds the drift monitor (river detectors), the head switch and its store of known domains (the
trunk and head of each), the pending decision, recurrence, replay, routing by domain, the LR ramps
after a drift, class growth and transfer, and the step's outcomes with their reporting. Built
from :class:`~driftd.adaptation.config.AdaptationConfig` and plain parameters. May import
:mod:`driftd.learning`, :mod:`driftd.decode`, :mod:`driftd.records` and :mod:`driftd.ports`;
never pruning, serving, settings, tools, or any adapter.
"""
