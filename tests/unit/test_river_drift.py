"""river's detectors come without river's example data sets (scikit-learn) and scipy.stats.

scikit-learn is a test dependency, so it is installed here: the daemon must leave it alone.
"""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import driftd.app
from driftd.adaptation.detectors import make_detector
make_detector("adwin", {})
make_detector("hddm_a", {})
heavy = ("sklearn", "river.stream", "scipy.stats._stats_py")
print(sorted(name for name in heavy if name in sys.modules))
from river import drift
print(drift.datasets.AirlinePassengers.__name__)
kswin = make_detector("kswin", {"seed": 0})
detections = 0
for value in [0.0] * 200 + [1.0] * 200:
    kswin.update(value)
    detections += kswin.drift_detected
print(detections > 0, "sklearn" in sys.modules)
"""


def test_the_daemon_imports_neither_example_data_nor_scipy_stats_until_used() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    imported, example, kswin = result.stdout.split("\n")[:3]
    assert imported == "[]"  # ~125 MiB and two seconds of every start saved
    assert example == "AirlinePassengers"  # deferred, not removed
    assert kswin == "True True"  # KSWIN still detects (scipy.stats loaded on its first test)
