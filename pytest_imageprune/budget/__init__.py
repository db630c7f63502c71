"""The storage budget: after the session's prune, evict unused images, least recently used
first, until the engine's images fit (``--prune-images-budget``).

``size`` reads a budget as Docker writes sizes; ``plan`` decides, purely, what goes and
what holds the rest; ``gather`` asks the engine for the sizes and the evidence of last use
that the plan needs; ``apply`` deletes through the session's own prune and reports.
"""
