"""The ``egressmail`` command: argument parsing and output only; the parts do the work."""
