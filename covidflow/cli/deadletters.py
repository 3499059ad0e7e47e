"""``covidflow deadletters``: what landed on the dead-letter topic, and re-sending it after a fix."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from covidflow import settings

_filters = [
    click.option("--source", "source", help="Only this source id."),
    click.option("--reason", help="Only reasons containing this text (case-insensitive)."),
    click.option("--since", help="Only letters written since: ISO date/time, or an age (30m, 6h, 2d, 1w)."),
    click.option("--stage", type=click.Choice(["publish", "normalise"]), help="Only this stage."),
]


def filters(func: Any) -> Any:
    for option in reversed(_filters):
        func = option(func)
    return func


def _selected(source: str | None, reason: str | None, since: str | None, stage: str | None) -> list[dict[str, Any]]:
    from covidflow.publish.deadletters import parse_since, read_letters, select

    try:
        after = parse_since(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    from covidflow.clients import kafka_config

    where = kafka_config()["bootstrap.servers"]  # the connection's address, else settings
    try:
        letters = read_letters()
    except Exception as exc:
        click.echo(f"cannot read the dead-letter topic at {where}: {exc}", err=True)
        click.echo("is Kafka up? `covidflow stack up kafka`", err=True)
        sys.exit(2)
    return select(letters, source=source, reason=reason, since=after, stage=stage)


@click.group()
def deadletters() -> None:
    """List dead letters (counts by source and reason, with examples) and replay them after a fix."""


@deadletters.command("list")
@filters
@click.option("--examples", default=3, show_default=True, help="Examples per group.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def list_(
    source: str | None, reason: str | None, since: str | None, stage: str | None, examples: int, fmt: str
) -> None:
    """Counts by source, stage and reason; each example names the object, row, line and field."""
    from dataclasses import asdict

    from covidflow.publish.deadletters import format_groups, summarise

    letters = _selected(source, reason, since, stage)
    groups = summarise(letters, examples)
    if fmt == "json":
        click.echo(json.dumps({"total": len(letters), "groups": [asdict(g) for g in groups]}, indent=1))
    else:
        click.echo(format_groups(groups, len(letters)), nl=False)


@deadletters.command()
@filters
@click.option("--bucket", default=settings.LANDING_BUCKET, show_default=True, help="Bucket holding the replay ledger.")
@click.option("--dry-run", is_flag=True, help="Say what would be sent; send nothing.")
def replay(
    source: str | None, reason: str | None, since: str | None, stage: str | None, bucket: str, dry_run: bool
) -> None:
    """Re-send the selected normalise-stage letters to the raw topic (read with the spec as it is now).

    Idempotent: a letter already replayed under the current spec version is not sent again.
    """
    from confluent_kafka import Producer

    from covidflow.clients import kafka_config
    from covidflow.publish.config import ingest_config
    from covidflow.publish.deadletters import replay as run
    from covidflow.stack.services.s3 import s3_client

    letters = _selected(source, reason, since, stage)

    def producer(txn_id: str) -> Producer:
        return Producer(
            kafka_config({"transactional.id": txn_id, "enable.idempotence": True, "acks": "all", "log_level": 0})
        )

    result = run(
        letters,
        s3=s3_client(),
        producer_factory=producer,
        ledger_bucket=bucket,
        manifest_prefix=ingest_config()["manifest"]["prefix"],
        dry_run=dry_run,
    )
    click.echo(result.line())
    for where in result.ledger:
        click.echo(f"  recorded in {where}")
    for hint in sorted(result.rerun_hints)[:20]:
        click.echo(f"  publish-stage letters: fix the file or the reader, then: {hint}")
