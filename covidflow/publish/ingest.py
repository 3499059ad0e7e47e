"""The work of the ingest DAG's tasks, through the providers' hooks; imported inside tasks only (heavy imports).

``select_new_objects`` lists the source's prefix (S3Hook) and drops what the manifest already has;
``publish_object`` streams one object to Kafka (the Kafka factory's config plus our producer settings) and marks it in
the manifest once every record is acknowledged.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from covidflow import settings
from covidflow.land.manifest import S3Manifest
from covidflow.land.objects import LandedObject, from_listing, object_vintage, select_new, unsafe_keys
from covidflow.publish.config import ingest_config
from covidflow.publish.envelope import DEADLETTER_TOPIC, RAW_TOPIC, ObjectRef
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
    """A confluent-kafka Producer: the covidflow_kafka connection through the one Kafka factory
    (``covidflow.clients.kafka_config``: its extra as the provider reads it, SASL from login and password too),
    plus include/config/ingest.yaml's producer-only settings, which do not belong in the shared connection (the
    admin and consumer clients would warn on them)."""
    from confluent_kafka import Producer

    from covidflow.clients import kafka_config

    return Producer(producer_config(kafka_config(), ingest_config()["producer"], txn_id))


def publish_object(source_id: str, obj_dict: dict[str, Any]) -> dict[str, Any]:
    """Publish one landed object, then mark it in the manifest; returns the run summary (XCom).

    Deterministic failures raise AirflowFailException (no retry: the same bytes give the same answer) after one
    dead letter: an object that cannot be read to its end (empty, truncated, a bomb, unknown format) publishes
    nothing and is marked ``refused`` in the manifest so later runs skip it (a re-run publishes it again); a
    blocking schema drift is refused and marked the same way, then SchemaDrift is raised for the task to report.
    Transient failures (Kafka unreachable, S3 errors, also mid-read) raise DeliveryFailed or the S3 error and
    keep their retries.
    """
    from airflow.sdk.exceptions import AirflowFailException
    from confluent_kafka import KafkaException

    from covidflow.ops.config import quality_config
    from covidflow.publish.kafka import DeliveryFailed, ObjectRefused, ReadInterrupted, refuse, refused_message
    from covidflow.read import ReaderError
    from covidflow.read.batch import read_batches
    from covidflow.store.quality import SchemaDrift, guard_drift

    config = ingest_config()
    txn = config["transactions"]
    spec = _spec(source_id)
    obj = LandedObject.from_dict(obj_dict)
    client = s3_client()
    manifest = S3Manifest(client, obj.bucket, config["manifest"]["prefix"])
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
    ref = ObjectRef(obj.bucket, obj.key, obj.etag, obj.version_id, obj.size)
    options = {"transactional": bool(txn_id), "commit_timeout": txn["commit_timeout_seconds"]}

    def refused(exc: Exception) -> PublishSummary:
        """One dead letter, then the refused marker: later runs skip the object (ADR 0006)."""
        summary = PublishSummary(source_id, obj.uri, obj.etag, object_vintage(spec.data, obj), obj.size)
        refuse(producer, summary, exc, source_id=source_id, ref=ref, at=datetime.now(UTC).isoformat(), **options)
        summary.duration_s = round(time.monotonic() - started, 3)
        manifest.mark(source_id, obj, summary.to_dict())
        log.info("%s", summary.line())
        return summary

    started = time.monotonic()
    stream = open_stream(client, obj)
    try:
        # A renamed or missing column fails here, before a single record is published (SchemaDrift).
        chunks, drift = guard_drift(
            source_id,
            spec.data,
            read_batches(stream, spec["format"], spec.get("reader") or {}, name=obj.key),
            quality_config(),
            name=obj.key,
        )
        for finding in drift:
            log.warning("%s: %s", obj.uri, finding)
        summary: PublishSummary = publish_records(
            chunks,
            source_id=source_id,
            spec=spec.data,
            obj=obj,
            schema_ver=schema_version(spec.path.read_bytes()),
            producer=producer,
            raw_topic=RAW_TOPIC,
            deadletter_topic=DEADLETTER_TOPIC,
            source_failed=lambda: stream.failed,
            **options,
        )
    except ReaderError as exc:  # before the first record: empty file, unreadable head, unknown format
        if stream.failed is not None:
            raise ReadInterrupted(obj, stream.failed, exc) from stream.failed
        raise AirflowFailException(f"{refused_message(refused(exc))} {MARKED_REFUSED}") from None
    except SchemaDrift as exc:  # the task reports the findings, then fails without retry
        refused(exc)
        raise
    except ObjectRefused as exc:  # read in part, then a reader error: the transaction was aborted
        manifest.mark(source_id, obj, exc.summary.to_dict())
        log.info("%s", exc.summary.line())
        raise AirflowFailException(f"{exc} {MARKED_REFUSED}") from None
    finally:
        stream.close()
    result = summary.to_dict()
    manifest.mark(source_id, obj, result)
    log.info("%s", summary.line())
    return result


MARKED_REFUSED = "The object is marked refused in the manifest: later runs skip it (a re-run publishes it again)."


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
