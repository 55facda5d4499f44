"""odkit.assign."""
