"""``covidflow sources``: list, validate, preview and scaffold source specs (no service needed)."""

from __future__ import annotations

import click


@click.group()
def sources() -> None:
    """Work with the declarative source specs in include/sources/."""
