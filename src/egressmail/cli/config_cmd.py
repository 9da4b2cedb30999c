"""`egressmail config`: Read .cfg.json configuration and explain where each value comes from."""

from __future__ import annotations

import click


@click.group()
def config() -> None:
    """Read .cfg.json configuration and explain where each value comes from."""
