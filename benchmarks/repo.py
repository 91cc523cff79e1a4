"""The repository, on sys.path: `python benchmarks/x.py` puts only benchmarks/ there.

Every benchmark script imports this module before anything from sensor_lib, and the
benchmark modules start the scripts under test from here (`REPO / script`).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
