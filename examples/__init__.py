"""Worked examples: backends of other protocols and their adapters (docs/ADAPTERS.md)."""
