"""odkit.losses."""
