"""agent/nodes."""
