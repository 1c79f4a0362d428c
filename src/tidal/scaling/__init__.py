"""Turning load into runners: a pure policy and the loop that acts on it."""
