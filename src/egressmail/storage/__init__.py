"""Where egressmail keeps its state: the home folder and the one SQLite database in it.

The environments part (variables, secrets) and the networking part (infrastructures, port forwards)
keep their tables in the same database file, so the mail client and the gateway read one egress map.
This package owns what they share: the home folder, opening the database safely, program and
environment identities, and the per-environment change counter.
"""

from egressmail.storage.home import resolve_home
from egressmail.storage.ids import normalize_environment_id, normalize_program_id
from egressmail.storage.sqlite import Database

__all__ = ["Database", "normalize_environment_id", "normalize_program_id", "resolve_home"]
