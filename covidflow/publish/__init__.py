"""Publish: landed objects become raw records on Kafka (see docs/decisions/0005-kafka-envelope.md)."""
