"""pyserving.manager."""
