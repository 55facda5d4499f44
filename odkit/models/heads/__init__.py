"""odkit.models.heads."""
