"""Container images for the docker backend: build or pull, add the runtime layer, cache."""
