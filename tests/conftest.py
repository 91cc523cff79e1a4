"""Shared fixtures: one real broker per test session, fresh topic names per test.

The broker is the embedded one (Tansu) unless BROKER_ADDRESS is set, in which
case the same tests run against that broker, for example Redpanda.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from embedded_broker import PROCESSOR_PRODUCER_CONFIG, EmbeddedBroker  # noqa: E402


@pytest.fixture(scope="session")
def broker_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if address := os.environ.get("BROKER_ADDRESS"):
        yield address
        return
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    os.environ.setdefault("PRODUCER_CONFIG", PROCESSOR_PRODUCER_CONFIG)
    with EmbeddedBroker(log_path=log_path) as broker:
        yield broker.address


@pytest.fixture
def names(request: pytest.FixtureRequest) -> TopicNames:
    return TopicNames(request.node.name)


class TopicNames:
    """Per-test topic and group names: test_<name>_<uuid>-<role>."""

    def __init__(self, test_name: str) -> None:
        clean = "".join(c if c.isalnum() else "_" for c in test_name)[:40]
        self.prefix = f"{clean}_{uuid.uuid4().hex[:8]}"
        self.raw = f"{self.prefix}-raw"
        self.agg = f"{self.prefix}-agg"
        self.dlq = f"{self.prefix}-raw-dlq"
        self.group = f"{self.prefix}-group"
