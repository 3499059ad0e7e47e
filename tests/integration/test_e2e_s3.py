"""From an S3 upload to a query, through the real chain: ingest DAG -> Kafka -> supervised stream -> stores.

Uses the scheduler (the Airflow REST API), not dag.test(): what runs here is what runs in production.
"""

from __future__ import annotations

import csv
import json
import uuid

import pytest
from click.testing import CliRunner

from covidflow import settings
from covidflow.catalog.specs import find_spec
from covidflow.cli import cli
from covidflow.demo import published_vintage, wait_for_stores
from covidflow.stack.airflow_api import AirflowClient
from covidflow.stack.services.s3 import s3_client

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SOURCE = "spf_donnees_hospitalieres"


def paris_hospital_occupancy(path, day: str) -> dict[str, float]:
    """Read straight from the file: sex code -> hosp, for department 75 on ``day``."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.DictReader(handle, delimiter=";")
        return {r["sexe"]: float(r["hosp"]) for r in rows if r["dep"] == "75" and r["jour"] == day}


def test_an_uploaded_file_is_queryable_with_the_values_of_the_file() -> None:
    spec = find_spec(SOURCE)
    sample = spec.sample_path
    expected_from_file = paris_hospital_occupancy(sample, "2020-04-01")
    assert expected_from_file == {"0": 2633.0, "1": 1617.0, "2": 986.0}  # line 227 ff. of the sample

    # A new object name: its vintage falls back to the upload time, so it is a new vintage of the data.
    key = f"{spec['landing']['prefix']}donnees-hospitalieres-covid19-e2e-{uuid.uuid4().hex[:8]}.csv"
    etag = s3_client().put_object(Bucket=settings.LANDING_BUCKET, Key=key, Body=sample.read_bytes())["ETag"]
    etag = etag.strip('"')

    client = AirflowClient()
    client.trigger("covidflow_stream")  # starts the job unless one already runs (never two)
    state, tasks = client.wait(f"ingest_{SOURCE}", client.trigger(f"ingest_{SOURCE}"), timeout=600)
    assert state == "success", tasks

    vintage = published_vintage(SOURCE, key, etag)
    counts = wait_for_stores({SOURCE: (key, etag, vintage)}, {SOURCE: 16_968}, timeout=600)
    assert counts == {SOURCE: (16_968, 16_968)}  # 4,242 rows x 4 metrics, in Cassandra and Elasticsearch

    for store in ("cassandra", "elasticsearch"):
        result = CliRunner().invoke(
            cli,
            ["query", "--location", "FR-D75", "--metric", "hospital_occupancy", "--from", "2020-04-01",
             "--to", "2020-04-01", "--store", store, "--format", "json"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        rows = [r for r in json.loads(result.output) if r["source_id"] == SOURCE]
        got = {r["sex"]: (r["value"], r["vintage"]) for r in rows}  # the latest vintage is the upload's
        assert got == {
            "all": (expected_from_file["0"], vintage.isoformat()),
            "male": (expected_from_file["1"], vintage.isoformat()),
            "female": (expected_from_file["2"], vintage.isoformat()),
        }, store
