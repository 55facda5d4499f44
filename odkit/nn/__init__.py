"""odkit.nn."""
