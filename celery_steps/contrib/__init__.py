"""Optional integrations with other frameworks (only imported on demand)."""
