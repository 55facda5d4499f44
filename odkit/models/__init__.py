"""odkit.models."""
