"""The two references throughput.py compares the processor with, run as it is run.

    python benchmarks/reference_consumers.py limit|quix-floor --count N \
        --broker-address A --raw-topic T --agg-topic S --consumer-group G --state-dir D

limit       a plain confluent-kafka consumer that json.loads every message
quix-floor  a Quix Streams app that only deserializes (no window, no state): the
            framework's own per-message cost

Both join a consumer group with the processor's 6 s session and, once they
have consumed --count messages, write one message to --agg-topic, so the
harness times them as it times the processors: from the group's join to the
last output on the sink. Then they wait to be stopped.
"""

from __future__ import annotations

import itertools
import json

from confluent_kafka import Consumer, Producer

from baseline_processor import SESSION, arguments


def limit(broker_address: str, raw: str, agg: str, group: str, count: int) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": broker_address,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **SESSION,
        }
    )
    producer = Producer({"bootstrap.servers": broker_address})
    consumer.subscribe([raw])
    seen = 0
    while seen < count:
        msg = consumer.poll(1.0)
        if msg is None or msg.error() is not None:
            continue
        json.loads(msg.value())
        seen += 1
    producer.produce(agg, json.dumps({"consumed": seen}).encode())
    producer.flush(30)
    while True:  # stay in the group until stopped, like the processors
        consumer.poll(1.0)


def quix_floor(
    broker_address: str, raw: str, agg: str, group: str, state_dir: str, count: int
) -> None:
    from quixstreams import Application

    app = Application(
        broker_address=broker_address,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        consumer_extra_config=SESSION,
    )
    seen = itertools.count(1)
    sdf = app.dataframe(app.topic(raw, value_deserializer="json"))
    sdf = sdf.filter(lambda _: next(seen) == count)
    sdf.to_topic(app.topic(agg, value_serializer="json"))
    app.run()


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("limit", "quix-floor"))
    parser.add_argument("--count", type=int, required=True, help="messages to consume")
    opts = parser.parse_args()
    where = (opts.broker_address, opts.raw_topic, opts.agg_topic, opts.consumer_group)
    if opts.kind == "limit":
        limit(*where, opts.count)
    else:
        quix_floor(*where, opts.state_dir, opts.count)


if __name__ == "__main__":
    main()
