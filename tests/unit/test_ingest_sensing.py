"""The new-work trigger and the re-run selection, on an in-memory listing (the real S3 is in tests/integration)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from covidflow.land.manifest import marker_key, seen_from_keys
from covidflow.land.new_objects import NewObjectsTrigger
from covidflow.land.objects import LandedObject, RerunRequestError, select_rerun
from covidflow.publish.rerun import RerunParamsError, parse_rerun, rerun_conf

PREFIX = "who/covid19-global/"
PATTERNS = ["WHO-COVID-19-global-data*.csv"]


class FakeS3:
    """Just enough of an aiobotocore client: paginated list_objects_v2 over a dict, counting the calls."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[str, str]] = {}  # key -> (etag, last modified)
        self.lists: list[str] = []

    async def __aenter__(self) -> FakeS3:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    def get_paginator(self, name: str) -> FakeS3:
        assert name == "list_objects_v2"
        return self

    def paginate(self, Bucket: str, Prefix: str, Delimiter: str | None = None) -> Any:
        self.lists.append(Prefix)
        items = [
            {"Key": k, "ETag": f'"{e}"', "Size": 1, "LastModified": m}
            for k, (e, m) in sorted(self.objects.items())
            if k.startswith(Prefix) and not (Delimiter and Delimiter in k[len(Prefix) :])
        ]

        async def pages() -> Any:
            yield {"Contents": items}

        return pages()

    def mark(self, key: str) -> None:
        etag, modified = self.objects[key]
        obj = LandedObject("b", key, etag, 1, modified)
        self.objects[marker_key("_manifest/", "who", obj)] = ("m", "2024-01-01T00:00:00+00:00")


class Trigger(NewObjectsTrigger):
    fake: FakeS3

    async def _client(self) -> Any:
        return self.fake


def trigger(fake: FakeS3, **kwargs: Any) -> Trigger:
    t = Trigger(
        source_id="who",
        bucket="b",
        prefix=PREFIX,
        patterns=PATTERNS,
        manifest_prefix="_manifest/",
        aws_conn_id="x",
        poke_interval=0.01,
        **kwargs,
    )
    t.fake = fake
    return t


async def first_event(t: Trigger, within: float = 0.3) -> Any:
    agen = t.run()
    try:
        return await asyncio.wait_for(agen.__anext__(), within)
    finally:
        await agen.aclose()


def test_fires_only_for_a_version_the_manifest_lacks() -> None:
    fake = FakeS3()
    old = PREFIX + "WHO-COVID-19-global-data-1.csv"
    fake.objects[old] = ("e1", "2024-01-01T00:00:00+00:00")
    fake.objects[PREFIX + "notes.txt"] = ("n", "2024-01-02T00:00:00+00:00")  # not matching the pattern
    fake.objects[PREFIX + "sub/WHO-COVID-19-global-data-2.csv"] = ("s", "2024-01-02T00:00:00+00:00")  # deeper
    fake.mark(old)
    with pytest.raises(TimeoutError):  # only published or foreign objects: the trigger keeps waiting
        asyncio.run(first_event(trigger(fake)))
    manifest_lists = fake.lists.count("_manifest/who/")
    assert manifest_lists == 1, "the manifest is listed once while nothing changes"
    assert fake.lists.count(PREFIX) > 3

    fake.objects[old] = ("e2", "2024-01-03T00:00:00+00:00")  # a corrected upload: same key, new etag
    event = asyncio.run(first_event(trigger(fake)))
    assert event.payload["status"] == "new" and event.payload["count"] == 1
    assert [(o["key"], o["etag"]) for o in event.payload["objects"]] == [(old, "e2")]


def test_an_object_published_meanwhile_does_not_fire() -> None:
    """A listed object missing from the cached manifest makes the trigger list the manifest again first."""
    fake = FakeS3()
    key = PREFIX + "WHO-COVID-19-global-data-1.csv"
    fake.objects[key] = ("e1", "2024-01-01T00:00:00+00:00")
    fake.mark(key)
    t = trigger(fake)

    async def scenario() -> Any:
        agen = t.run()
        task = asyncio.ensure_future(agen.__anext__())
        await asyncio.sleep(0.05)
        new = PREFIX + "WHO-COVID-19-global-data-2.csv"
        fake.objects[new] = ("e3", "2024-01-04T00:00:00+00:00")
        fake.mark(new)  # published by a run before this trigger saw it
        await asyncio.sleep(0.1)
        assert not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert fake.lists.count("_manifest/who/") == 2


def test_end_task_ends_the_sensor_itself_and_a_queued_run_makes_it_give_way() -> None:
    from airflow.triggers.base import TaskSkippedEvent, TaskSuccessEvent

    fake = FakeS3()
    fake.objects[PREFIX + "WHO-COVID-19-global-data-9.csv"] = ("e9", "2024-01-09T00:00:00+00:00")
    event = asyncio.run(first_event(trigger(fake, end_task=True)))
    assert isinstance(event, TaskSuccessEvent)
    assert event.xcoms == {"return_value": {"status": "new", "count": 1, "polls": 1}}

    class Queued(Trigger):
        async def queued_runs(self) -> int:
            return 1

    waiting = Queued(**trigger(FakeS3(), dag_id="ingest_who", end_task=True).serialize()[1])
    waiting.fake = FakeS3()
    assert isinstance(asyncio.run(first_event(waiting)), TaskSkippedEvent)


def test_serialize_round_trips() -> None:
    t = trigger(FakeS3(), dag_id="ingest_who", end_task=True)
    path, kwargs = t.serialize()
    assert path == "covidflow.land.new_objects.NewObjectsTrigger"
    assert NewObjectsTrigger(**kwargs).serialize() == (path, kwargs)


def test_seen_from_keys_ignores_foreign_keys() -> None:
    obj = LandedObject("b", PREFIX + "a b.csv", "e", 1, "t")
    keys = [marker_key("_manifest/", "who", obj), "_manifest/who/garbage", "_manifest/other/x/e.json"]
    assert seen_from_keys("_manifest/", "who", keys) == {(PREFIX + "a b.csv", "e")}


def objects() -> list[LandedObject]:
    return [
        LandedObject("b", PREFIX + "WHO-COVID-19-global-data-2022.csv", "e2", 1, "2024-01-02"),
        LandedObject("b", PREFIX + "WHO-COVID-19-global-data-2021.csv", "e1", 1, "2024-01-01"),
        LandedObject("b", PREFIX + "notes.txt", "n", 1, "2024-01-03"),
    ]


def test_select_rerun_one_key_a_prefix_or_all_oldest_first() -> None:
    keys = lambda chosen: [o.key[len(PREFIX) :] for o in chosen]  # noqa: E731
    assert keys(select_rerun(objects(), PREFIX, PATTERNS)) == [
        "WHO-COVID-19-global-data-2021.csv",
        "WHO-COVID-19-global-data-2022.csv",
    ]
    one = PREFIX + "WHO-COVID-19-global-data-2022.csv"
    assert keys(select_rerun(objects(), PREFIX, PATTERNS, key=one)) == ["WHO-COVID-19-global-data-2022.csv"]
    chosen = select_rerun(objects(), PREFIX, PATTERNS, key_prefix=PREFIX + "WHO-COVID-19-global-data-2021")
    assert keys(chosen) == ["WHO-COVID-19-global-data-2021.csv"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": PREFIX + "notes.txt"}, "is not an object of this source"),
        ({"key": PREFIX + "missing.csv"}, "is not an object of this source"),
        ({"key_prefix": "spf/"}, "outside the source's landing prefix"),
        ({"key_prefix": PREFIX + "nothing-"}, "no object of this source under"),
    ],
)
def test_a_rerun_that_selects_nothing_is_an_error(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(RerunRequestError, match=message):
        select_rerun(objects(), PREFIX, PATTERNS, **kwargs)


def test_rerun_params() -> None:
    assert parse_rerun({"bucket": "b", "rerun_key": "", "rerun_prefix": "", "rerun_all": False}) is None
    assert parse_rerun({"rerun_key": " k "}).key == "k"
    assert parse_rerun({"rerun_all": True}).everything
    with pytest.raises(RerunParamsError, match="at most one"):
        parse_rerun({"rerun_key": "k", "rerun_all": True})
    assert rerun_conf(prefix="p/") == {"rerun_key": "", "rerun_prefix": "p/", "rerun_all": False}
    with pytest.raises(RerunParamsError, match="say what to re-run"):
        rerun_conf()


def rendered(t: NewObjectsTrigger, params: dict[str, Any], run_type: str) -> NewObjectsTrigger:
    """The trigger's templated kwargs rendered with Airflow's own Jinja environment, as the triggerer does for a
    task started there (``start_from_trigger``)."""
    from types import SimpleNamespace

    context = {"params": params, "dag_run": SimpleNamespace(run_type=run_type)}
    t._do_render_template_fields(t, ("bucket", "run_type", "rerun_request"), context, t.get_template_env(), set())
    return t


def sensor_trigger(fake: FakeS3) -> Trigger:
    """A trigger built from the sensor's start_trigger_args, the way the scheduler and triggerer build it."""
    from airflow.sdk import DAG

    from covidflow.land.sensor import NewObjectsSensor

    with DAG("ingest_who", schedule=None):
        sensor = NewObjectsSensor(
            task_id="wait_for_objects",
            source_id="who",
            bucket="{{ params.bucket }}",
            prefix=PREFIX,
            patterns=PATTERNS,
            manifest_prefix="_manifest/",
            aws_conn_id="x",
            poke_interval=0.01,
            timeout=3600,
        )
    assert sensor.start_from_trigger is True and sensor.start_trigger_args.timeout.total_seconds() == 3600
    assert sensor.start_trigger_args.trigger_cls == "covidflow.land.new_objects.NewObjectsTrigger"
    t = Trigger(**sensor.start_trigger_args.trigger_kwargs)
    t.fake = fake
    return t


ORDINARY = {"bucket": "landing", "rerun_key": "", "rerun_prefix": "", "rerun_all": False}


@pytest.mark.parametrize(
    ("params", "run_type", "status"),
    [
        (ORDINARY, "manual", "look_now"),  # by hand: the select task looks at once
        (ORDINARY, "asset_triggered", "look_now"),
        ({**ORDINARY, "rerun_key": PREFIX + 'odd "name".csv'}, "manual", "rerun"),
        ({**ORDINARY, "rerun_all": True}, "scheduled", "rerun"),
        ({**ORDINARY, "rerun_key": "a", "rerun_all": True}, "manual", "look_now"),  # select refuses it, saying why
    ],
)
def test_a_run_not_started_by_the_schedule_ends_the_sensor_at_once(
    params: dict[str, Any], run_type: str, status: str
) -> None:
    from airflow.triggers.base import TaskSuccessEvent

    fake = FakeS3()
    t = rendered(sensor_trigger(fake), params, run_type)
    assert t.bucket == "landing"
    event = asyncio.run(first_event(t))
    assert isinstance(event, TaskSuccessEvent) and event.xcoms == {"return_value": {"status": status}}
    assert fake.lists == [], "no listing: nothing to wait for"


@pytest.mark.parametrize("run_type", ["scheduled", "DagRunType.SCHEDULED"])
def test_a_scheduled_run_started_in_the_triggerer_waits_for_new_work(run_type: str) -> None:
    fake = FakeS3()
    t = rendered(sensor_trigger(fake), ORDINARY, run_type)
    with pytest.raises(TimeoutError):
        asyncio.run(first_event(t, within=0.1))
    assert fake.lists and fake.lists[0] == PREFIX
    fake.objects[PREFIX + "WHO-COVID-19-global-data-7.csv"] = ("e7", "2024-01-07T00:00:00+00:00")
    event = asyncio.run(first_event(t))
    assert event.xcoms["return_value"]["status"] == "new" and event.xcoms["return_value"]["count"] == 1


@pytest.mark.parametrize(
    ("params", "rerun"),
    [(ORDINARY, False), ({**ORDINARY, "rerun_prefix": PREFIX}, True), ({**ORDINARY, "rerun_all": True}, True)],
)
def test_the_purge_gate_skips_an_ordinary_run_in_the_triggerer(params: dict[str, Any], rerun: bool) -> None:
    from types import SimpleNamespace

    from airflow.sdk import DAG
    from airflow.triggers.base import TaskSkippedEvent, TriggerEvent

    from covidflow.publish.purge_task import PurgeObsoleteOperator, RerunGate

    with DAG("ingest_who", schedule=None):
        purge = PurgeObsoleteOperator(task_id="purge_obsolete", source_id="who", summaries=[], purge_config={})
    args = purge.start_trigger_args
    assert purge.start_from_trigger and args.trigger_cls == "covidflow.publish.purge_task.RerunGate"
    assert args.next_method == "execute_complete"
    gate = RerunGate(**args.trigger_kwargs)
    context = {"params": params, "dag_run": SimpleNamespace(run_type="manual")}
    gate._do_render_template_fields(gate, ("rerun_request",), context, gate.get_template_env(), set())

    async def first() -> Any:
        return await gate.run().__anext__()

    event = asyncio.run(first())
    if rerun:
        assert type(event) is TriggerEvent and event.payload == {"status": "rerun"}  # resumes on a worker
    else:
        assert isinstance(event, TaskSkippedEvent)
