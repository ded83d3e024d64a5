"""Helpers for scripts/demo.py, the end-to-end demo behind `make demo`."""


class DemoError(Exception):
    """A failure that ends the demo, with a message that states what failed and what to check."""
