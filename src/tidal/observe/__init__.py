"""What happened: runner logs (request records and metrics come later)."""
