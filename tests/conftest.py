"""What must be in conftest.py: the fixtures' registration, the font cache built before
any test, and the guard that keeps the fast tier free of processes. The fixtures
themselves are in suite_fixtures.py, the rest of the test support in helpers.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# The scripts and sensor_lib import from the repository's root; the tests, from here.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest_plugins = ["suite_fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    """Load what builds a per-user cache on first use, before any test runs.

    matplotlib lists the system's fonts the first time it loads, by running `fc-list`,
    and caches the list under MPLCONFIGDIR (or XDG_CACHE_HOME). Loaded inside a test,
    that first load is a subprocess in whichever test comes first, and the fast tier's
    guard refuses it; loaded here, no test depends on what an earlier run left behind.
    """
    import matplotlib.font_manager  # noqa: F401


@pytest.fixture(autouse=True)
def _a_fast_test_starts_no_process(request: pytest.FixtureRequest, monkeypatch) -> None:
    """`make test-fast` leaves out the tests marked integration; the rest must start no
    process (a broker, a database, a script), so the fast tier stays fast."""
    if request.node.get_closest_marker("integration") is None:

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("a test that starts a process is marked integration")

        monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
