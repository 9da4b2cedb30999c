"""The config part: ``.cfg.json`` files, run-mode folders and Felix placeholder interpolation.

Pure apart from reading files: the values placeholders draw on are passed in as :class:`Sources`.
See docs/configuration.md.
"""

from egressmail.config.cfgjson import ConfigFile, parse_cfg_json, read_cfg_json
from egressmail.config.errors import ConfigError, ConfigFileError, PlaceholderError, RunModeError
from egressmail.config.resolve import (
    Provenance,
    ResolutionWarning,
    ResolvedConfiguration,
    ResolvedProperty,
    interpolate,
    resolve_configuration,
)
from egressmail.config.runmodes import load_configurations, parse_run_modes, select_run_mode_files
from egressmail.config.sources import Sources, read_secret_file

__all__ = [
    "ConfigError",
    "ConfigFile",
    "ConfigFileError",
    "PlaceholderError",
    "Provenance",
    "ResolutionWarning",
    "ResolvedConfiguration",
    "ResolvedProperty",
    "RunModeError",
    "Sources",
    "interpolate",
    "load_configurations",
    "parse_cfg_json",
    "parse_run_modes",
    "read_cfg_json",
    "read_secret_file",
    "resolve_configuration",
    "select_run_mode_files",
]
