"""The changelog topics Quix Streams keeps a consumer group's window state in.

Quix Streams names them changelog__<group>--<source topic>--<store> and creates
them as the dataframe is built, with the largest replication factor of their
input topics and the input's retention, but not its min.insync.replicas.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from sensor_lib.logs import silent_logger
from sensor_lib.settings import QuixAppSettings
from sensor_lib.topics import raise_min_insync_replicas

logger = logging.getLogger(__name__)


def changelog_name(group: str, source: str, store: str) -> str:
    return f"changelog__{group}--{source}--{store}"


def replicate_changelogs(settings: QuixAppSettings) -> None:
    """Give each changelog topic of the group the min.insync.replicas the settings ask,
    so the window state survives a broker as the input topics do; warn where it cannot."""
    prefix = f"changelog__{settings.consumer_group}--"
    admin = AdminClient({**settings.librdkafka_config(), "logger": silent_logger()})
    try:
        topics = admin.list_topics(timeout=settings.broker_timeout).topics
        names = sorted(name for name in topics if name.startswith(prefix))
        raise_min_insync_replicas(settings, names, settings.broker_timeout)
    except KafkaException as exc:  # the broker went away: the run meets it, and says so
        logger.warning("Could not check the changelog topics: %s", exc.args[0].str())
