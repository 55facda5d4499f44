"""odkit.ops."""
