"""Placeholder: being implemented (see docs/ARCHITECTURE.md)."""
