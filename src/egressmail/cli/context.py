"""State shared by every command: where the home folder is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from egressmail.storage.home import resolve_home
from egressmail.storage.sqlite import Database


@dataclass
class AppContext:
    """What the top-level options decided; commands get it with ``click.pass_obj``."""

    home_option: str | None = None
    _home: Path | None = field(default=None, repr=False)

    @property
    def home(self) -> Path:
        """The home folder (created, owner-only, on first use)."""
        if self._home is None:
            self._home = resolve_home(self.home_option)
        return self._home

    def database(self) -> Database:
        """The store in the home folder."""
        return Database(self.home)


pass_app = click.make_pass_decorator(AppContext, ensure=True)
