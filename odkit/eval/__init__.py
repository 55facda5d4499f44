"""odkit.eval."""
