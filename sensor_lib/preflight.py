"""Checks before Quix Streams starts, each failing in one line that says what to do."""

from __future__ import annotations

import tempfile

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from sensor_lib.changelogs import changelog_name
from sensor_lib.errors import CannotRun
from sensor_lib.logs import silent_logger
from sensor_lib.settings import QuixAppSettings


def check_state_dir(settings: QuixAppSettings) -> None:
    """Fail now, in one line, if the state cannot be written under STATE_DIR."""
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=settings.state_dir).close()
    except OSError as exc:
        raise CannotRun(
            f"cannot write window state under STATE_DIR {settings.state_dir} "
            f"({exc.strerror or exc}); set STATE_DIR or --state-dir to a writable directory"
        ) from None


def check_saved_state_matches_broker(settings: QuixAppSettings, source: str) -> None:
    """Refuse saved state whose changelog topic the broker does not have.

    That state belongs to a broker that was restarted empty (the embedded broker
    keeps nothing), or to a changelog topic someone deleted. Restored, it would
    judge new readings against old clocks. Quix Streams keeps a store at
    <state dir>/<group>/<store>/<topic>/<partition>, with the changelog
    changelog__<group>--<topic>--<store>.
    """
    group_dir = settings.group_state_dir
    stores = sorted(group_dir.iterdir()) if group_dir.is_dir() else []
    saved = [s.name for s in stores if (s / source).is_dir() and any((s / source).iterdir())]
    if not saved:
        return
    try:
        admin = AdminClient({**settings.librdkafka_config(), "logger": silent_logger()})
        topics = admin.list_topics(timeout=settings.broker_timeout).topics
    except KafkaException as exc:  # the broker went away since it answered
        raise CannotRun(
            f"could not list the topics at {settings.broker_address}: {exc.args[0].str()}"
        ) from None
    for store in saved:
        if (changelog := changelog_name(settings.consumer_group, source, store)) not in topics:
            raise CannotRun(
                f"the window state in {group_dir} belongs to changelog topic {changelog}, "
                f"which the broker at {settings.broker_address} does not have (it was restarted "
                f"empty, or the topic was deleted); remove {group_dir} and start again"
            )
