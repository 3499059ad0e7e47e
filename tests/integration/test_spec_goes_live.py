"""A new spec goes live on the running stack: no restart, no manual trigger (issue 13).

What a data engineer does: add one spec to include/sources/ and land a file under its prefix. The ingest DAG
factory makes its DAG (active), the sensor picks the file up, and the running stream, whose driver ships the spec
folder's texts with every micro-batch, normalises the records; nothing is dead-lettered as "unknown source".
Needs the whole stack and the stream running (`make demo`).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner

from covidflow import settings
from covidflow.catalog.specs import SOURCES_DIR, find_spec
from covidflow.cli import cli
from covidflow.demo import published_vintage, stored_counts
from covidflow.stack.airflow_api import AirflowClient
from covidflow.stack.services.s3 import s3_client

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

BASE = "who_covid19_global_weekly"
RECORDS = 996  # canonical records of the WHO sample (README table)


def test_a_spec_added_to_the_running_stack_is_ingested_and_queryable_without_restart_or_trigger() -> None:
    base = find_spec(BASE)
    source_id = f"it_live_{uuid.uuid4().hex[:8]}"
    prefix = f"it-live/{source_id}/"
    text = base.path.read_text(encoding="utf-8")
    text = text.replace(f"id: {BASE}", f"id: {source_id}", 1).replace(base["landing"]["prefix"], prefix, 1)
    spec_path = SOURCES_DIR / f"{source_id}.yaml"
    client = AirflowClient()
    client.trigger("covidflow_stream")  # starts the job unless it runs: the job itself is never restarted here
    s3 = s3_client()
    key = f"{prefix}WHO-COVID-19-global-data-live.csv"
    dag_id = f"ingest_{source_id}"
    spec_path.write_text(text, encoding="utf-8")
    try:
        client.wait_for_dags([dag_id], timeout=300)
        assert client.call("GET", f"/api/v2/dags/{dag_id}")["is_paused"] is False
        start = time.monotonic()
        etag = s3.put_object(Bucket=settings.LANDING_BUCKET, Key=key, Body=base.sample_path.read_bytes())["ETag"]
        etag = etag.strip('"')
        vintage = None
        while vintage is None:
            assert time.monotonic() - start < 300, f"{key} not published 300 s after the upload"
            try:
                vintage = published_vintage(source_id, key, etag)
            except ClientError:  # no manifest marker yet
                time.sleep(2)
        while (counts := stored_counts({source_id: (key, etag, vintage)})[source_id]) != (RECORDS, RECORDS):
            assert time.monotonic() - start < 600, f"{source_id}: {counts} of {RECORDS} records in the stores"
            time.sleep(2)
        result = CliRunner().invoke(
            cli, ["query", "--location", "FR", "--metric", "cases_weekly", "--store", "cassandra", "--format", "json"]
        )
        assert result.exit_code == 0, result.output
        assert any(row["source_id"] == source_id for row in json.loads(result.output))
    finally:
        spec_path.unlink(missing_ok=True)
        s3.delete_object(Bucket=settings.LANDING_BUCKET, Key=key)
        client.retire_dag(dag_id)  # never a bare DELETE: it crashes the scheduler while a run is examined
