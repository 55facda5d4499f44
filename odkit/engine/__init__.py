"""odkit.engine."""
