"""pyserving.loaders."""
