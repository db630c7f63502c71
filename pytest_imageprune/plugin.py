"""pytest glue for pytest-imageprune (options and session hooks)."""

from __future__ import annotations
