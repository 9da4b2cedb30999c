"""Options shared by the commands that read the mail service's configuration for one environment.

``send``, ``doctor`` and ``worker run`` all resolve the DefaultMailService configuration the same
way (:func:`egressmail.mail.service_config.load_service_config`), so they take the same four
options, spelled and explained once here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])

SERVICES = ("author", "publish", "preview")


def environment_options(*, required: bool) -> Callable[[F], F]:
    """``--program``, ``--environment``, ``--run-modes`` and ``--service`` (program and environment
    are mandatory when ``required``; otherwise they go together or not at all)."""
    pair = "" if required else " (with --environment)"
    # No explicit default=None: click (8.3+) counts it as a default given, and would then not
    # enforce required=True; an option left unset is None anyway.

    def decorate(f: F) -> F:
        for option in reversed([
            click.option("--program", metavar="P", required=required,
                         help=f"Program whose variables, secrets and port forwards apply{pair}."),
            click.option("--environment", metavar="E", required=required,
                         help="Environment of that program (e2002 or 2002)."),
            click.option("--run-modes", "run_modes", metavar="MODES", default=None,
                         help="Active run modes, comma-separated, e.g. publish,prod "
                              "(default: the --service's)."),
            click.option("--service", type=click.Choice(SERVICES), default=None,
                         help="Service whose scoped variables apply."),
        ]):
            f = option(f)
        return f

    return decorate
