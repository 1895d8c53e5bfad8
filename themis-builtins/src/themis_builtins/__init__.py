"""themis-builtins."""
