"""The networking part (see docs/architecture.md)."""
