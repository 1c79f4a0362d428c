"""The web dashboard: apps, runners, analytics, errors, logs and a Playground (see
docs/dashboard.md). Served by the platform itself at /dashboard."""

from tidal.dashboard.app import Dashboard

__all__ = ["Dashboard"]
