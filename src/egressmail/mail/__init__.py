"""The mail part (see docs/architecture.md)."""
