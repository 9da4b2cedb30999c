"""`egressmail doctor`: Check every layer from configuration to SMTP AUTH, naming the first that fails."""

from __future__ import annotations

import click

from egressmail.errors import EgressMailError


@click.command()
def doctor() -> None:
    """Check every layer from configuration to SMTP AUTH, naming the first that fails."""
    raise EgressMailError("`egressmail doctor` is not available yet in this version")
