"""Detector families: one file each, a builder function plus its defaults (see ``odkit.models.zoo``)."""
