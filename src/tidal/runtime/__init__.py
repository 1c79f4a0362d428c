"""The process inside a runner: load the user's code, set up, serve, stop."""
