"""themis-store-sqlite."""
