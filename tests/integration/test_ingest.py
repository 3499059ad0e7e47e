"""Ingest DAGs on the real stack: S3 (s3proxy) -> dag.test() -> Kafka, read back from the topics.

Each test lands a real sample file in its own bucket (the DAG's ``bucket`` param), so runs never see each
other's objects or manifests, and reads the shared topics from the offsets captured before the run, keeping
only messages of its bucket. The DAG runs in a subprocess with its own AIRFLOW_HOME (SQLite) and the
connections from covidflow.stack.connections. Unreachable services are failures, not skips.

Needs: ``covidflow stack up s3 kafka``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

import covidflow
from covidflow import settings
from covidflow.clients import kafka_config
from covidflow.publish.config import CONFIG_DIR, topics_config
from covidflow.publish.envelope import DEADLETTER_TOPIC, RAW_TOPIC
from covidflow.publish.topics import ensure_topics, read_to_end

pytestmark = pytest.mark.integration

ROOT = covidflow.PROJECT_ROOT
PYTHON = str(ROOT / ".venv" / "bin" / "python")
SAMPLE = ROOT / "include" / "samples" / "spf_vacsi" / "vacsi-dep.csv"
SOURCE = "spf_vacsi"
PREFIX = "spf/vacsi/"
KEY = PREFIX + "vacsi-dep.csv"

RUN_DAG = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.session import create_session
from sqlalchemy import func, select
dag_id, conf = sys.argv[1], json.loads(sys.argv[2])
bag = DagBag(dag_folder=sys.argv[3])
assert not bag.import_errors, bag.import_errors
dr = bag.dags[dag_id].test(run_conf=conf)
from airflow.models.asset import AssetEvent, AssetModel
with create_session() as session:
    events = session.scalars(
        select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        .where(AssetModel.name == sys.argv[4], AssetEvent.source_run_id == dr.run_id)
    ).all()
    extras = [e.extra for e in events]
print("RESULT " + json.dumps({"state": str(dr.state), "run_id": dr.run_id, "asset_events": extras}))
"""


# -- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka_topics() -> None:
    admin = AdminClient(kafka_config({"log_level": 0}))
    try:
        admin.list_topics(timeout=10)
    except KafkaException as exc:
        pytest.fail(f"Kafka is not reachable at {settings.KAFKA_BOOTSTRAP} ({exc}); run `covidflow stack up kafka`")
    ensure_topics(admin, topics_config())


# -- helpers ----------------------------------------------------------------------------------------------------


def dag_command(bucket: str) -> list[str]:
    return [
        PYTHON,
        "-c",
        RUN_DAG,
        f"ingest_{SOURCE}",
        json.dumps({"bucket": bucket}),
        str(ROOT / "dags"),
        f"{RAW_TOPIC}.{SOURCE}",
    ]


def run_dag(env: dict[str, str], bucket: str) -> tuple[dict[str, Any], str]:
    done = subprocess.run(dag_command(bucket), env=env, capture_output=True, text=True, timeout=600)
    return _result(done.stdout + done.stderr), done.stdout + done.stderr


def _result(output: str) -> dict[str, Any]:
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, f"the DAG run printed no result:\n{output[-5000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


def end_offsets(topic: str) -> dict[int, int]:
    consumer = Consumer(kafka_config({"group.id": "it-ingest-offsets"}))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions}
    finally:
        consumer.close()


def consume_since(
    topic: str, start: dict[int, int], bucket: str, isolation: str = "read_committed"
) -> list[dict[str, Any]]:
    """Committed messages of ``bucket``'s objects written after ``start`` (read_committed, up to the end);
    ``isolation="read_uncommitted"`` also returns the records of aborted transactions."""
    out: list[dict[str, Any]] = []
    for msg in read_to_end(settings.KAFKA_BOOTSTRAP, topic, start, isolation=isolation):
        value = json.loads(msg.value())
        if value["object"]["bucket"] == bucket:
            out.append({"key": msg.key(), "value": value, "headers": dict(msg.headers() or [])})
    return out


def csv_rows(data: bytes, delimiter: str = ";") -> list[list[str]]:
    """The file's data rows, counted independently of our readers."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter=delimiter))
    return [row for row in rows[1:] if row]


def etag(s3: Any, bucket: str, key: str) -> str:
    return s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


def retrying_env(airflow_env: dict[str, str], tmp_path: Path, sensor_timeout: int = 60) -> dict[str, str]:
    """The ingest config with quick retries: a deterministic failure that is retried shows RETRY lines fast."""
    config = yaml.safe_load((CONFIG_DIR / "ingest.yaml").read_text())
    config["dag"].update(retries=2, retry_delay_seconds=1, max_retry_delay_seconds=2)
    config["sensor"].update(poke_interval_seconds=1, timeout_seconds=sensor_timeout)
    (tmp_path / "ingest.yaml").write_text(yaml.safe_dump(config))
    return {**airflow_env, "COVIDFLOW_INGEST_CONFIG": str(tmp_path / "ingest.yaml")}


def marker(s3: Any, bucket: str, key: str, object_etag: str) -> dict[str, Any]:
    quoted = key.replace("/", "%2F")
    body = s3.get_object(Bucket=bucket, Key=f"_manifest/{SOURCE}/{quoted}/{object_etag}.json")["Body"].read()
    return json.loads(body)["summary"]


# -- tests ------------------------------------------------------------------------------------------------------


def test_publish_once_then_nothing_then_only_the_corrected_vintage(s3, kafka_topics, airflow_env, bucket) -> None:
    data = SAMPLE.read_bytes()
    rows = csv_rows(data)
    assert len(rows) == 2133
    s3.put_object(Bucket=bucket, Key=KEY, Body=data)
    s3.put_object(Bucket=bucket, Key=PREFIX + "notes.txt", Body=b"not a source file")  # not matching the pattern
    first_etag = etag(s3, bucket, KEY)

    # 1st run: every record of the file, once, with its provenance.
    start = end_offsets(RAW_TOPIC)
    result, output = run_dag(airflow_env, bucket)
    assert result["state"] == "success", output[-5000:]
    messages = consume_since(RAW_TOPIC, start, bucket)
    assert len(messages) == len(rows)
    assert sorted(m["value"]["record_index"] for m in messages) == list(range(1, len(rows) + 1))
    by_index = {m["value"]["record_index"]: m for m in messages}
    first = by_index[1]
    assert first["value"]["fields"] == dict(zip(["dep", "jour", "n_dose1", "n_cum_dose1"], rows[0], strict=True))
    assert first["key"] == f"{SOURCE}|{rows[0][0]}|{rows[0][1]}".encode()
    # Headers name the object version and the format; the rest of the provenance is in the value (ADR 0005).
    assert first["headers"] == {
        "source_id": SOURCE.encode(),
        "object_key": KEY.encode(),
        "etag": first_etag.encode(),
        "envelope_version": b"1",
    }
    assert len(first["value"]["schema_version"]) == 12
    assert first["value"]["landed_at"] != ""
    assert first["value"]["vintage"] == first["value"]["landed_at"]  # spf_vacsi: vintage from the LastModified
    assert {m["headers"]["etag"] for m in messages} == {first_etag.encode()}
    assert f"published s3://{bucket}/{KEY} etag={first_etag}" in output
    assert f"records_out={len(rows)} rejects=0" in output
    assert [e["records_out"] for e in result["asset_events"]] == [len(rows)]
    markers = s3.list_objects_v2(Bucket=bucket, Prefix="_manifest/")["Contents"]
    assert [m["Key"] for m in markers] == [f"_manifest/{SOURCE}/spf%2Fvacsi%2Fvacsi-dep.csv/{first_etag}.json"]

    # 2nd run, after re-uploading the identical file: same etag, nothing published, no asset event.
    s3.put_object(Bucket=bucket, Key=KEY, Body=data)
    assert etag(s3, bucket, KEY) == first_etag
    start = end_offsets(RAW_TOPIC)
    result, output = run_dag(airflow_env, bucket)
    assert result["state"] == "success", output[-5000:]
    assert consume_since(RAW_TOPIC, start, bucket) == []
    assert result["asset_events"] == []
    assert "2 object(s) listed, 1 already published, 0 new" in output  # notes.txt is listed, not selected

    # 3rd run, after a correction: one value changed and a malformed row added -> a new etag, only that vintage.
    lines = data.decode().splitlines(keepends=True)
    lines[1] = lines[1].replace(";1;1", ";2;2", 1)
    lines.insert(5, "01;2021-01-10;1;2;3;4\n")  # six fields under a four-column header: a reader reject
    corrected = "".join(lines).encode()
    s3.put_object(Bucket=bucket, Key=KEY, Body=corrected)
    second_etag = etag(s3, bucket, KEY)
    assert second_etag != first_etag
    start, dl_start = end_offsets(RAW_TOPIC), end_offsets(DEADLETTER_TOPIC)
    result, output = run_dag(airflow_env, bucket)
    assert result["state"] == "success", output[-5000:]
    messages = consume_since(RAW_TOPIC, start, bucket)
    assert len(messages) == len(rows)  # the malformed row is not a record
    assert {m["headers"]["etag"] for m in messages} == {second_etag.encode()}
    assert min(messages, key=lambda m: m["value"]["record_index"])["value"]["fields"]["n_dose1"] == "2"
    assert messages[0]["value"]["vintage"] > first["value"]["vintage"]
    letters = consume_since(DEADLETTER_TOPIC, dl_start, bucket)
    assert len(letters) == 1
    letter = letters[0]["value"]
    assert (letter["stage"], letter["source_id"], letter["object"]["etag"]) == ("publish", SOURCE, second_etag)
    assert letter["line"] == 6 and KEY in letter["reason"]
    assert f"records_out={len(rows)} rejects=1" in output
    assert [e["records_out"] for e in result["asset_events"]] == [len(rows)]


def test_kafka_outage_fails_clearly_then_the_retry_publishes_exactly_once(
    s3, kafka_topics, airflow_env, bucket, tmp_path: Path
) -> None:
    from covidflow.stack.runner import Runner
    from covidflow.stack.services.kafka import KafkaService

    data = SAMPLE.read_bytes()
    rows = csv_rows(data)
    s3.put_object(Bucket=bucket, Key=KEY, Body=data)
    # Short timeouts and retries for the test: the same config file, overridden as data.
    config = yaml.safe_load((CONFIG_DIR / "ingest.yaml").read_text())
    config["dag"].update(retries=6, retry_delay_seconds=5, max_retry_delay_seconds=10)
    config["producer"]["message.timeout.ms"] = 10000
    config["transactions"].update(init_timeout_seconds=10, commit_timeout_seconds=20)
    config_path = tmp_path / "ingest.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**airflow_env, "COVIDFLOW_INGEST_CONFIG": str(config_path)}

    start = end_offsets(RAW_TOPIC)
    runner = Runner([KafkaService()])
    runner.down()
    proc = subprocess.Popen(dag_command(bucket), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    restarted = False
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if not restarted and "Kafka unreachable for" in line:
                runner.up()  # the first attempt failed clearly: bring the broker back before the retries run out
                restarted = True
        proc.wait(timeout=600)
    finally:
        if not restarted:
            runner.up()
        if proc.poll() is None:
            proc.kill()
    text = "".join(output)
    assert restarted, f"the publish never reported Kafka unreachable:\n{text[-5000:]}"
    assert f"DeliveryFailed: Kafka unreachable for s3://{bucket}/{KEY}" in text
    assert "RETRY dag=ingest_spf_vacsi" in text and "task=publish[0]" in text  # the one-line failure summary
    result = _result(text)
    assert result["state"] == "success", text[-5000:]
    messages = consume_since(RAW_TOPIC, start, bucket)
    assert len(messages) == len(rows)
    assert sorted(m["value"]["record_index"] for m in messages) == list(range(1, len(rows) + 1))


def test_kafka_killed_inside_a_transaction_commits_nothing_and_the_retry_publishes_exactly_once(
    kafka_topics: None,
) -> None:
    """The broker is SIGKILLed halfway through one object's transaction (the reader's iterator pulls the plug at
    a fixed record). Nothing of that attempt becomes visible; a new producer with the same transactional id fences
    it after the restart and publishes the object once. Raw offsets show the aborted records were really written."""
    from confluent_kafka import Producer

    from covidflow.catalog.specs import find_spec
    from covidflow.land.objects import LandedObject
    from covidflow.publish.kafka import DeliveryFailed, publish_records, transactional_id
    from covidflow.read import read_records
    from covidflow.stack.home import StackHome
    from covidflow.stack.runner import Runner, read_pid
    from covidflow.stack.services.kafka import KafkaService

    spec = find_spec(SOURCE)
    data = SAMPLE.read_bytes()
    rows = csv_rows(data)
    bucket = f"it-txn-{uuid.uuid4().hex[:8]}"  # only a label in the envelopes: consume_since filters on it
    obj = LandedObject(bucket, KEY, uuid.uuid4().hex, len(data), "2024-01-01T00:00:00+00:00")
    txn_id = f"{transactional_id(SOURCE, KEY)}-{bucket}"
    runner = Runner([KafkaService()])

    def producer() -> Any:
        return Producer(kafka_config({"transactional.id": txn_id, "enable.idempotence": True, "acks": "all",
                                      "linger.ms": 5, "message.timeout.ms": 8000,
                                      "transaction.timeout.ms": 60000}))  # fmt: skip

    def publish(records: Any, attempt: Any) -> Any:
        attempt.init_transactions(30)
        return publish_records(records, source_id=SOURCE, spec=spec.data, obj=obj, schema_ver="it",
                               producer=attempt, flush_timeout=20, commit_timeout=20)  # fmt: skip

    def killing_broker_at(index: int) -> Any:
        # One-record chunks: the publisher produces a chunk as it comes (single records it would group by 4,096,
        # and this object is smaller), so the first half is in the broker's log when the broker is killed.
        for record in read_records(io.BytesIO(data), "csv", spec.get("reader") or {}, name=KEY):
            if record.index == index:
                time.sleep(0.5)  # let the first half reach the broker's log, inside the open transaction
                pid = read_pid(StackHome.from_env(), "kafka")
                assert pid is not None, "Kafka is not running"
                os.killpg(pid, signal.SIGKILL)
            yield [record]

    start = end_offsets(RAW_TOPIC)
    try:
        with pytest.raises(DeliveryFailed) as failed:
            publish(killing_broker_at(len(rows) // 2), producer())
    finally:
        runner.down(grace=5)  # clears the pid file of the killed broker
        runner.up()
    assert f"Kafka delivery failed for s3://{bucket}/{KEY}" in str(failed.value)

    summary = publish(read_records(io.BytesIO(data), "csv", spec.get("reader") or {}, name=KEY), producer())
    assert summary.records_out == len(rows)
    messages = consume_since(RAW_TOPIC, start, bucket)
    assert sorted(m["value"]["record_index"] for m in messages) == list(range(1, len(rows) + 1))  # once each
    written = sum(hi - start.get(p, 0) for p, hi in end_offsets(RAW_TOPIC).items())
    assert written > len(rows) + len(rows) // 4, "the first attempt's records should be in the log, aborted"
    from fault_matrix import record as record_fault

    indices = [m["value"]["record_index"] for m in messages]
    record_fault("Kafka killed during publish (raw records, read_committed)", {
        "sent": len(rows), "stored_cassandra": -1, "stored_elasticsearch": -1,  # the stream is not part of it
        "duplicated": len(indices) - len(set(indices)), "lost": len(set(range(1, len(rows) + 1)) - set(indices)),
    }, committed_in_kafka=len(indices), aborted_in_log=written - len(indices))  # fmt: skip


def test_an_object_cut_midway_publishes_nothing_one_dead_letter_and_fails_once(
    s3, kafka_topics, airflow_env, bucket, tmp_path: Path
) -> None:
    """Issue 14 item 5: a gzip landed as .csv and cut short is read for a while (records are produced), then the
    reader fails. Before: the records read so far were committed with a dead letter. Now: the transaction is
    aborted (its records are only in the log, invisible to read_committed), one dead letter says why, the object
    is marked refused, and the task fails once, without retries."""
    rows = 150_000
    text = "dep;jour;n_dose1;n_cum_dose1\n" + "".join(f"{i % 95 + 1:02d};2021-01-01;{i};{i * 3}\n" for i in range(rows))
    packed = gzip.compress(text.encode(), compresslevel=1)
    s3.put_object(Bucket=bucket, Key=KEY, Body=packed[: len(packed) * 2 // 3])
    cut_etag = etag(s3, bucket, KEY)
    start, dl_start = end_offsets(RAW_TOPIC), end_offsets(DEADLETTER_TOPIC)

    result, output = run_dag(retrying_env(airflow_env, tmp_path), bucket)

    assert result["state"] == "failed", output[-5000:]
    assert consume_since(RAW_TOPIC, start, bucket) == [], "no record of a half-read object may be committed"
    aborted = consume_since(RAW_TOPIC, start, bucket, isolation="read_uncommitted")
    assert len(aborted) > 10_000, "records were produced before the error (then aborted): the test must cut late"
    letters = consume_since(DEADLETTER_TOPIC, dl_start, bucket)
    assert len(letters) == 1, [letter["value"]["reason"] for letter in letters]
    letter = letters[0]["value"]
    assert (letter["stage"], letter["object"]["etag"]) == ("publish", cut_etag)
    assert letter["reason"].startswith(f"{KEY} line ") and "truncated or corrupt gzip data" in letter["reason"]
    assert "nothing of the object was published" in letter["reason"]
    assert "RETRY dag=ingest_spf_vacsi" not in output
    assert "FAILED dag=ingest_spf_vacsi" in output and "task=publish[0] try=1 error=AirflowFailException" in output
    assert f"s3://{bucket}/{KEY} (etag {cut_etag}) cannot be read to its end: {KEY} line " in output
    refused = marker(s3, bucket, KEY, cut_etag)
    assert (refused["status"], refused["records_out"], refused["dead_letters"]) == ("refused", 0, 1)
    assert "truncated or corrupt gzip data" in refused["reader_error"]

    # The next run does not try it again: the refused marker is in the manifest.
    dl_start = end_offsets(DEADLETTER_TOPIC)
    result, output = run_dag(retrying_env(airflow_env, tmp_path, sensor_timeout=5), bucket)
    assert result["state"] == "success", output[-5000:]
    assert "cannot be read to its end" not in output
    assert consume_since(DEADLETTER_TOPIC, dl_start, bucket) == []


def test_an_empty_object_fails_once_with_one_dead_letter(s3, kafka_topics, airflow_env, bucket, tmp_path) -> None:
    """Issue 14 item 6: the same bytes give the same answer, so an empty file fails once (no retries, which
    it had: three, with backoff), with a clear message and one dead letter, and is marked refused."""
    s3.put_object(Bucket=bucket, Key=KEY, Body=b"")
    empty_etag = etag(s3, bucket, KEY)
    start, dl_start = end_offsets(RAW_TOPIC), end_offsets(DEADLETTER_TOPIC)

    result, output = run_dag(retrying_env(airflow_env, tmp_path), bucket)

    assert result["state"] == "failed", output[-5000:]
    assert "RETRY dag=ingest_spf_vacsi" not in output, "a deterministic failure must not be retried"
    assert "task=publish[0] try=1 error=AirflowFailException" in output
    assert f"s3://{bucket}/{KEY} (etag {empty_etag}) cannot be read to its end: {KEY}: empty file" in output
    assert consume_since(RAW_TOPIC, start, bucket) == []
    letters = consume_since(DEADLETTER_TOPIC, dl_start, bucket)
    assert [m["value"]["reason"] for m in letters] == [f"{KEY}: empty file; nothing of the object was published"]
    assert marker(s3, bucket, KEY, empty_etag)["status"] == "refused"
