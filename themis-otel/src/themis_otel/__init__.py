"""themis-otel."""
