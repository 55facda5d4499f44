"""odkit.export."""
