"""The egressmail home folder: ``--home``, else ``$EGRESSMAIL_HOME``, else the user's data folder."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import platformdirs

from egressmail.errors import StoreError

HOME_ENV_VAR = "EGRESSMAIL_HOME"


def resolve_home(explicit: str | os.PathLike[str] | None = None,
                 environ: Mapping[str, str] | None = None) -> Path:
    """Return the home folder to use, creating it (owner-only) if it does not exist yet.

    Args:
        explicit: a folder given on the command line (``--home``); wins over everything.
        environ: the process environment (defaults to ``os.environ``).

    Raises:
        StoreError: the folder cannot be created (a file is in the way, no permission, ...).
    """
    environ = os.environ if environ is None else environ
    if explicit is not None:
        home = Path(explicit)
    elif environ.get(HOME_ENV_VAR):
        home = Path(environ[HOME_ENV_VAR])
    else:
        home = Path(platformdirs.user_data_dir("egressmail", appauthor=False))
    home = home.expanduser()
    # The folder holds the store and the master key: nobody else may list or enter it.
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        why = "it is not a folder" if isinstance(exc, FileExistsError) else exc.strerror
        raise StoreError(f"cannot use {home} as the egressmail home folder: {why}",
                         hint=f"give --home (or ${HOME_ENV_VAR}) a folder you can create and write") from None
    return home
