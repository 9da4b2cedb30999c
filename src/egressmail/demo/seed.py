"""The seed's scenario files, found and read (pure apart from reading the files).

The seed is the wknd example: ``set-secrets.sh`` (one Cloud Manager command line),
``advanced-networking.json`` (the port forward) and the mail service's ``.cfg.json`` under
``ui.config/src/jcr_root/apps/wknd-examples/osgiconfig``. A copy ships inside the package
(``egressmail/demo/seed/wknd``, byte for byte the repository's ``examples/wknd``) so that the demo runs
on a machine that only installed egressmail; ``--seed DIR`` points at another copy.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from egressmail.demo.errors import DemoError
from egressmail.environments.cloudmanager_args import SET_FLAGS, parse_argv, updates_from_flags
from egressmail.environments.model import VariableType
from egressmail.errors import EgressMailError

PACKAGED_SEED = Path(__file__).resolve().parent / "seed" / "wknd"
SET_SECRETS = "set-secrets.sh"
NETWORKING = "advanced-networking.json"
CONFIG_ROOT = Path("ui.config/src/jcr_root/apps/wknd-examples/osgiconfig")
COMMAND_NAMES = ("egressmail", "aio")  # the seed's original says `aio`; the example swaps in ours
MASK = "****"


@dataclass(frozen=True, slots=True)
class Seed:
    """The seed's files and what its ``set-secrets.sh`` line asks for.

    Attributes:
        root: the seed folder.
        argv: the command's words after the program name (they hold secret values: never print them;
            use :meth:`display_command`).
        program / environment: the ids the command names.
        secrets: secret name → value, from the command (kept out of ``repr()``).
    """

    root: Path
    argv: tuple[str, ...] = field(repr=False)
    program: str
    environment: str
    secrets: dict[str, str] = field(repr=False)

    @property
    def set_secrets(self) -> Path:
        """``set-secrets.sh``."""
        return self.root / SET_SECRETS

    @property
    def networking(self) -> Path:
        """``advanced-networking.json``."""
        return self.root / NETWORKING

    @property
    def config_root(self) -> Path:
        """The ``osgiconfig`` folder (a config root: ``config/``, ``config.<runmode>/``)."""
        return self.root / CONFIG_ROOT

    def display_command(self) -> str:
        """The command line as a shell would read it, with every secret value as ``****``."""
        return mask_command(("egressmail", *self.argv), self.secrets.values())


def mask_command(words: Iterable[str], secret_values: Iterable[str]) -> str:
    """``shlex.join`` of ``words`` with each word equal to a secret value replaced by ``****``."""
    hidden = {v for v in secret_values if v}
    return " ".join(MASK if w in hidden else shlex.quote(w) for w in words)


def find_command(text: str, source: str) -> list[str]:
    """The words of the first ``egressmail …`` (or ``aio …``) command in a shell script.

    Raises:
        DemoError: no such line, or it cannot be split like a shell would.
    """
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            words = shlex.split(stripped, comments=True)
        except ValueError as exc:
            raise DemoError("seed", f"{source}:{number}: cannot read the command line ({exc})",
                            hint="fix the quoting of that line") from None
        if words and words[0] in COMMAND_NAMES:
            return words
    raise DemoError("seed", f"{source}: no `egressmail cloudmanager:set-environment-variables …` line found",
                    hint="the file must hold the command that sets the environment's secrets")


def load_seed(root: Path | None = None) -> Seed:
    """Find the seed's files under ``root`` (default: the packaged copy) and read its command line.

    Raises:
        DemoError: step ``seed``: a file is missing, or the command line is not a
            ``set-environment-variables`` line naming a program, an environment and secrets.
    """
    root = PACKAGED_SEED if root is None else root
    for relative in (Path(SET_SECRETS), Path(NETWORKING), CONFIG_ROOT):
        if not (root / relative).exists():
            raise DemoError("seed", f"the seed folder {root} has no {relative}",
                            hint="pass the folder holding set-secrets.sh, advanced-networking.json and "
                                 "ui.config/ (e.g. examples/wknd), or leave --seed out")
    path = root / SET_SECRETS
    words = find_command(path.read_text(encoding="utf-8"), str(path))
    argv = words[1:]
    if not argv or not argv[0].endswith(("set-environment-variables", "set-variables")):
        raise DemoError("seed", f"{path}: the command is {argv[0] if argv else '(empty)'!r}, not "
                                "cloudmanager:set-environment-variables",
                        hint="the demo runs the seed's set-secrets command")
    try:
        parsed = parse_argv(argv[1:], SET_FLAGS)
        updates = updates_from_flags(parsed, SET_FLAGS)
    except EgressMailError as exc:
        raise DemoError("seed", f"{path}: {exc.message}", hint=exc.hint) from None
    program = parsed.single("programId")
    if not program or len(parsed.positional) != 1:
        raise DemoError("seed", f"{path}: the command must name --programId=PROGRAM and one ENVIRONMENT",
                        hint="e.g. --programId=1001 2002")
    secrets = {u.name: u.value for u in updates if u.type is VariableType.SECRET and u.value is not None}
    return Seed(root=root, argv=tuple(argv), program=program, environment=parsed.positional[0],
                secrets=secrets)
