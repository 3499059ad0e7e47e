"""The local Kafka broker, over the Kafka protocol: metadata, topic admin, produce and consume.

Assumes `covidflow stack up kafka` ran; a broker that does not answer is a failure, not a skip.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from covidflow import settings
from covidflow.clients import kafka_config

pytestmark = pytest.mark.integration

BOOTSTRAP = settings.KAFKA_BOOTSTRAP


@pytest.fixture(scope="module")
def admin() -> AdminClient:
    client = AdminClient(kafka_config({"log_level": 0}))
    try:
        client.list_topics(timeout=5)
    except KafkaException as exc:
        pytest.fail(f"Kafka is not reachable at {BOOTSTRAP} ({exc}); start it with `covidflow stack up kafka`")
    return client


def _wait_for(condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def test_metadata_lists_the_single_broker(admin: AdminClient) -> None:
    metadata = admin.list_topics(timeout=5)
    assert len(metadata.brokers) == 1
    broker = next(iter(metadata.brokers.values()))
    assert broker.port == int(BOOTSTRAP.rsplit(":", 1)[1])


def test_create_produce_consume_delete(admin: AdminClient) -> None:
    topic = f"it-kafka-{uuid.uuid4().hex[:12]}"
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)], operation_timeout=10)
    futures[topic].result(timeout=15)
    try:
        # The controller acknowledges the creation before the broker's metadata cache has the topic (KRaft).
        _wait_for(lambda: admin.list_topics(topic=topic, timeout=5).topics[topic].error is None,
                  what=f"topic {topic} in the broker's metadata")  # fmt: skip
        metadata = admin.list_topics(topic=topic, timeout=5)
        assert metadata.topics[topic].error is None
        assert len(metadata.topics[topic].partitions) == 1

        delivered: list = []
        producer = Producer(kafka_config({"acks": "all", "enable.idempotence": True}))
        producer.produce(
            topic,
            key=b"DEU",
            value=b'{"country": "DEU", "cases": 42}',
            headers={"source": b"integration-test"},
            on_delivery=lambda err, msg: delivered.append((err, msg)),
        )
        assert producer.flush(15) == 0, "the message was not delivered within 15 s"
        assert len(delivered) == 1
        err, msg = delivered[0]
        assert err is None
        assert (msg.partition(), msg.offset()) == (0, 0)

        consumer = Consumer(
            kafka_config(
                {
                    "group.id": f"it-group-{uuid.uuid4().hex[:8]}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                }
            )
        )
        try:
            consumer.subscribe([topic])
            received = None
            deadline = time.monotonic() + 30
            while received is None and time.monotonic() < deadline:
                message = consumer.poll(1.0)
                if message is None:
                    continue
                if message.error():
                    assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                    continue
                received = message
        finally:
            consumer.close()
        assert received is not None, "no message consumed within 30 s"
        assert received.key() == b"DEU"
        assert received.value() == b'{"country": "DEU", "cases": 42}'
        assert received.headers() == [("source", b"integration-test")]
        assert (received.topic(), received.partition(), received.offset()) == (topic, 0, 0)
    finally:
        admin.delete_topics([topic], operation_timeout=10)[topic].result(timeout=15)
    _wait_for(lambda: topic not in admin.list_topics(timeout=5).topics, what=f"topic {topic} to be deleted")


@pytest.mark.parametrize("login", ["none", "wrong password"])
def test_the_broker_refuses_clients_without_the_sasl_login(admin: AdminClient, login: str) -> None:
    """The client listener is SASL/PLAIN: no metadata without credentials, nor with a wrong password."""
    config = kafka_config({"log_level": 0, "socket.timeout.ms": 3000, "socket.connection.setup.timeout.ms": 3000})
    if login == "none":
        for key in ("security.protocol", "sasl.mechanism", "sasl.username", "sasl.password"):
            config.pop(key)
    else:
        config["sasl.password"] += "-wrong"
    with pytest.raises(KafkaException):
        AdminClient(config).list_topics(timeout=5)
    assert admin.list_topics(timeout=5).brokers  # the right login still works
