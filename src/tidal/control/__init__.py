"""The registry of apps and revisions, and the control-plane HTTP API."""
