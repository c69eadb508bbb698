"""What happens at a drift: detectors, the monitor, the re-adaptation policy and its parts.

Holds the drift monitor (river detectors), the head switch and its store of known domains (the
trunk and head of each), recurrence, replay, routing, class growth and transfer. May import
:mod:`driftd.learning`, :mod:`driftd.decode` and :mod:`driftd.records`; never pruning, serving,
tools, or any adapter.
"""
