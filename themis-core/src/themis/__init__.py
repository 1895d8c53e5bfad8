"""themis-core."""
