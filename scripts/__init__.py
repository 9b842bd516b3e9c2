"""Helper scripts (not imported by the service)."""
