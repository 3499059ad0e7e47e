"""``covidflow ingest rerun``: re-publish objects of a source through its ingest DAG, ignoring the manifest.

The same as the Airflow UI's "Trigger DAG" form with the ``rerun_*`` params: the run goes through the scheduler
over Airflow's REST API, so it is logged, retried and visible like any other run.
"""

from __future__ import annotations

import sys

import click

from covidflow import settings


@click.group()
def ingest() -> None:
    """Operate the ingest DAGs (one per source)."""


@ingest.command()
@click.argument("source")
@click.option("--key", help="Re-publish this one object (its full S3 key).")
@click.option("--prefix", help="Re-publish every object of the source under this key prefix.")
@click.option("--all", "everything", is_flag=True, help="Re-publish every object of the source.")
@click.option("--bucket", default=settings.LANDING_BUCKET, show_default=True, help="Landing bucket.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the run to finish.")
@click.option("--timeout", default=1800.0, show_default=True, help="Seconds to wait.")
def rerun(
    source: str, key: str | None, prefix: str | None, everything: bool, bucket: str, wait: bool, timeout: float
) -> None:
    """Trigger ingest_SOURCE with --key, --prefix or --all (exactly one); exits 1 when the run fails."""
    from covidflow.catalog.specs import SpecError, find_spec
    from covidflow.publish.rerun import RerunParamsError, rerun_conf
    from covidflow.stack.airflow_api import AirflowApiError, AirflowClient

    try:
        find_spec(source)
        conf = {**rerun_conf(key, prefix, everything), "bucket": bucket}
    except (SpecError, RerunParamsError) as exc:
        raise click.UsageError(str(exc)) from None
    dag_id = f"ingest_{source}"
    try:
        client = AirflowClient()
        run_id = client.trigger(dag_id, conf)
    except (AirflowApiError, OSError) as exc:
        click.echo(f"cannot trigger {dag_id} at {settings.AIRFLOW_URL}: {exc}", err=True)
        sys.exit(2)
    click.echo(f"{dag_id}: run {run_id} triggered with {conf}")
    click.echo(f"  {settings.AIRFLOW_URL}/dags/{dag_id}/runs/{run_id}")
    if not wait:
        return
    state, tasks = client.wait(dag_id, run_id, timeout=timeout)
    click.echo(f"{dag_id}: {state}; tasks: {tasks}")
    sys.exit(0 if state == "success" else 1)
