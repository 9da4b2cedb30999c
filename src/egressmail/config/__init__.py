"""The config part (see docs/architecture.md)."""
