"""The prune's scopes, apart: the plugin registers its options from them while idle, and
importing ``model.images`` (its dataclasses) for one tuple cost every pytest run 4 ms."""

from __future__ import annotations

#: Which images a prune may take: ``session``, only those its session produced (see
#: ``Baseline.in_scope``); ``all``, every image, as ``docker image prune``.
SCOPES = ("session", "all")
