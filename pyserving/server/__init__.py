"""pyserving.server."""
