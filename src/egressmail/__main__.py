"""``python -m egressmail`` is the ``egressmail`` command."""

from egressmail.cli.main import main

main()
