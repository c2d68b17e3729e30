"""sqlifier: run a small team's services and operate them with short, readable rules."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
