"""Command-line entry points: ``python -m inference.generate`` and ``python -m inference.edit``."""
