"""The environments part (see docs/architecture.md)."""
