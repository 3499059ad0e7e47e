"""The work of the ingest DAG's tasks, through the providers' hooks; imported inside tasks only (heavy imports).

``select_new_objects`` lists the source's prefix (S3Hook) and drops what the manifest already has;
``publish_object`` streams one object to Kafka (KafkaProducerHook with our producer settings) and marks it in
the manifest once every record is acknowledged.
"""

from __future__ import annotations

import logging
from typing import Any

from covidflow import settings
from covidflow.land.manifest import S3Manifest
from covidflow.land.objects import LandedObject, from_listing, select_new, unsafe_keys
from covidflow.publish.config import ingest_config
from covidflow.publish.envelope import DEADLETTER_TOPIC, RAW_TOPIC
from covidflow.publish.kafka import (
    PublishSummary,
    open_stream,
    producer_config,
    publish_records,
    schema_version,
    transactional_id,
)

log = logging.getLogger(__name__)


def _spec(source_id: str) -> Any:
    from covidflow.catalog.specs import find_spec

    return find_spec(source_id)


def s3_client() -> Any:
    """boto3 S3 client from the covidflow_s3 connection (endpoint, keys, path-style addressing)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=settings.CONN_S3).get_conn()


def list_objects(client: Any, bucket: str, prefix: str) -> list[LandedObject]:
    paginator = client.get_paginator("list_objects_v2")
    return [
        from_listing(bucket, item)
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
        for item in page.get("Contents", [])
    ]


def select_new_objects(source_id: str, bucket: str) -> list[dict[str, Any]]:
    """The source's objects whose (key, etag) is not in the manifest, as dicts for XCom / task mapping."""
    spec = _spec(source_id)
    landing = spec["landing"]
    client = s3_client()
    objects = list_objects(client, bucket, landing["prefix"])
    seen = S3Manifest(client, bucket, ingest_config()["manifest"]["prefix"]).seen(source_id)
    new = select_new(objects, seen, landing["prefix"], landing["patterns"])
    for reason in unsafe_keys(objects, landing["prefix"]):
        log.warning("%s; the object is skipped (s3://%s)", reason, bucket)
    log.info(
        "s3://%s/%s: %d object(s) listed, %d already published, %d new: %s",
        bucket,
        landing["prefix"],
        len(objects),
        len(seen),
        len(new),
        ", ".join(f"{o.key} ({o.etag})" for o in new) or "-",
    )
    return [o.to_dict() for o in new]


def select_objects(source_id: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """What one run publishes: the new objects, or, for a re-run (``rerun_*`` params), the chosen ones whatever
    the manifest says (publishing them again marks them again: harmless)."""
    from covidflow.land.objects import select_rerun
    from covidflow.publish.rerun import parse_rerun

    bucket = params["bucket"]
    rerun = parse_rerun(params)
    if rerun is None:
        return select_new_objects(source_id, bucket)
    landing = _spec(source_id)["landing"]
    objects = list_objects(s3_client(), bucket, landing["prefix"])
    chosen = select_rerun(objects, landing["prefix"], landing["patterns"], key=rerun.key, key_prefix=rerun.prefix)
    log.info(
        "re-run of %s in s3://%s/%s: %d object(s) listed, %d to publish again (manifest ignored): %s",
        rerun.describe(),
        bucket,
        landing["prefix"],
        len(objects),
        len(chosen),
        ", ".join(f"{o.key} ({o.etag})" for o in chosen) or "-",
    )
    return [o.to_dict() for o in chosen]


def kafka_producer(txn_id: str | None) -> Any:
    """A confluent-kafka Producer from the covidflow_kafka connection plus include/config/ingest.yaml's settings.

    KafkaProducerHook builds the client from the connection extra only; producer-only settings do not belong in
    the shared connection (the admin and consumer clients would warn on them), so they are added here.
    """
    from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook

    overrides = dict(ingest_config()["producer"])

    class _IngestProducerHook(KafkaProducerHook):
        def _get_client(self, config: dict[str, Any]) -> Any:
            return super()._get_client(producer_config(config, overrides, txn_id))

    return _IngestProducerHook(kafka_config_id=settings.CONN_KAFKA).get_producer()


def publish_object(source_id: str, obj_dict: dict[str, Any]) -> dict[str, Any]:
    """Publish one landed object, then mark it in the manifest; returns the run summary (XCom)."""
    from confluent_kafka import KafkaException

    from covidflow.ops.config import quality_config
    from covidflow.publish.kafka import DeliveryFailed
    from covidflow.read import read_records
    from covidflow.store.quality import guard_drift

    config = ingest_config()
    txn = config["transactions"]
    spec = _spec(source_id)
    obj = LandedObject.from_dict(obj_dict)
    client = s3_client()
    stream = open_stream(client, obj)
    try:
        # A renamed or missing column fails here, before a single record is published (SchemaDrift).
        records, drift = guard_drift(
            source_id,
            spec.data,
            read_records(stream, spec["format"], spec.get("reader") or {}, name=obj.key),
            quality_config(),
            name=obj.key,
        )
        for finding in drift:
            log.warning("%s: %s", obj.uri, finding)
        txn_id = transactional_id(source_id, obj.key) if txn["enabled"] else None
        producer = kafka_producer(txn_id)
        if txn_id:
            try:
                producer.init_transactions(txn["init_timeout_seconds"])
            except KafkaException as exc:
                raise DeliveryFailed(
                    f"Kafka unreachable for {obj.uri} (etag {obj.etag}): cannot start a transaction within "
                    f"{txn['init_timeout_seconds']} s ({exc.args[0]}). Nothing published; a retry republishes it."
                ) from None
        summary: PublishSummary = publish_records(
            records,
            source_id=source_id,
            spec=spec.data,
            obj=obj,
            schema_ver=schema_version(spec.path.read_bytes()),
            producer=producer,
            raw_topic=RAW_TOPIC,
            deadletter_topic=DEADLETTER_TOPIC,
            transactional=bool(txn_id),
            commit_timeout=txn["commit_timeout_seconds"],
        )
    finally:
        stream.close()
    result = summary.to_dict()
    S3Manifest(client, obj.bucket, config["manifest"]["prefix"]).mark(source_id, obj, result)
    log.info("%s", summary.line())
    return result


def reject_ratio_exceeded(summary: dict[str, Any], max_ratio: float) -> str | None:
    """Why the run must fail although every reject reached the dead-letter topic, or None."""
    total = summary["records_out"] + summary["rejects"]
    if not total or summary["rejects"] / total <= max_ratio:
        return None
    return (
        f"{summary['object']}: {summary['rejects']} of {total} records rejected "
        f"({summary['rejects'] / total:.1%} > the allowed {max_ratio:.1%}); they are on {DEADLETTER_TOPIC} with "
        f"their reasons ({summary['rejects_by_reason']}). The object is marked done: fix the file or the spec, "
        "then re-upload it (new etag)."
    )
