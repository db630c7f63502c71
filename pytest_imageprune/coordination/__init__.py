"""Sessions that share one engine: the rules and one session's part (``protocol``), the
bounded waits (``worker``), the place (``place``), who is trusted (``boundary``), the
records (``records``), the registry (``registry``), what a sweep keeps (``evidence``)."""
