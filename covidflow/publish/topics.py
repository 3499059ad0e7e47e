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
    """``ensure_topics`` for include/config/topics.yaml through the covidflow_kafka connection's admin client.

    The one path the topics DAG, the stream DAG (before it submits the job) and the test set-up all take.
    """
    from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook

    from covidflow import settings
    from covidflow.publish.config import topics_config

    return ensure_topics(KafkaAdminClientHook(kafka_config_id=settings.CONN_KAFKA).get_conn, topics_config())
