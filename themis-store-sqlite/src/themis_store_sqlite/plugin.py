"""Entry-point module (group `themis`)."""
