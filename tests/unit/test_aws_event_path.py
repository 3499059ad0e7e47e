"""The AWS event path of ADR 0015, as far as it runs here: an S3 event notification on an SQS queue (moto's server
standing in for SQS) fires the MessageQueueTrigger an AssetWatcher would run, and a run started by an asset
event (or by hand) looks for new objects at once instead of waiting in the triggerer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

QUEUE = "covidflow-landing"
REGION = "eu-west-1"


@pytest.fixture()
def sqs(monkeypatch: pytest.MonkeyPatch) -> Any:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    conn = {
        "conn_type": "aws",
        "login": "it",
        "password": "it",
        "extra": {"endpoint_url": endpoint, "region_name": REGION},
    }
    monkeypatch.setenv("AIRFLOW_CONN_IT_SQS", json.dumps(conn))
    client = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="it",
                          aws_secret_access_key="it")  # fmt: skip
    try:
        yield client
    finally:
        server.stop()


def s3_event(key: str) -> str:
    """The body S3 sends to SQS for an upload (trimmed to the fields the ingest would read)."""
    return json.dumps(
        {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": "covidflow-landing"}, "object": {"key": key, "eTag": "e1", "size": 1}},
                }
            ]
        }
    )


def test_an_s3_notification_on_the_queue_fires_the_watchers_trigger(sqs: Any) -> None:
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
    from airflow.sdk import Asset, AssetWatcher

    url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
    trigger = MessageQueueTrigger(scheme="sqs", sqs_queue=url, aws_conn_id="it_sqs", waiter_delay=1)
    asset = Asset("covidflow_landing_events", watchers=[AssetWatcher(name="landing_sqs", trigger=trigger)])
    assert asset.watchers[0].trigger is trigger
    sqs.send_message(QueueUrl=url, MessageBody=s3_event("spf/vacsi/vacsi-dep.csv"))

    async def first_event() -> Any:
        events = trigger.run()
        try:
            return await asyncio.wait_for(events.__anext__(), 30)
        finally:
            await events.aclose()

    event = asyncio.run(first_event())
    bodies = [json.loads(m["Body"]) for m in event.payload["message_batch"]]
    assert bodies[0]["Records"][0]["s3"]["object"]["key"] == "spf/vacsi/vacsi-dep.csv"


@pytest.mark.parametrize(("run_type", "waits"), [("scheduled", True), ("asset_triggered", False), ("manual", False)])
def test_only_a_scheduled_run_waits_for_new_work(run_type: str, waits: bool) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    from covidflow.land.sensor import NewObjectsSensor

    sensor = NewObjectsSensor(
        task_id="wait_for_objects",
        source_id="spf_vacsi",
        bucket="covidflow-landing",
        prefix="spf/vacsi/",
        patterns=["vacsi-dep*.csv"],
        manifest_prefix="_manifest/",
        aws_conn_id="covidflow_s3",
        poke_interval=5,
        timeout=3600,
    )
    context = {"params": {"bucket": "covidflow-landing"}, "dag_run": type("Run", (), {"run_type": run_type})()}
    if not waits:
        assert sensor.execute(context) == {"status": "look_now"}
        return
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context)
    kwargs = deferred.value.trigger.serialize()[1]
    assert kwargs["end_task"] is True and kwargs["poke_interval"] == 5 and kwargs["prefix"] == "spf/vacsi/"
    assert deferred.value.timeout.total_seconds() == 3600


def test_a_rerun_never_senses() -> None:
    from covidflow.land.sensor import NewObjectsSensor

    sensor = NewObjectsSensor(
        task_id="w", source_id="s", bucket="b", prefix="p/", patterns=["*"], manifest_prefix="_m/", aws_conn_id="c"
    )
    context = {"params": {"rerun_all": True}, "dag_run": type("Run", (), {"run_type": "scheduled"})()}
    assert sensor.execute(context) == {"status": "rerun"}
