"""The `tidal` command: parses arguments and calls the API client, nothing more."""
