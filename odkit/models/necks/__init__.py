"""odkit.models.necks."""
