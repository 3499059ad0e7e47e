"""Deferrable sensing of new work: a trigger, run by Airflow's triggerer, that fires only when a source has an
object whose (key, etag) is not in the ingest manifest.

An ``S3KeySensor`` succeeds as soon as *any* matching object exists, including ones published long ago, so it
cannot tell a scheduled run whether there is work. This trigger lists the source's prefix with the amazon
provider's async (aiobotocore) client from the ``covidflow_s3`` connection and decides with the same code as
the ``select_new_objects`` task: ``covidflow.land.objects.select_new`` over the manifest's pairs
(``covidflow.land.manifest.seen_from_keys``). One LIST per poll while nothing changes; the manifest is listed
again only when a listed object is not in the copy the trigger holds (it may have been published since).

It also gives way to a queued run of its own DAG (a hand-triggered re-run waiting behind ``max_active_runs=1``):
the waiting run ends as skipped and the queued one starts at once. See docs/decisions/0015-*.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TaskSkippedEvent, TaskSuccessEvent, TriggerEvent

from covidflow.land.manifest import seen_from_keys
from covidflow.land.objects import LandedObject, from_listing, select_new

log = logging.getLogger(__name__)

CLASSPATH = "covidflow.land.new_objects.NewObjectsTrigger"
MAX_OBJECTS_IN_EVENT = 100  # the event is stored in the metadata database: keep it small

NEW = "new"
YIELD = "queued_run"
LOOK_NOW = "look_now"  # a run not started by the schedule: the select task looks at once
RERUN = "rerun"  # a re-run: no sensing, the manifest is ignored
SCHEDULED = "scheduled"


async def list_objects_async(client: Any, bucket: str, prefix: str) -> list[LandedObject]:
    """The objects directly under ``prefix`` (one level, like the select task's listing)."""
    paginator = client.get_paginator("list_objects_v2")
    objects: list[LandedObject] = []
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        objects.extend(from_listing(bucket, item) for item in page.get("Contents", []))
    return objects


async def manifest_seen_async(client: Any, bucket: str, manifest_prefix: str, source_id: str) -> set[tuple[str, str]]:
    """The (key, etag) pairs the manifest holds for ``source_id``."""
    paginator = client.get_paginator("list_objects_v2")
    keys: list[str] = []
    async for page in paginator.paginate(Bucket=bucket, Prefix=f"{manifest_prefix}{source_id}/"):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return seen_from_keys(manifest_prefix, source_id, keys)


class NewObjectsTrigger(BaseTrigger):
    """Fires ``{"status": "new", "objects": [...]}`` once the source has an unpublished object version, or
    ``{"status": "queued_run"}`` when another run of ``dag_id`` is queued (``dag_id`` None: never).

    With ``end_task`` the trigger ends the sensor itself (success with that payload as its XCom, or skipped):
    no worker has to start to resume the sensor, which saves seconds between an upload and its publication.
    """

    def __init__(
        self,
        *,
        source_id: str,
        bucket: str,
        prefix: str,
        patterns: list[str],
        manifest_prefix: str,
        aws_conn_id: str,
        poke_interval: float = 5.0,
        dag_id: str | None = None,
        end_task: bool = False,
        run_type: str = SCHEDULED,
        rerun_request: str = "",
    ) -> None:
        super().__init__()
        self.source_id, self.bucket, self.prefix = source_id, bucket, prefix
        self.patterns = list(patterns)
        self.manifest_prefix, self.aws_conn_id = manifest_prefix, aws_conn_id
        self.poke_interval, self.dag_id, self.end_task = float(poke_interval), dag_id, end_task
        # Rendered by the triggerer when the sensor starts there (templates of the run's type and params).
        self.run_type, self.rerun_request = run_type, rerun_request

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "source_id": self.source_id,
                "bucket": self.bucket,
                "prefix": self.prefix,
                "patterns": self.patterns,
                "manifest_prefix": self.manifest_prefix,
                "aws_conn_id": self.aws_conn_id,
                "poke_interval": self.poke_interval,
                "dag_id": self.dag_id,
                "end_task": self.end_task,
                "run_type": self.run_type,
                "rerun_request": self.rerun_request,
            },
        )

    def run_kind(self) -> str | None:
        """RERUN or LOOK_NOW when this run must not wait (a re-run, a run not started by the schedule), else None.

        Params asking for two kinds of re-run count as LOOK_NOW: the select task refuses them with the reason.
        """
        from covidflow.publish.rerun import RerunParamsError, rerun_from_rendered

        try:
            if rerun_from_rendered(self.rerun_request):
                return RERUN
        except (RerunParamsError, ValueError):
            return LOOK_NOW
        if str(self.run_type).lower().rsplit(".", 1)[-1] != SCHEDULED:
            return LOOK_NOW
        return None

    async def _client(self) -> Any:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return await S3Hook(aws_conn_id=self.aws_conn_id).get_async_conn()

    async def queued_runs(self) -> int:
        """How many runs of ``dag_id`` are queued, through the triggerer's supervisor (as ExternalTaskSensor's
        trigger asks); 0 when that channel is missing (outside a triggerer), logged once."""
        if not self.dag_id:
            return 0
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
        from asgiref.sync import sync_to_async

        try:
            return await sync_to_async(RuntimeTaskInstance.get_dr_count)(dag_id=self.dag_id, states=["queued"])
        except Exception as exc:  # an optimisation for hand-triggered runs: sensing must go on without it
            log.warning("%s: cannot count queued runs (%r); a queued run waits for this one to end", self.dag_id, exc)
            self.dag_id = None
            return 0

    def _event(self, payload: dict[str, Any]) -> TriggerEvent:
        if not self.end_task:
            return TriggerEvent(payload)
        if payload["status"] == YIELD:
            return TaskSkippedEvent()
        return TaskSuccessEvent(xcoms={"return_value": {k: v for k, v in payload.items() if k != "objects"}})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        where = f"s3://{self.bucket}/{self.prefix}"
        kind = self.run_kind()
        if kind:
            log.info("%s: %s run, no waiting", where, kind)
            yield self._event({"status": kind})
            return
        seen: set[tuple[str, str]] | None = None
        polls = 0
        async with await self._client() as client:
            while True:
                polls += 1
                objects = await list_objects_async(client, self.bucket, self.prefix)
                if seen is None or select_new(objects, seen, self.prefix, self.patterns):
                    seen = await manifest_seen_async(client, self.bucket, self.manifest_prefix, self.source_id)
                    new = select_new(objects, seen, self.prefix, self.patterns)
                    if new:
                        log.info("%s: %d new object(s) after %d poll(s): %s", where, len(new), polls, new[0].key)
                        yield self._event(
                            {
                                "status": NEW,
                                "count": len(new),
                                "objects": [o.to_dict() for o in new[:MAX_OBJECTS_IN_EVENT]],
                                "polls": polls,
                            }
                        )
                        return
                if await self.queued_runs():
                    log.info("%s: nothing new; a queued run of %s goes first", where, self.dag_id)
                    yield self._event({"status": YIELD, "polls": polls})
                    return
                await asyncio.sleep(self.poke_interval)
