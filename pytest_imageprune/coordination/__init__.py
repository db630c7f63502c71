"""Sessions that share one engine: the rules, the place, who is trusted, the records."""
