"""The window's initializer and reducer, checked against the statistics module."""

from __future__ import annotations

import math
import re
import statistics
import tracemalloc
from functools import reduce
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from quixstreams.state.rocksdb import RocksDBOptions
from quixstreams.state.rocksdb.partition import RocksDBStorePartition

from sensor_lib.application import state_options
from sensor_stream_processor import (
    add_reading,
    has_readings,
    initialize_stats,
    parse_reading,
    summarize_window,
)

temperatures = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
)


def aggregate(values: list[float]) -> dict[str, object]:
    readings = [{"ts": "2026-11-26T00:00:00Z", "value": v} for v in values]
    stats = reduce(add_reading, readings[1:], initialize_stats(readings[0]))
    return summarize_window({"start": 0, "end": 10_000, "value": stats})


@given(st.lists(temperatures, min_size=1, max_size=200))
def test_window_matches_statistics(values: list[float]) -> None:
    out = aggregate(values)
    t = out["temperature"]
    assert t["count"] == len(values)
    assert t["min"] == min(values)
    assert t["max"] == max(values)
    assert math.isclose(t["mean"], statistics.mean(values), rel_tol=1e-12, abs_tol=1e-12)


@given(st.lists(st.integers(min_value=-500, max_value=500), min_size=1, max_size=50))
def test_integer_readings_give_the_exact_mean(values: list[int]) -> None:
    assert aggregate(values)["temperature"]["mean"] == statistics.fmean(values)


@pytest.mark.parametrize(
    "values",
    [[1e16, 1.0, -1e16, 1.0], [1.0, 1e16, 1.0, -1e16]],
    # A compensation that assumes the running sum is the larger addend loses the first
    # 1.0 of the second: there 1e16 is added to 1.0, not 1.0 to 1e16.
    ids=["large-reading-first", "large-reading-second"],
)
def test_mean_survives_cancellation_that_breaks_a_plain_sum(values: list[float]) -> None:
    assert sum(values) / len(values) != 0.5  # the naive float sum loses the ones
    assert aggregate(values)["temperature"]["mean"] == 0.5


def test_output_message_shape() -> None:
    assert aggregate([20.5, 19.5, 22.0, -1]) == {
        "start": 0,
        "end": 10_000,
        "temperature": {"count": 4, "min": -1, "max": 22.0, "mean": 15.25},
    }


WATERMARK = parse_reading(b'{"ts": "2026-11-26T00:00:05Z", "watermark": true}')


def reading_of(value: float) -> dict[str, object]:
    return {"ts": "2026-11-26T00:00:01Z", "value": value}


def test_watermarks_move_time_but_never_count() -> None:
    only_watermarks = add_reading(initialize_stats(WATERMARK), WATERMARK)
    assert not has_readings({"start": 0, "end": 10_000, "value": only_watermarks})
    after = add_reading(add_reading(initialize_stats(WATERMARK), reading_of(3.0)), WATERMARK)
    before = add_reading(initialize_stats(reading_of(3.0)), WATERMARK)
    assert after == before == initialize_stats(reading_of(3.0))
    assert has_readings({"start": 0, "end": 10_000, "value": after})


@given(st.lists(temperatures, min_size=1, max_size=20))
def test_window_state_is_stored_as_quix_streams_default_stores_it(values: list[float]) -> None:
    # So state and changelogs saved before the processor chose its own dumps stay readable.
    readings = [{"ts": "2026-11-26T00:00:00Z", "value": v} for v in values]
    stats = reduce(add_reading, readings[1:], initialize_stats(readings[0]))
    default, ours = RocksDBOptions(), state_options(64)
    assert ours.dumps(stats) == default.dumps(stats)
    assert ours.loads(default.dumps(stats)) == stats


def test_a_stored_window_takes_its_own_size_in_memory_not_a_write_buffer() -> None:
    # Quix Streams keeps each open window's serialized state until the next checkpoint,
    # so the memory a window costs is what one serialized value holds on to.
    stats = reduce(add_reading, [reading_of(v) for v in (21.5, 22.0)], initialize_stats(WATERMARK))
    count = 1000
    tracemalloc.start()
    try:
        values = [state_options(64).dumps(stats) for _ in range(count)]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held / count < 4 * len(values[0])  # orjson's own bytes held 4 KiB each


def test_rocksdb_opens_the_window_store_with_half_the_memory_budget_as_one_shared_cache(
    tmp_path: Path,
) -> None:
    # RocksDB's own log of the options it opened with, not the mapping's arithmetic.
    store = RocksDBStorePartition(path=str(tmp_path / "db"), options=state_options(64))
    store.close()
    log = (tmp_path / "db" / "LOG").read_text()

    def logged(name: str) -> set[str]:
        return set(re.findall(rf"\b{name}\s*:\s*(\w+)$", log, re.MULTILINE))

    assert logged("capacity") == {str(32 * 2**20)}
    assert len(logged("block_cache")) == 1  # every column family, one cache
    # Write buffers: two of an eighth for each column family that takes writes.
    assert logged("Options.write_buffer_size") == {str(8 * 2**20)}
    assert logged("Options.max_write_buffer_number") == {"2"}
