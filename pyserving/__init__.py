"""pyserving: TensorFlow-Serving-style model serving in Python."""
