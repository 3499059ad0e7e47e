"""The services of the local stack, in start order: storage and brokers first, Airflow last."""

from __future__ import annotations

from covidflow.stack.service import Service


def all_services() -> list[Service]:
    # Imported here so that `covidflow sources ...` never pays for the stack's imports.
    from covidflow.stack.services.airflow import AirflowService
    from covidflow.stack.services.cassandra import CassandraService
    from covidflow.stack.services.elasticsearch import ElasticsearchService
    from covidflow.stack.services.kafka import KafkaService
    from covidflow.stack.services.s3 import S3Service
    from covidflow.stack.services.spark import SparkService

    return [S3Service(), KafkaService(), CassandraService(), ElasticsearchService(), SparkService(), AirflowService()]


def by_name(name: str) -> Service:
    for service in all_services():
        if service.name == name:
            return service
    known = ", ".join(s.name for s in all_services())
    raise KeyError(f"unknown service {name!r}; the stack has: {known}")
