"""odkit.viz."""
