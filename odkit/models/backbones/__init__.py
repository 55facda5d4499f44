"""odkit.models.backbones."""
