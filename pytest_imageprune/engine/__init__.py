"""The only code that speaks to an engine: transport, the engine's API, endpoint, store.

Nothing outside this package builds a URL, reads an HTTP status or imports ``docker``.
"""
