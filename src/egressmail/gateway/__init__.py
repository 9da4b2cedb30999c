"""The gateway part (see docs/architecture.md)."""
