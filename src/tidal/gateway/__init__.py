"""The data path: route each request to a runner's free slot and proxy it."""
