"""The ``covidflow`` command: ``stack`` runs the local services, ``sources`` works on source specs, ``ingest`` re-runs
sources, ``deadletters`` lists and replays rejected records, ``query`` reads the stores."""

from __future__ import annotations

import logging

import click

from covidflow.cli.deadletters import deadletters
from covidflow.cli.ingest import ingest
from covidflow.cli.query import query
from covidflow.cli.sources import sources
from covidflow.cli.stack import stack
from covidflow.stack.connections import use_stack_connections


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """covidflow: COVID-19 data from many publishers, in one schema."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
    )
    # Outside Airflow, the local stack's connections (with their credentials) unless the environment has its own.
    use_stack_connections()


cli.add_command(stack)
cli.add_command(sources)
cli.add_command(query)
cli.add_command(ingest)
cli.add_command(deadletters)


def main() -> None:
    cli()
