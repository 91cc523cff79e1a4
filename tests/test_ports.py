"""find_free_port: a port handed out is not handed out again, to any process here, while
a server may still stop and start again on it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from sensor_lib import servers


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own list of ports handed out, not the machine's."""
    path = tmp_path / "ports.json"
    monkeypatch.setattr(servers, "PORTS_HANDED_OUT", path)
    return path


def test_no_port_is_handed_out_twice(registry: Path) -> None:
    ports = [servers.find_free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)
    assert sorted(map(int, json.loads(registry.read_text()))) == sorted(ports)


def test_a_port_handed_out_long_ago_is_forgotten(registry: Path) -> None:
    long_ago = time.time() - servers.PORT_KEPT_SECONDS - 1
    registry.write_text(json.dumps({"1": long_ago, "2": time.time()}))
    port = servers.find_free_port()
    assert set(json.loads(registry.read_text())) == {"2", str(port)}


def test_an_unreadable_list_starts_afresh(registry: Path) -> None:
    registry.write_text("not json")
    port = servers.find_free_port()
    assert set(json.loads(registry.read_text())) == {str(port)}
