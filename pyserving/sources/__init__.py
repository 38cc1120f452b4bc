"""pyserving.sources."""
