"""river's detectors come without river's example data sets (and so without scikit-learn).

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
print(sorted(name for name in ("sklearn", "river.stream") if name in sys.modules))
from river import drift
print(drift.datasets.AirlinePassengers.__name__)
print("sklearn" in sys.modules)
"""


def test_the_daemon_imports_no_example_data_and_the_data_still_loads_on_use() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    imported, example, sklearn_after = result.stdout.split("\n")[:3]
    assert imported == "[]"  # ~65 MiB and a second of start-up saved
    assert example == "AirlinePassengers"  # deferred, not removed
    assert sklearn_after == "True"
