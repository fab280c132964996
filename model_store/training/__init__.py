"""Training of the default bundle (`make model`)."""
