"""pyserving.protos."""
