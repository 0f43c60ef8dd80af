"""The ``brittle`` command line (thin over the Python API)."""

from .app import app, main

__all__ = ["app", "main"]
