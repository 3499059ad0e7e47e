"""Operations on the running stack (issue 13): sensing that waits for new work, files picked up with no human,
new source DAGs active, re-runs from the CLI (the UI's params), dead letters listed and replayed idempotently,
and the on-call shell (`covidflow stack env`) driving airflow, cqlsh and Kafka's console tools.

Needs `covidflow stack up` (all services), the ingest DAG of WHO active and the stream running for the
store checks (`make demo` does both). Unreachable services are failures, not skips.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from confluent_kafka import Producer
from test_ingest import end_offsets  # one helper for the raw topic's end offsets

import covidflow
from covidflow import settings
from covidflow.catalog.specs import find_spec
from covidflow.clients import kafka_config
from covidflow.land.manifest import S3Manifest
from covidflow.land.objects import LandedObject
from covidflow.publish.envelope import DEADLETTER_TOPIC, RAW_TOPIC, DeadLetter, ObjectRef
from covidflow.publish.topics import read_to_end
from covidflow.stack.airflow_api import AirflowClient
from covidflow.stack.connections import airflow_conn_env, env_var
from covidflow.stack.home import StackHome

pytestmark = pytest.mark.integration

ROOT = covidflow.PROJECT_ROOT
COVIDFLOW = str(ROOT / ".venv" / "bin" / "covidflow")
SOURCE = "who_covid19_global_weekly"
DAG_ID = f"ingest_{SOURCE}"
SPEC = find_spec(SOURCE)
PREFIX = SPEC["landing"]["prefix"]
SAMPLE = SPEC.sample_path.read_bytes()
ROWS = len([line for line in SAMPLE.decode("utf-8-sig").splitlines()[1:] if line.strip()])
RECORDS = 996  # canonical records of the sample (README table)


@pytest.fixture(scope="module")
def client() -> AirflowClient:
    try:
        return AirflowClient()
    except Exception as exc:
        pytest.fail(f"Airflow's API is not reachable at {settings.AIRFLOW_URL} ({exc}); run `covidflow stack up`")


def unique_key() -> str:
    return f"{PREFIX}WHO-COVID-19-global-data-it-{uuid.uuid4().hex[:8]}.csv"


def messages_since(topic: str, start: dict[int, int], bucket: str) -> list[dict[str, Any]]:
    """Committed values about ``bucket``'s objects written after ``start``."""
    values = [json.loads(msg.value()) for msg in read_to_end(settings.KAFKA_BOOTSTRAP, topic, start)]
    return [value for value in values if value["object"]["bucket"] == bucket]


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COVIDFLOW, *args], capture_output=True, text=True, timeout=timeout)


# -- sensing ----------------------------------------------------------------------------------------------------


def test_the_trigger_fires_on_the_real_s3_only_for_a_version_the_manifest_lacks(
    s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trigger as the triggerer runs it: aiobotocore through the covidflow_s3 connection."""
    from covidflow.land.new_objects import NewObjectsTrigger

    name = env_var(settings.CONN_S3)
    monkeypatch.setenv(name, airflow_conn_env(StackHome.from_env())[name])
    key = unique_key()
    s3.put_object(Bucket=bucket, Key=key, Body=SAMPLE)
    s3.put_object(Bucket=bucket, Key=PREFIX + "notes.txt", Body=b"not a source file")
    head = s3.head_object(Bucket=bucket, Key=key)
    landed = LandedObject(bucket, key, head["ETag"].strip('"'), len(SAMPLE), head["LastModified"].isoformat())
    S3Manifest(s3, bucket, "_manifest/").mark(SOURCE, landed, {"vintage": "2022-12-01"})
    trigger = NewObjectsTrigger(
        source_id=SOURCE,
        bucket=bucket,
        prefix=PREFIX,
        patterns=list(SPEC["landing"]["patterns"]),
        manifest_prefix="_manifest/",
        aws_conn_id=settings.CONN_S3,
        poke_interval=0.5,
    )

    async def first_event(within: float) -> Any:
        events = trigger.run()
        try:
            return await asyncio.wait_for(events.__anext__(), within)
        finally:
            await events.aclose()

    with pytest.raises(TimeoutError):  # published already, or not the source's: nothing to do
        asyncio.run(first_event(4))
    s3.put_object(Bucket=bucket, Key=key, Body=SAMPLE + b"\n")  # corrected: same key, new etag
    event = asyncio.run(first_event(10))
    assert event.payload["status"] == "new"
    assert [o["key"] for o in event.payload["objects"]] == [key]
    assert event.payload["objects"][0]["etag"] != landed.etag


def test_a_landed_file_is_queryable_in_both_stores_with_no_manual_trigger(s3: Any, client: AirflowClient) -> None:
    """Upload only: the waiting scheduled run publishes it and the stream stores it (ADR 0015)."""
    from covidflow.demo import published_vintage, stored_counts

    assert not client.call("GET", f"/api/v2/dags/{DAG_ID}")["is_paused"], f"{DAG_ID} is paused"
    key = unique_key()
    start = time.monotonic()
    etag = s3.put_object(Bucket=settings.LANDING_BUCKET, Key=key, Body=SAMPLE)["ETag"].strip('"')
    try:
        vintage = None
        while vintage is None and time.monotonic() - start < 180:
            try:
                vintage = published_vintage(SOURCE, key, etag)
            except ClientError:  # no marker yet
                time.sleep(1)
        assert vintage is not None, f"{key} not published 180 s after the upload"
        published = time.monotonic() - start
        while stored_counts({SOURCE: (key, etag, vintage)})[SOURCE] != (RECORDS, RECORDS):
            assert time.monotonic() - start < 300, f"{key}: not in both stores 300 s after the upload"
            time.sleep(1)
        visible = time.monotonic() - start
        publishers = publishing_runs(client, key)
        print(f"\n{key}: published {published:.1f} s, in both stores {visible:.1f} s after the upload: {publishers}")
        assert [run_type for _, run_type in publishers] == ["scheduled"]
        assert visible < 120
    finally:
        s3.delete_object(Bucket=settings.LANDING_BUCKET, Key=key)


def publishing_runs(client: AirflowClient, key: str) -> list[tuple[str, str]]:
    """(run id, run type) of the recent runs whose publish task published ``key`` (from its XCom summary)."""
    found = []
    runs = client.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?order_by=-start_date&limit=10")["dag_runs"]
    for run in runs:
        base = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run['dag_run_id'])}/taskInstances/publish"
        mapped = client.call("GET", f"{base}/listMapped", ok=(200, 404))
        for ti in mapped.get("task_instances", []):
            if ti["state"] != "success":
                continue
            entry = client.call("GET", f"{base}/xcomEntries/return_value?map_index={ti['map_index']}", ok=(200, 404))
            if key in str(entry.get("value", "")):
                found.append((run["dag_run_id"], run["run_type"]))
    return found


def test_a_new_source_dag_starts_active_on_the_running_stack(client: AirflowClient, tmp_path: Any) -> None:
    """A DAG built by the factory from a spec the running Airflow has never seen is parsed unpaused."""
    from covidflow.stack.services.airflow import scratch_dags_folder

    source_id = f"it_new_source_{uuid.uuid4().hex[:6]}"
    spec_dir = scratch_dags_folder(StackHome.from_env()) / f"{source_id}_specs"
    spec_dir.mkdir(parents=True)
    text = SPEC.path.read_text(encoding="utf-8").replace(f"id: {SOURCE}", f"id: {source_id}", 1)
    text = text.replace(f"prefix: {PREFIX}", f"prefix: it-new-source/{source_id}/", 1)
    (spec_dir / f"{source_id}.yaml").write_text(text, encoding="utf-8")
    dag_file = spec_dir.parent / f"{source_id}.py"
    dag_file.write_text(
        "# airflow dag\nfrom pathlib import Path\nfrom covidflow.publish.dag_factory import build_all\n"
        f"globals().update(build_all(Path({str(spec_dir)!r})))\n"
    )
    dag_id = f"ingest_{source_id}"
    try:
        client.wait_for_dags([dag_id], timeout=300)
        assert client.call("GET", f"/api/v2/dags/{dag_id}")["is_paused"] is False
    finally:
        dag_file.unlink(missing_ok=True)
        for path in spec_dir.iterdir():
            path.unlink()
        spec_dir.rmdir()
        client.retire_dag(dag_id)  # never a bare DELETE: it crashes the scheduler while a run is examined


# -- re-runs ----------------------------------------------------------------------------------------------------


def test_rerun_from_the_cli_republishes_one_key_a_prefix_or_all_ignoring_the_manifest(s3: Any, bucket: str) -> None:
    first, second = unique_key(), unique_key()
    s3.put_object(Bucket=bucket, Key=first, Body=SAMPLE)
    s3.put_object(Bucket=bucket, Key=second, Body=SAMPLE + b"\n")
    start = end_offsets(RAW_TOPIC)
    done = cli("ingest", "rerun", SOURCE, "--all", "--bucket", bucket)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "success" in done.stdout
    assert len(messages_since(RAW_TOPIC, start, bucket)) == 2 * ROWS
    markers = s3.list_objects_v2(Bucket=bucket, Prefix="_manifest/")["KeyCount"]
    assert markers == 2  # both versions are now in this bucket's manifest

    start = end_offsets(RAW_TOPIC)  # one object, although the manifest has it
    done = cli("ingest", "rerun", SOURCE, "--key", first, "--bucket", bucket)
    assert done.returncode == 0, done.stdout + done.stderr
    again = messages_since(RAW_TOPIC, start, bucket)
    assert len(again) == ROWS and {m["object"]["key"] for m in again} == {first}

    start = end_offsets(RAW_TOPIC)  # a prefix naming only the second object
    done = cli("ingest", "rerun", SOURCE, "--prefix", second[: -len(".csv")], "--bucket", bucket)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {m["object"]["key"] for m in messages_since(RAW_TOPIC, start, bucket)} == {second}

    done = cli("ingest", "rerun", SOURCE, "--key", PREFIX + "missing.csv", "--bucket", bucket)
    assert done.returncode == 1 and "failed" in done.stdout  # the select task names the key in its log

    done = cli("ingest", "rerun", SOURCE)
    assert done.returncode == 2 and "say what to re-run" in done.stderr
    done = cli("ingest", "rerun", SOURCE, "--key", first, "--all")
    assert done.returncode == 2 and "at most one" in done.stderr


# -- dead letters -----------------------------------------------------------------------------------------------


@pytest.fixture()
def letters(s3: Any, bucket: str) -> Iterator[tuple[str, str, list[int]]]:
    """Five normalise-stage dead letters of real WHO rows of an object in ``bucket``, with a unique reason."""
    key = unique_key()
    etag = s3.put_object(Bucket=bucket, Key=key, Body=SAMPLE)["ETag"].strip('"')
    head = s3.head_object(Bucket=bucket, Key=key)
    obj = LandedObject(bucket, key, etag, len(SAMPLE), head["LastModified"].isoformat())
    S3Manifest(s3, bucket, "_manifest/").mark(SOURCE, obj, {"vintage": "2022-12-18"})
    lines = list(csv.reader(io.StringIO(SAMPLE.decode("utf-8-sig"))))
    header = lines[0]
    token = f"it-t{uuid.uuid4().hex[:8]}"  # never all digits: the grouping folds numbers to N
    producer = Producer(kafka_config())
    rows = [3, 7, 11, 19, 23]
    for row in rows:
        fields = dict(zip(header, lines[row], strict=True))
        letter = DeadLetter(
            stage="normalise",
            source_id=SOURCE,
            reason=f"Country_code: unknown location {token}: {fields['Country_code']!r}",
            object=ObjectRef(bucket, key, etag, None, len(SAMPLE)),
            record_index=row,
            line=row + 1,
            excerpt=json.dumps(fields)[:200],
            fields=fields,
            at=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        )
        producer.produce(DEADLETTER_TOPIC, letter.to_json(), headers=letter.headers())
    assert producer.flush(30) == 0
    yield key, token, rows


def test_deadletters_list_counts_by_source_and_reason_with_examples(letters: tuple[str, str, list[int]]) -> None:
    key, token, rows = letters
    done = cli("deadletters", "list", "--source", SOURCE, "--reason", token, "--since", "1h", "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["total"] == 5 and len(report["groups"]) == 1
    group = report["groups"][0]
    assert (group["source_id"], group["stage"], group["count"]) == (SOURCE, "normalise", 5)
    assert group["reason"] == f"Country_code: unknown location {token}: …"
    example = group["examples"][0]
    assert example["object"].endswith(key) and example["field"] == "Country_code" and example["row"] in rows
    table = cli("deadletters", "list", "--reason", token).stdout
    assert "5 dead letter(s) in 1 group(s)" in table and f"{key} (etag " in table
    assert ": Country_code: unknown location" in table
    assert cli("deadletters", "list", "--reason", token, "--since", "2999-01-01").stdout == "no dead letters match\n"


def test_deadletters_replay_resends_each_letter_once(letters: tuple[str, str, list[int]], bucket: str) -> None:
    key, token, rows = letters
    start = end_offsets(RAW_TOPIC)
    done = cli("deadletters", "replay", "--source", SOURCE, "--reason", token, "--bucket", bucket)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 selected, 5 sent to covid.raw.v1, 0 already replayed" in done.stdout
    sent = messages_since(RAW_TOPIC, start, bucket)
    assert sorted(m["record_index"] for m in sent) == rows
    assert {(m["object"]["key"], m["vintage"], m["source_id"]) for m in sent} == {(key, "2022-12-18", SOURCE)}

    start = end_offsets(RAW_TOPIC)  # the second replay adds nothing
    done = cli("deadletters", "replay", "--source", SOURCE, "--reason", token, "--bucket", bucket)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 selected, 0 sent to covid.raw.v1, 5 already replayed" in done.stdout
    assert messages_since(RAW_TOPIC, start, bucket) == []


# -- on-call shell ----------------------------------------------------------------------------------------------


def test_stack_env_drives_airflow_cqlsh_and_kafka_tools() -> None:
    tools = cli("stack", "tools", timeout=900)
    assert tools.returncode == 0, tools.stdout + tools.stderr
    script = f"""
set -e
eval "$({COVIDFLOW} stack env)"
airflow dags list -o json | python3 -c 'import json,sys; print("DAGS", len(json.load(sys.stdin)))'
cqlsh -e "SELECT release_version FROM system.local" | grep -q '5\\.0\\.' && echo CQLSH ok
kafka-topics --describe --topic {RAW_TOPIC} | head -1
kafka-consumer-groups --list >/dev/null && echo GROUPS ok
kafka-console-consumer --topic {RAW_TOPIC} --from-beginning --max-messages 1 --timeout-ms 20000 \\
  --isolation-level read_committed 2>/dev/null | head -c 200
"""
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=600, cwd="/tmp")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert int(out.split("DAGS ", 1)[1].split()[0]) >= 10
    assert "CQLSH ok" in out and "GROUPS ok" in out
    assert f"Topic: {RAW_TOPIC}" in out and "PartitionCount: 6" in out
    assert '{"source_id":' in out  # one raw envelope printed by the console consumer
