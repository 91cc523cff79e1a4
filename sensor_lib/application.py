"""The Application settings every Quix Streams script here shares, beyond the ones it names.

A script builds `Application(broker_address=..., consumer_group=..., ...)` itself,
with the arguments a Quix user knows, and adds `**quix_defaults(settings, lag)`:
consumer tuning, the state store's serializer, and error callbacks that leave the
report to the exit policy (sensor_lib/errors.py).
"""

from __future__ import annotations

import hashlib
import logging
import socket
from typing import Any

import orjson
from quixstreams.error_callbacks import default_on_processing_error
from quixstreams.state.rocksdb import RocksDBOptions

from sensor_lib.dead_letters import DeadLetterError
from sensor_lib.metrics import ConsumerLag
from sensor_lib.settings import QuixAppSettings

# A 6 s session keeps group joins and failover quick on any broker. A fetch waits at
# most 50 ms: some brokers (the embedded one) hold it that long even when messages
# are there, and librdkafka's default 500 ms would then be most of a window's latency.
CONSUMER_DEFAULTS = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1500,
    "fetch.wait.max.ms": 50,
}


def compact_dumps(value: Any) -> bytes:
    """orjson's bytes, copied to their own size. orjson 3.13 returns a bytes object
    that keeps its whole 4 KiB write buffer, and Quix Streams holds two such values per
    open window until each checkpoint: 8 KiB a window, a GiB at 100,000 sensors."""
    return bytes(memoryview(orjson.dumps(value)))


def state_options(memory_mib: int) -> RocksDBOptions:
    """The window store's RocksDB options for a memory budget (STATE_MEMORY_MB). Half is a
    block cache that every partition shares; the other half, the write buffers of one
    partition: two of an eighth for each of the two column families a window store writes
    (its windows, and each key's latest time). Quix Streams' defaults, a 1 GiB cache and
    three 64 MiB buffers per column family, fill up as the number of sensors grows."""
    return RocksDBOptions(
        # The same bytes as Quix Streams' default serializer (orjson), in compact objects.
        dumps=compact_dumps,
        loads=orjson.loads,
        block_cache_size=memory_mib * 2**20 // 2,
        write_buffer_size=memory_mib * 2**20 // 8,
        max_write_buffer_number=2,
    )


def quix_defaults(settings: QuixAppSettings, lag: ConsumerLag) -> dict[str, Any]:
    """Application arguments for what a script does not spell out itself."""
    lag_statistics = lag.config() if settings.metrics_port else {}
    extras = settings.client_extras()
    return {
        "rocksdb_options": state_options(settings.state_memory_mb),
        "on_consumer_error": stop_on_consumer_error,
        "on_processing_error": stop_on_processing_error,
        "consumer_extra_config": {
            **extras,
            **CONSUMER_DEFAULTS,
            **settings.consumer_config,
            **lag_statistics,
        },
        "producer_extra_config": {
            **extras,
            **exactly_once_producer(settings),
            **settings.producer_config,
        },
        "broker_availability_timeout": settings.broker_outage_timeout,
        "loglevel": None,  # our log format, set up by the script
    }


# librdkafka 2.10 and later can wait for ever in send_offsets_to_transaction once the
# group's coordinator has left the cluster (confluentinc/librdkafka#5511): it waits for a
# connection to change state, and none may. Closing connections idle for 10 s brings such
# a change while the commit waits, and the commit then finds the new coordinator.
WAKE_A_WAITING_COMMIT = {"connections.max.idle.ms": 10000}


def exactly_once_producer(settings: QuixAppSettings) -> dict[str, Any]:
    """With exactly-once, a transactional.id that stays the same across restarts of this
    instance (INSTANCE_ID, else the host and the state folder), so a restarted script
    fences its predecessor's open transaction at once: readers that read committed
    messages only (the sink, the viewer) then need not wait out transaction.timeout.ms.
    Two instances never share one: each has its own state folder or INSTANCE_ID."""
    if settings.processing_guarantee != "exactly-once":
        return {}
    folder = hashlib.sha256(str(settings.state_dir.resolve()).encode()).hexdigest()[:12]
    instance = settings.instance_id or f"{socket.gethostname()}-{folder}"
    return {"transactional.id": f"{settings.consumer_group}-{instance}", **WAKE_A_WAITING_COMMIT}


def stop_on_consumer_error(exc: Exception, message: Any, quix_logger: logging.Logger) -> bool:
    """Stop the app (a bad message never raises: this is the broker or the state),
    without Quix Streams' traceback: the exit policy says what it knows in one line."""
    return False


def stop_on_processing_error(exc: Exception, row: Any, quix_logger: logging.Logger) -> bool:
    """Stop the app; a dead letter that could not be written without Quix Streams'
    traceback (its error is the one line), anything else with Quix Streams' report."""
    if isinstance(exc, DeadLetterError):
        return False
    return default_on_processing_error(exc, row, quix_logger)
