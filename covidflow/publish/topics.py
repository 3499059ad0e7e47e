"""Create or converge the project's Kafka topics from include/config/topics.yaml; safe to run any number of times.

Missing topics are created with their partitions, replication and configs; existing ones get missing
partitions added (never removed: keys would move) and their configs set to the declared values.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


def ensure_topics(admin: Any, topics: Mapping[str, Mapping[str, Any]], timeout: float = 30.0) -> dict[str, str]:
    """topic -> what was done ("created", "unchanged", "updated: ..."); raises on any broker error."""
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        NewTopic,
    )

    existing = admin.list_topics(timeout=timeout).topics
    actions: dict[str, str] = {}
    to_create = [
        NewTopic(
            name,
            num_partitions=int(spec["partitions"]),
            replication_factor=int(spec["replication_factor"]),
            config={k: str(v) for k, v in (spec.get("config") or {}).items()},
        )
        for name, spec in topics.items()
        if name not in existing
    ]
    if to_create:
        for name, future in admin.create_topics(to_create, operation_timeout=timeout, request_timeout=timeout).items():
            future.result(timeout=timeout)
            actions[name] = "created"
    for name, spec in topics.items():
        if name in actions:
            continue
        changes = []
        have = len(existing[name].partitions)
        want = int(spec["partitions"])
        if have < want:
            admin.create_partitions([NewPartitions(name, want)], operation_timeout=timeout)[name].result(timeout)
            changes.append(f"partitions {have}->{want}")
        elif have > want:
            log.warning("topic %s has %d partitions, config says %d: partitions are never removed", name, have, want)
        resource = ConfigResource("TOPIC", name)
        current = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout)
        wanted = {k: str(v) for k, v in (spec.get("config") or {}).items()}
        differ = {k: v for k, v in wanted.items() if k not in current or current[k].value != v}
        if differ:
            entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in differ.items()]
            futures = admin.incremental_alter_configs([ConfigResource("TOPIC", name, incremental_configs=entries)])
            for future in futures.values():
                future.result(timeout)
            changes.append("configs " + ", ".join(f"{k}={v}" for k, v in sorted(differ.items())))
        actions[name] = "updated: " + "; ".join(changes) if changes else "unchanged"
    for name, action in actions.items():
        log.info("topic %s: %s", name, action)
    return actions


def ensure_project_topics() -> dict[str, str]:
    """``ensure_topics`` for include/config/topics.yaml through an admin client of the covidflow_kafka connection.

    The one path the topics DAG, the stream DAG (before it submits the job) and the test set-up all take. The client
    comes from ``covidflow.clients.kafka_config`` (the connection's extra, as the provider's hook reads it, plus its
    login and password), like every other Kafka client of the project.
    """
    from confluent_kafka.admin import AdminClient

    from covidflow.clients import kafka_config
    from covidflow.publish.config import topics_config

    return ensure_topics(AdminClient(kafka_config()), topics_config())


def read_to_end(
    bootstrap: str | None,
    topic: str,
    start: Mapping[int, int] | None = None,
    *,
    isolation: str = "read_committed",
    timeout: float = 60.0,
) -> list[Any]:
    """Every message of ``topic`` from ``start`` (partition -> offset; default: the beginning) up to the end
    offsets of now, as confluent-kafka ``Message`` objects; raises TimeoutError if the end is not reached.

    Transaction markers take offsets too, so a partition is done once the consumer's position reaches its end
    (the last message may be a marker that is never delivered). ``read_uncommitted`` also returns the records
    of aborted transactions. Used by ``covidflow deadletters`` and the tests that read what ingest published.
    ``bootstrap`` overrides the connection's address only (None: the connection's, else settings).
    """
    import time
    import uuid

    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from covidflow.clients import kafka_config

    consumer = Consumer(
        kafka_config(
            {
                "group.id": f"covidflow-read-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": isolation,
                "log_level": 0,
            },
            bootstrap=bootstrap,
        )
    )
    messages: list[Any] = []
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaException(f"topic {topic} not found: {meta.error if meta else 'no metadata'}")
        todo: dict[int, tuple[int, int]] = {}
        for p in meta.partitions:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            lo = max(lo, (start or {}).get(p, lo))
            if hi > lo:
                todo[p] = (lo, hi)
        consumer.assign([TopicPartition(topic, p, lo) for p, (lo, _) in todo.items()])
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: end offsets not reached in {timeout:.0f} s (left: {todo})")
            msg = consumer.poll(1.0)
            if msg is None:
                for tp in consumer.position([TopicPartition(topic, p) for p in list(todo)]):
                    if tp.offset >= todo[tp.partition][1]:
                        del todo[tp.partition]
                continue
            if msg.error():
                raise KafkaException(msg.error())
            if msg.offset() >= todo.get(msg.partition(), (0, 0))[1] - 1:
                todo.pop(msg.partition(), None)
            messages.append(msg)
    finally:
        consumer.close()
    return messages
