"""Pure data, no I/O: images and the baseline, filters, Go's time, outcomes, the report."""
