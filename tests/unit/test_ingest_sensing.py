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
