"""odkit tests."""
